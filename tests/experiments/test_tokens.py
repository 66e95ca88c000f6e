"""Bearer tokens through the real command line (``python -m cli tokens ...``), and ``authenticate``:
the secret is shown once, only its SHA-256 is stored, revoked tokens are refused."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from experiments.db import Token, open_store, utc
from experiments.tokens import TokenError, authenticate, create_token

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _cli(sql_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTZONE_")}
    env.update(SMARTZONE_STORAGE__SQL_URL=sql_url, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_create_list_revoke_through_the_cli(sql_url, tmp_path):
    made = _cli(sql_url, tmp_path, "tokens", "create", "--role", "experimenter", "--name", "alice")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("szx_") and len(secret) > 40
    token_id = secret.split("_")[1]
    other = _cli(sql_url, tmp_path, "tokens", "create", "--role", "operator", "--name", "bob")
    assert other.returncode == 0, other.stderr
    bob_secret = other.stdout.strip().splitlines()[-1]

    sessions = open_store(sql_url)
    try:
        # stored: the hash of the secret, never the secret
        with sessions() as session:
            rows = session.scalars(select(Token).order_by(Token.id)).all()
            assert [r.secret_sha256 for r in rows] == [
                hashlib.sha256(s.encode()).hexdigest() for s in (secret, bob_secret)
            ]
            dump = " ".join(str(v) for row in session.execute(text("SELECT * FROM tokens")) for v in row)
            assert secret not in dump and secret.split("_", 2)[2] not in dump
        if sql_url.startswith("sqlite"):
            assert secret.encode() not in Path(sql_url.removeprefix("sqlite:///")).read_bytes()

        listed = _cli(sql_url, tmp_path, "tokens", "list")
        assert listed.returncode == 0, listed.stderr
        assert "2 tokens" in listed.stdout and token_id in listed.stdout and "alice" in listed.stdout
        assert "experimenter" in listed.stdout and "operator" in listed.stdout and "last used never" in listed.stdout
        assert secret not in listed.stdout and secret.split("_", 2)[2] not in listed.stdout

        user = authenticate(sessions, secret, NOW)
        assert user is not None and (user.name, user.role) == ("alice", "experimenter")
        assert "last used 2026-06-01T12:00:00+00:00" in _cli(sql_url, tmp_path, "tokens", "list").stdout

        revoked = _cli(sql_url, tmp_path, "tokens", "revoke", token_id)
        assert revoked.returncode == 0 and "revoked 1 token(s)" in revoked.stdout, revoked.stderr
        assert authenticate(sessions, secret, NOW) is None
        bob = authenticate(sessions, bob_secret, NOW)
        assert bob is not None and bob.role == "operator"  # only alice's token went
        assert "revoked 2026" in _cli(sql_url, tmp_path, "tokens", "list").stdout

        by_name = _cli(sql_url, tmp_path, "tokens", "revoke", "bob")
        assert by_name.returncode == 0 and "revoked 1 token(s)" in by_name.stdout
        assert authenticate(sessions, bob_secret, NOW) is None
        nothing = _cli(sql_url, tmp_path, "tokens", "revoke", "nobody")
        assert nothing.returncode == 1 and "revoked 0 token(s)" in nothing.stdout
    finally:
        sessions.kw["bind"].dispose()


def test_create_refuses_a_name_taken_with_another_role(tmp_path):
    url = f"sqlite:///{tmp_path / 'exp.db'}"
    assert _cli(url, tmp_path, "tokens", "create", "--role", "experimenter", "--name", "alice").returncode == 0
    clash = _cli(url, tmp_path, "tokens", "create", "--role", "operator", "--name", "alice")
    assert clash.returncode == 2 and "exists with role experimenter" in clash.stderr
    missing = _cli(url, tmp_path, "tokens", "create", "--name", "carol")
    assert missing.returncode == 2 and "--role" in missing.stderr


def test_authenticate_refuses_wrong_malformed_and_unknown_secrets_and_records_use(tmp_path):
    sessions = open_store(f"sqlite:///{tmp_path / 'exp.db'}")
    try:
        token_id, secret = create_token(sessions, "alice", "experimenter", NOW)
        prefix, body = secret.split("_", 2)[1:]
        assert token_id == prefix
        wrong = f"szx_{prefix}_{'A' * len(body)}"
        for bad in (wrong, "", "szx", f"szx_{prefix}", f"bearer_{prefix}_{body}", f"szx_00000000_{body}", body):
            assert authenticate(sessions, bad, NOW) is None, bad
        with sessions() as session:
            assert session.scalars(select(Token)).one().last_used_at is None  # failures record nothing
        later = NOW + timedelta(hours=3)
        user = authenticate(sessions, secret, later)
        assert user is not None and user.name == "alice"
        with sessions() as session:
            assert utc(session.scalars(select(Token)).one().last_used_at) == later
        with pytest.raises(TokenError, match="role"):
            create_token(sessions, "eve", "admin", NOW)
        second_id, second = create_token(sessions, "alice", "experimenter", NOW)
        assert second_id != token_id and second != secret
    finally:
        sessions.kw["bind"].dispose()
