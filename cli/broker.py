"""The central broker's users, password file and ACL, from the registry and the services
(``smartzone broker users``).

One user per client, and the broker binds each session to its user (``use_username_as_clientid`` in the
shipped ``mosquitto.conf``), so no client can take another's session:

- every gateway of the registry (user = gateway id = client id; its agent logs in with it, issue 15): writes only
  under ``gw/<id>/``, reads only its experiment orders (``gw/<id>/experiments/desired``); a LoRa gateway
  (registry ``eui``, the ChirpStack gateway id) also writes its concentrator's ``<region>/gateway/<eui>/event/#``
  and ``.../state/#`` and reads its ``.../command/#`` (its Gateway Bridge publishes on the gateway's local
  broker; the agent relays those topics unchanged);
- one user per ingest worker, ``smartzone-ingest-1``, ``-2``, ... (user = client id): read what the workers
  subscribe to, on their shared subscription; every ingest user has the same rights, so a surviving worker can
  log in as a peer (with the peer's password) to finish that peer's session;
- ``chirpstack`` (its MQTT integration): writes ``application/#``, reads device commands;
- ``chirpstack-gateways`` (its gateway backend for the region): reads every gateway's events and state,
  writes their commands;
- ``healthcheck``: reads ``$SYS/broker/uptime`` (docker-compose's healthcheck of the broker);
- ``smartzone-experiments`` (the experiments scheduler): reads the gateways' reported experiments, status,
  self-test and health, writes their desired experiments and ``smartzone/experiments/events`` (which the ingest
  users read), and administers the dynamic-security plugin (``$CONTROL/dynamic-security/#``). The plugin's
  ``dynamic-security.json`` (written here, in ``<out>/dynsec/``, where compose mounts it writable: the plugin
  saves its changes there) makes it the plugin's admin, with the same password; the scheduler creates one
  client per (experiment, gateway) in it (docs/parts/experiments-scheduler.md).

A gateway's credential can be revoked (``--revoke GW``: out of the password file and the ACL, its password
forgotten, listed in ``MQTT_REVOKED`` of the secrets file so later runs keep it out) or rotated (``--rotate GW``:
a new random password, and back in if it was revoked). Mosquitto rereads both files on SIGHUP, without a
restart (``docker compose kill -s HUP mosquitto``).

Passwords: the environment variable ``MQTT_PASSWORD_<USER>`` (upper case, other characters ``_``), else the
secrets file from an earlier run, else a new random one. The secrets file (by default compose's ``.env``; made
0600, never in the repository) then lists them all, where docker compose reads them. The password file holds
only Mosquitto's PBKDF2-SHA512 hashes (``$7$``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest.failover import status_topic
from smartzone.errors import ConfigurationError
from smartzone.files import write_atomic
from smartzone.registry import Registry
from smartzone.settings import EXAMPLE_SECRET

PBKDF2_ITERATIONS = 1000  # mosquitto_passwd 2.0.11 writes 101; the broker accepts any count
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
INGEST_PREFIX = "smartzone-ingest-"
CHIRPSTACK = "chirpstack"
CHIRPSTACK_GATEWAYS = "chirpstack-gateways"
CHIRPSTACK_SHARE = "chirpstack"  # the share_name of ChirpStack's gateway backend (its default)
HEALTHCHECK = "healthcheck"
EXPERIMENTS = "smartzone-experiments"
EXPERIMENT_EVENTS = "smartzone/experiments/events"
DYNSEC_CONTROL = "$CONTROL/dynamic-security/#"
DYNSEC_DIR = "dynsec"  # <out>/dynsec/dynamic-security.json: compose mounts the folder writable
DYNSEC_FILE = "dynamic-security.json"
DYNSEC_ADMIN_ROLE = "smartzone-experiments-admin"


@dataclass(frozen=True)
class BrokerUser:
    name: str
    what: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()


def env_name(user: str) -> str:
    """The environment variable that holds a broker user's password: ``MQTT_PASSWORD_GW_VOLKSTRAAT``."""
    return "MQTT_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", user.upper())


