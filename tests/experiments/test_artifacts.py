"""Artifacts: what is accepted (a compiling UTF-8 script, a PEP 427 wheel with the smartzone.experiment entry
point), what is refused and why, the size limit while streaming, the content-addressed store; and the HMAC
secrets the API and the scheduler share."""

from __future__ import annotations

import hashlib
import hmac
import stat

import pytest
from pydantic import SecretStr

from experiments import artifacts, secrets
from experiments.db import Artifact, open_store
from experiments.errors import Invalid, TooLarge
from smartzone.settings import Settings
from tests.experiments.world import NOW, SCRIPT, wheel

WHEEL = "probe-1.0-py3-none-any.whl"


def test_a_script_and_a_wheel_are_accepted():
    assert artifacts.validate("probe.py", SCRIPT) == "script"
    assert artifacts.validate(WHEEL, wheel()) == "wheel"
    assert artifacts.validate("probe-1.0-1-py3-none-any.whl", wheel()) == "wheel"  # with a build tag


@pytest.mark.parametrize(
    ("filename", "data", "message"),
    [
        ("probe.txt", SCRIPT, "a Python script (*.py) or a wheel (*.whl)"),
        ("../probe.py", SCRIPT, "plain file name"),
        ("probe.py", b"", "empty"),
        ("probe.py", "print('é')".encode("latin-1"), "not UTF-8"),
        ("probe.py", b"def f(:\n", "does not compile: line 1"),
        ("probe.py", b"x = 1\x00\n", "does not compile"),
        ("probe.py", wheel(), "not UTF-8"),  # a wheel named as a script: the wrong kind
        (WHEEL, SCRIPT, "not a zip archive"),  # a script named as a wheel
        ("probe.whl", wheel(), "not a PEP 427 wheel file name"),
        ("probe-1.0-py3-none-any.whl", wheel(name="other"), "needs exactly one probe-1.0.dist-info/"),
        (WHEEL, wheel(drop=("RECORD",)), "lacks RECORD"),
        (WHEEL, wheel(drop=("METADATA", "WHEEL")), "lacks METADATA, WHEEL"),
        (WHEEL, wheel(entry=None), "no probe-1.0.dist-info/entry_points.txt"),
        (WHEEL, wheel(entry="[console_scripts]\nprobe = probe.run:main\n"), "no entry point main in"),
        (WHEEL, wheel(entry="[smartzone.experiment]\nmain = probe run\n"), "is not module:function"),
        (WHEEL, wheel(extra={"../evil.py": b""}), "unsafe member path"),
    ],
)
def test_malformed_artifacts_are_refused_saying_why(filename, data, message):
    with pytest.raises(Invalid) as err:
        artifacts.validate(filename, data)
    assert message in str(err.value)


def test_a_corrupt_wheel_is_refused():
    data = bytearray(wheel())
    data[len(data) // 3] ^= 0xFF  # inside a member's deflated data
    with pytest.raises(Invalid, match=r"corrupt|not a zip|unreadable"):
        artifacts.validate(WHEEL, bytes(data))


def test_the_collector_refuses_as_soon_as_the_body_is_over_the_limit():
    c = artifacts.Collector(10)
    c.check_declared(10)
    with pytest.raises(TooLarge):
        c.check_declared(11)
    c.add(b"x" * 6)
    with pytest.raises(TooLarge, match="over the limit of 10 bytes"):
        c.add(b"x" * 5)
    assert c.data() == b""  # what was taken is dropped


def test_the_store_is_content_addressed_and_idempotent(sql_url, tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    sessions = open_store(sql_url)
    try:
        info, created = artifacts.store(sessions, settings, "probe.py", SCRIPT, NOW)
        digest = hashlib.sha256(SCRIPT).hexdigest()
        assert created and (info.sha256, info.size, info.kind, info.filename) == (
            digest,
            len(SCRIPT),
            "script",
            "probe.py",
        )
        path = tmp_path / "data" / "experiments" / "artifacts" / digest
        assert path.read_bytes() == SCRIPT
        again, created_again = artifacts.store(sessions, settings, "renamed.py", SCRIPT, NOW)
        assert not created_again and again.filename == "probe.py"
        with sessions() as session:
            assert session.query(Artifact).count() == 1
        path.unlink()  # a lost file is written again
        artifacts.store(sessions, settings, "probe.py", SCRIPT, NOW)
        assert path.read_bytes() == SCRIPT
        small = Settings(data_dir=tmp_path / "data", experiments={"artifact_max_bytes": 10})
        with pytest.raises(TooLarge):
            artifacts.store(sessions, small, "big.py", b"x = 1\n" * 10, NOW)
        with pytest.raises(Invalid):
            artifacts.store(sessions, settings, "bad.py", b"def (", NOW)
        with sessions() as session:
            assert session.query(Artifact).count() == 1
    finally:
        sessions.kw["bind"].dispose()


def test_the_key_file_is_created_once_0600_and_a_configured_secret_wins(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    k = secrets.key(settings)
    path = tmp_path / "data" / "experiments" / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(k) == 64
    assert secrets.key(settings) == k  # shared: the scheduler reads the same
    configured = Settings(data_dir=tmp_path / "data", experiments={"secret": SecretStr("s3cret-from-settings")})
    assert secrets.key(configured) == b"s3cret-from-settings"


def test_passwords_and_upload_tokens_are_the_contract_hmacs():
    key = b"k" * 32
    assert secrets.broker_password(key, 42, "gw-a") == hmac.new(key, b"broker:42:gw-a", hashlib.sha256).hexdigest()
    token = secrets.upload_token(key, 42, "gw-a")
    assert token == hmac.new(key, b"upload:42:gw-a", hashlib.sha256).hexdigest()
    assert token != secrets.broker_password(key, 42, "gw-a")
    assert secrets.check_upload_token(key, 42, "gw-a", token)
    # negative controls: another experiment, gateway, key or a mangled token
    assert not secrets.check_upload_token(key, 43, "gw-a", token)
    assert not secrets.check_upload_token(key, 42, "gw-b", token)
    assert not secrets.check_upload_token(b"j" * 32, 42, "gw-a", token)
    assert not secrets.check_upload_token(key, 42, "gw-a", token[:-1] + "0")
    assert not secrets.check_upload_token(key, 42, "gw-a", "é")
