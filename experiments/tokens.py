"""Bearer tokens for the experiments service: created once, stored hashed, revocable.

A secret reads ``szx_<prefix>_<secret>``: ``prefix`` (8 hex characters, public) finds the row,
``secret`` is 32 random bytes (URL-safe base64). Only the SHA-256 of the whole string is stored; the
secret is shown once, when created. ``authenticate`` compares hashes in constant time, refuses revoked
tokens and records when a token was last used.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from experiments.db import ROLES, Token, User, utc

SCHEME = "szx"


class TokenError(ValueError):
    """A token request that cannot be honoured (unknown role, a name taken with another role, ...)."""


@dataclass(frozen=True)
class TokenInfo:
    """A token as ``tokens list`` shows it: never its secret."""

    id: str
    user: str
    role: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(sessions: sessionmaker[Session], name: str, role: str, now: datetime) -> tuple[str, str]:
    """A new token for user ``name`` (created with ``role`` if new): (token id, secret). Shown once."""
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if not name or len(name) > 100:
        raise TokenError("a name of 1 to 100 characters is needed")
    with sessions.begin() as session:
        user = session.scalars(select(User).where(User.name == name)).one_or_none()
        if user is None:
            user = User(name=name, role=role, created_at=now)
            session.add(user)
            session.flush()
        elif user.role != role:
            raise TokenError(f"user {name!r} exists with role {user.role}, not {role}")
        prefix = secrets.token_hex(4)
        secret = f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
        session.add(Token(prefix=prefix, secret_sha256=_hash(secret), user_id=user.id, created_at=now))
    return prefix, secret


def list_tokens(sessions: sessionmaker[Session]) -> list[TokenInfo]:
    with sessions() as session:
        rows = session.execute(select(Token, User).join(User, Token.user_id == User.id).order_by(Token.id)).all()
        return [
            TokenInfo(
                t.prefix, u.name, u.role, utc(t.created_at) or t.created_at, utc(t.revoked_at), utc(t.last_used_at)
            )
            for t, u in rows
        ]


def revoke(sessions: sessionmaker[Session], name_or_id: str, now: datetime) -> int:
    """Revoke the token with this id, or every live token of the user with this name: how many."""
    with sessions.begin() as session:
        tokens = session.scalars(
            select(Token)
            .join(User, Token.user_id == User.id)
            .where(or_(Token.prefix == name_or_id, User.name == name_or_id), Token.revoked_at.is_(None))
        ).all()
        for t in tokens:
            t.revoked_at = now
        return len(tokens)


def authenticate(sessions: sessionmaker[Session], secret: str, now: datetime) -> User | None:
    """The user a bearer secret belongs to, or None (malformed, unknown, wrong or revoked)."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != SCHEME:
        return None
    offered = _hash(secret)
    with sessions.begin() as session:
        row = session.execute(
            select(Token, User).join(User, Token.user_id == User.id).where(Token.prefix == parts[1])
        ).one_or_none()
        if row is None:
            hmac.compare_digest(offered, offered)  # same work whether or not the prefix exists
            return None
        token, user = row
        if not hmac.compare_digest(offered, token.secret_sha256) or token.revoked_at is not None:
            return None
        token.last_used_at = now
        session.expunge(user)
        return user