REVOKED = "MQTT_REVOKED"  # the secrets file's line listing revoked gateway users (comma-separated)


def users(
    registry: Registry,
    *,
    workers: int = 2,
    share_group: str = "ingest",
    region_prefix: str = "eu868",
    revoked: Sequence[str] = (),
) -> list[BrokerUser]:
    """Every user of the central broker and its topics (revoked gateways left out)."""
    if workers < 1:
        raise ConfigurationError("at least one ingest worker")
    share = [f"$share/{share_group}/gw/#", f"$share/{share_group}/application/#"] if share_group else []
    if share_group:
        share.append(f"$share/{share_group}/{EXPERIMENT_EVENTS}")
    out = [
        BrokerUser(
            f"{INGEST_PREFIX}{n}",
            f"ingest worker {n} (client id = user)",
            # failover: its own retained status (and last will), its peers' status
            read=("gw/#", "application/#", EXPERIMENT_EVENTS, *share, status_topic("+")),
            write=(status_topic(f"{INGEST_PREFIX}{n}"),),
        )
        for n in range(1, workers + 1)
    ]
    out.append(
        BrokerUser(
            CHIRPSTACK,
            "ChirpStack's MQTT integration: LoRaWAN events for the ingest workers",
            read=("application/+/device/+/command/#",),
            write=("application/#",),
        )
    )
    gw = f"{region_prefix}/gateway/+"
    out.append(
        BrokerUser(
            CHIRPSTACK_GATEWAYS,
            f"ChirpStack's gateway backend (region topic prefix {region_prefix}): every LoRa gateway's events "
            "and state in, commands out",
            read=(
                f"{gw}/event/#",
                f"{gw}/state/#",
                f"$share/{CHIRPSTACK_SHARE}/{gw}/event/#",
                f"$share/{CHIRPSTACK_SHARE}/{gw}/state/#",
            ),
            write=(f"{gw}/command/#",),
        )
    )
    out.append(BrokerUser(HEALTHCHECK, "docker-compose's healthcheck of the broker", read=("$SYS/broker/uptime",)))
    out.append(
        BrokerUser(
            EXPERIMENTS,
            "the experiments scheduler: gateways' reports in, desired experiments and events out; the admin of "
            "the dynamic-security plugin (one client per experiment and gateway)",
            read=(
                "gw/+/experiments/reported",
                "gw/+/status",
                "gw/+/selftest",
                "gw/+/health",
                DYNSEC_CONTROL,
            ),
            write=("gw/+/experiments/desired", EXPERIMENT_EVENTS, DYNSEC_CONTROL),
        )
    )
    for g in registry.doc.gateways:
        if g.id in revoked:
            continue
        read, write = [f"gw/{g.id}/experiments/desired"], [f"gw/{g.id}/#"]
        what = f"gateway {g.name}: its agent"
        if g.eui:
            own = f"{region_prefix}/gateway/{g.eui}"
            read.append(f"{own}/command/#")
            write += [f"{own}/event/#", f"{own}/state/#"]
            what += f" (and its LoRa concentrator {g.eui}: the Gateway Bridge's events, state and commands)"
        out.append(BrokerUser(g.id, what, read=tuple(read), write=tuple(write)))
    names = [u.name for u in out]
    for name in names:
        if not _NAME.fullmatch(name):
            raise ConfigurationError(f"{name!r} cannot be a broker user (letters, digits, . _ - only)")
    dupes = {n for n in names if names.count(n) > 1}
    clashes = {n for n in names if sum(env_name(m) == env_name(n) for m in names) > 1}
    if dupes or clashes:
        raise ConfigurationError(f"broker users collide (rename the gateways): {', '.join(sorted(dupes | clashes))}")
    return out


