"""Settings: the example file documents every field; precedence; secrets; validation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from smartzone.errors import ConfigurationError
from smartzone.settings import Settings, get_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "smartzone.example.toml"


def _fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and name != "routes":
            out |= _fields(ann, f"{prefix}{name}.")
        else:
            out.add(f"{prefix}{name}")
    return out


def test_example_file_names_every_setting():
    text = EXAMPLE.read_text()
    section, named = "", set()
    for line in text.splitlines():
        if m := re.match(r"\[(\w+)\]", line):
            section = m.group(1) + "."
        elif m := re.match(r"# ([a-z_]+) = ", line):
            named.add(section + m.group(1))
    assert _fields(Settings) - named == set()
    assert named - _fields(Settings) == set(), "the example names settings that do not exist"


def test_example_file_uncommented_is_valid(tmp_path, monkeypatch):
    # uncomment every "# key = value" line (and the routes array) and load it
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        if re.match(r"# [a-z_]+ = |#\s+[{\]]", line):
            lines.append(line.lstrip("#").lstrip())
        elif line.startswith("[") or not line.startswith("#"):
            lines.append(line)
    path = tmp_path / "full.toml"
    path.write_text("\n".join(lines))
    tomllib.loads(path.read_text())
    monkeypatch.setenv("SMARTZONE_CONFIG", str(path))
    s = get_settings()
    assert s.mqtt.username == "smartzone-ingest" and len(s.ingest.routes) == 15


def test_environment_beats_file_beats_defaults(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text('[influx]\nurl = "http://file:8086"\nraw_database = "from_file"\n[mqtt]\nport = 1999\n')
    monkeypatch.setenv("SMARTZONE_CONFIG", str(path))
    monkeypatch.setenv("SMARTZONE_INFLUX__URL", "http://env:8086")
    s = get_settings()
    assert s.influx.url == "http://env:8086"  # environment
    assert s.influx.raw_database == "from_file" and s.mqtt.port == 1999  # file
    assert s.influx.ops_database == "smartzone_ops"  # default


@pytest.mark.parametrize(
    "env, value, message",
    [
        ("SMARTZONE_INFLUX__RAW_DATABASE", 'raw"; DROP DATABASE x', "not a valid identifier"),
        ("SMARTZONE_INFLUX__OPS_RETENTION", "30 days", "not a duration"),
        ("SMARTZONE_CHARTER__OPEN_DATABASE", "open; DROP", "not a valid identifier"),
        ("SMARTZONE_MQTT__PORT", "70000", "less than or equal"),
        ("SMARTZONE_MQTT__SHARE_GROUP", "in/gest", "may not contain"),
        ("SMARTZONE_UNKNOWN", "1", None),
    ],
)
def test_bad_values_are_configuration_errors(monkeypatch, env, value, message):
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    monkeypatch.setenv(env, value)
    if message is None:  # unknown environment variables are simply not ours
        get_settings()
        return
    with pytest.raises(ConfigurationError, match=message):
        get_settings()


def test_example_secrets_refused_outside_development(monkeypatch):
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    monkeypatch.setenv("SMARTZONE_INFLUX__PASSWORD", "changethis")
    assert get_settings().influx.password.get_secret_value() == "changethis"  # development: allowed
    monkeypatch.setenv("SMARTZONE_ENVIRONMENT", "production")
    with pytest.raises(ConfigurationError, match="example value"):
        get_settings()
    monkeypatch.setenv("SMARTZONE_INFLUX__PASSWORD", "a-real-one")
    s = get_settings()
    assert "a-real-one" not in s.model_dump_json()  # secrets are masked when shown


def test_default_files_are_the_shipped_ones_from_any_folder(tmp_path, monkeypatch):
    """The registry and charter defaults do not depend on the current directory (an installed package run
    from any folder finds its own files); the wheel test runs the same from a fresh venv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SMARTZONE_CONFIG", "/nonexistent.toml")
    s = get_settings()
    repo = EXAMPLE.parent
    assert s.registry == repo / "gateways" / "registry" / "antwerp.yaml" and s.registry.is_file()
    assert s.charter.path == repo / "datacharter" / "charter.yaml" and s.charter.path.is_file()
    assert s.data_dir == Path(".smartzone")  # local state stays where the user runs it


def test_file_and_environment_replace_the_shipped_files(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text('registry = "my/zone.yaml"\n[charter]\npath = "/etc/smartzone/charter.yaml"\n')
    monkeypatch.setenv("SMARTZONE_CONFIG", str(path))
    s = get_settings()
    assert s.registry == Path("my/zone.yaml")  # relative: read from the current directory, as given
    assert s.charter.path == Path("/etc/smartzone/charter.yaml")
    monkeypatch.setenv("SMARTZONE_REGISTRY", str(tmp_path / "env.yaml"))
    monkeypatch.setenv("SMARTZONE_CHARTER__PATH", str(tmp_path / "env-charter.yaml"))
    s = get_settings()
    assert s.registry == tmp_path / "env.yaml" and s.charter.path == tmp_path / "env-charter.yaml"