def render_acl(all_users: Sequence[BrokerUser]) -> str:
    """Mosquitto's ACL file: one block per user, deny by default."""
    lines = [
        "# Generated by `smartzone broker users` from the registry and the services: edit the registry, not this file.",
        "# Every client logs in; a user may read or write only the topics listed under it.",
    ]
    for u in all_users:
        lines += ["", f"# {u.what}", f"user {u.name}"]
        lines += [f"topic read {t}" for t in u.read]
        lines += [f"topic write {t}" for t in u.write]
    return "\n".join(lines) + "\n"


def password_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2's password-file hash: ``$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>``."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def read_secrets(path: Path) -> dict[str, str]:
    """A dotenv file of ``NAME=value`` lines (comments and blank lines ignored)."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def revoked(known: Mapping[str, str]) -> list[str]:
    """The gateway users the secrets file lists as revoked."""
    return [n for n in known.get(REVOKED, "").split(",") if n.strip()]


def passwords(
    all_users: Sequence[BrokerUser],
    environ: Mapping[str, str],
    known: Mapping[str, str],
    rotate: Sequence[str] = (),
) -> dict[str, str]:
    """User -> password: the environment's, else the secrets file's, else a new random one (always a new one
    for the users in ``rotate``)."""
    out = {}
    for u in all_users:
        var = env_name(u.name)
        pw = secrets.token_urlsafe(32) if u.name in rotate else environ.get(var) or known.get(var)
        pw = pw or secrets.token_urlsafe(32)
        if pw == EXAMPLE_SECRET:
            raise ConfigurationError(f"{var} is the example value {EXAMPLE_SECRET!r}: set a real secret")
        if ":" in pw or any(ord(c) < 32 for c in pw):
            raise ConfigurationError(f"{var}: a broker password may not contain ':' or control characters")
        if u.name.startswith(INGEST_PREFIX) and any(c in pw for c in '"\\$'):
            # compose hands each worker its peers' passwords inside JSON (SMARTZONE_MQTT__PEERS)
            raise ConfigurationError(f"{var}: an ingest worker's password may not contain '\"', '\\' or '$'")
        out[u.name] = pw
    return out


def _dynsec_acls(user: BrokerUser) -> list[dict[str, object]]:
    """A password-file user's ACL as dynamic-security role ACLs (the plugin decides first for its own clients:
    the admin's role must allow what the ACL file allows it)."""
    acls: list[dict[str, object]] = []
    for t in user.read:
        acls += [
            {"acltype": "subscribePattern", "topic": t, "allow": True},
            {"acltype": "publishClientReceive", "topic": t, "allow": True},
            {"acltype": "unsubscribePattern", "topic": t, "allow": True},
        ]
    acls += [{"acltype": "publishClientSend", "topic": t, "allow": True} for t in user.write]
    return acls


def render_dynsec(existing: Mapping[str, object] | None, admin: BrokerUser, password: str) -> dict[str, object]:
    """The dynamic-security plugin's configuration: ``admin`` as its client (password hashed as the plugin reads
    it: PBKDF2-SHA512, base64 salt and hash, iterations) in a role with ``admin``'s topics. The clients, roles
    and groups of ``existing`` (the file the plugin saved) are kept; its admin client and role are replaced.
    Default access: nothing for the plugin's clients beyond their roles."""
    _, _, iterations, salt, digest = password_hash(password).split("$")
    doc = dict(existing or {})

    def others(key: str, name_key: str) -> list[object]:
        items = doc.get(key)
        keep = {admin.name} if key == "clients" else {DYNSEC_ADMIN_ROLE}
        return (
            [i for i in items if not (isinstance(i, dict) and i.get(name_key) in keep)]
            if isinstance(items, list)
            else []
        )

    client = {
        "username": admin.name,
        "textName": admin.what[:100],
        "password": digest,
        "salt": salt,
        "iterations": int(iterations),
        "roles": [{"rolename": DYNSEC_ADMIN_ROLE}],
    }
    role = {"rolename": DYNSEC_ADMIN_ROLE, "acls": _dynsec_acls(admin)}
    return {
        "clients": [client, *others("clients", "username")],
        "roles": [role, *others("roles", "rolename")],
        "groups": doc.get("groups", []) if isinstance(doc.get("groups"), list) else [],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }


@dataclass(frozen=True)
class Written:
    passwd: Path
    acl: Path
    secrets: Path
    users: list[BrokerUser]
    generated: list[str]  # users whose password was made now
    dynsec: Path | None = None  # the dynamic-security plugin's file (when the scheduler is among the users)


def write(
    out_dir: Path,
    all_users: Sequence[BrokerUser],
    environ: Mapping[str, str],
    secrets_file: Path,
    *,
    rotate: Sequence[str] = (),
    revoke: Sequence[str] = (),
) -> Written:
    """Write ``<out_dir>/passwd`` (0640: the broker's user must be able to read it), ``<out_dir>/acl`` (0644)
    and the passwords into ``secrets_file`` (a dotenv file such as compose's ``.env``, made 0600): its other
    lines are kept, the ``MQTT_PASSWORD_*`` lines of these users replaced or added. ``revoke``: users (not in
    ``all_users``) whose password lines are removed and who are listed in ``MQTT_REVOKED``; ``rotate``: users
    given a new password (and no longer revoked)."""
    known = read_secrets(secrets_file)
    names = {u.name for u in all_users}
    if set(revoke) & names:
        raise ConfigurationError(f"revoked users still among the broker's users: {sorted(set(revoke) & names)}")
    unknown = sorted(set(rotate) - names)
    if unknown:
        raise ConfigurationError(f"cannot rotate unknown broker users: {', '.join(unknown)}")
    pws = passwords(all_users, environ, known, rotate)
    generated = [
        u.name
        for u in all_users
        if u.name in rotate or not (environ.get(env_name(u.name)) or known.get(env_name(u.name)))
    ]
    still_revoked = sorted((set(revoked(known)) | set(revoke)) - set(rotate))
    write_atomic(out_dir / "passwd", "".join(f"{u.name}:{password_hash(pws[u.name])}\n" for u in all_users), 0o640)
    write_atomic(out_dir / "acl", render_acl(all_users), 0o644)
    dynsec = None
    admin = next((u for u in all_users if u.name == EXPERIMENTS), None)
    if admin is not None:
        dynsec = out_dir / DYNSEC_DIR / DYNSEC_FILE
        existing = None
        if dynsec.exists():
            try:
                existing = json.loads(dynsec.read_text())
            except ValueError as exc:
                raise ConfigurationError(
                    f"{dynsec}: not the plugin's JSON ({exc}); move it away to start afresh"
                ) from None
        # 0640 like the password file (it holds hashes); the broker rewrites it (its own mode) on each change
        text = json.dumps(render_dynsec(existing, admin, pws[admin.name]), indent=2) + "\n"
        try:
            write_atomic(dynsec, text, 0o640)
        except PermissionError:
            raise ConfigurationError(
                f"cannot write {dynsec}: the broker's container owns its folder once it ran (uid 1883); run this "
                "command with sudo"
            ) from None
    ours: dict[str, str] = {env_name(u.name): pws[u.name] for u in all_users}
    ours[REVOKED] = ",".join(still_revoked)
    gone = {env_name(n) for n in revoke}
    kept = []
    for line in secrets_file.read_text().splitlines() if secrets_file.exists() else []:
        name = line.split("=", 1)[0].strip()
        if name in gone:
            continue
        if name in ours:
            kept.append(f"{name}={ours.pop(name)}")
        else:
            kept.append(line)
    if not ours.get(REVOKED):
        ours.pop(REVOKED, None)  # no revocation: no line
    if ours:
        kept += ["# Broker passwords (`smartzone broker users`): one per broker user; keep private, never commit."]
        kept += [f"{k}={v}" for k, v in ours.items()]
    write_atomic(secrets_file, "\n".join(kept) + "\n", 0o600)
    return Written(out_dir / "passwd", out_dir / "acl", secrets_file, list(all_users), generated, dynsec)
