"""Installed as a user would: the built wheel in a fresh venv, run from a folder with no checkout in sight.

The wheel is built from this checkout (``pip wheel --no-deps``) and installed, with its dependencies from the
package index pip uses here, into a new venv (not ``--system-site-packages``: that would hide a missing
dependency). Every command then runs from an empty temporary folder without ``PYTHONPATH``, so it can find
only what the wheel ships: the registry, the charter, the dashboards, the broker configuration.
Building and installing take 20-70 s on this machine (mostly pip unpacking the dependencies).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli import services
from smartzone.errors import InfluxError
from smartzone.settings import InfluxSettings
from storage.influx import Influx
from tests.conftest import REPO, count_points, wait_for


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    elsewhere: Path  # an empty folder: the current directory of every command
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.elsewhere,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def python(self, code: str) -> str:
        done = self.run("python", "-c", code)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Iterator[Installed]:
    root = tmp_path_factory.mktemp("install")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(root.glob("smartzone-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SMARTZONE_", "PYTHON", "VIRTUAL_ENV", "PIP_REQUIRE"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield Installed(wheel, venv, elsewhere, env)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    where = Path(installed.python("import smartzone, gateways; print(smartzone.__file__)"))
    assert where.is_relative_to(installed.venv), where
    assert not any(installed.elsewhere.iterdir())  # no smartzone.toml, no checkout: only what the wheel ships


@pytest.mark.parametrize(
    "command, says",
    [
        (["--help"], "Smart Zone living-lab data pipeline"),
        (["registry", "check"], "zone 'Antwerp"),
        (["charter", "check"], "valid charter version"),
        (["dashboards", "build", "--check"], ""),  # the packaged dashboards match the packaged registry and charter
        (["config", "show"], "antwerp.yaml"),
    ],
)
def test_commands_run_from_any_folder(installed, command, says):
    done = installed.run("smartzone", *command)
    assert done.returncode == 0, f"{command}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    assert says in done.stdout
    if command[0] == "registry":
        # the default is the registry inside the installed package, named by its absolute path
        assert done.stdout.startswith(str(installed.venv)), done.stdout


def test_a_config_file_or_the_environment_replaces_the_shipped_files(installed):
    mine = installed.elsewhere.parent / "mine.yaml"
    shipped = installed.python("from smartzone.settings import DEMO_REGISTRY; print(DEMO_REGISTRY)")
    mine.write_text(Path(shipped).read_text().replace("name: Antwerp", "name: Elsewhere", 1))
    done = subprocess.run(
        [str(installed.venv / "bin" / "smartzone"), "registry", "check"],
        cwd=installed.elsewhere,
        env={**installed.env, "SMARTZONE_REGISTRY": str(mine)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith(f"{mine}: zone 'Elsewhere"), done.stdout + done.stderr
    bad = subprocess.run(
        [str(installed.venv / "bin" / "smartzone"), "charter", "check"],
        cwd=installed.elsewhere,
        env={**installed.env, "SMARTZONE_CHARTER__PATH": "no/such/charter.yaml"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "no/such/charter.yaml" in bad.stderr


def test_a_plain_install_leaves_urllib3_alone(installed):
    """grafana-client (niquests, urllib3-future) is the ``grafana`` extra: a plain install keeps the real urllib3."""
    out = installed.python(
        "import importlib.metadata as m, importlib.util as u, urllib3\n"
        "print(urllib3.__version__ == m.version('urllib3'), u.find_spec('niquests') is None,"
        " u.find_spec('urllib3_future') is None, u.find_spec('grafana_client') is None)"
    )
    assert out == "True True True True", out
    pip = installed.run("python", "-m", "pip", "show", "-q", "urllib3-future", "niquests")
    assert pip.returncode != 0  # pip finds neither
    done = installed.run("smartzone", "dashboards", "push", "--token", "t0ken")
    assert done.returncode == 2 and "pip install 'smartzone[grafana]'" in done.stderr, done.stderr


def test_the_wheel_carries_the_licence(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{info}/licenses/LICENSE" in names
    text = zipfile.ZipFile(installed.wheel).read(f"{info}/licenses/LICENSE").decode()
    assert text == (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n") and "Version 2.0, January 2004" in text
    meta = installed.python(
        "import importlib.metadata as m; d = m.metadata('smartzone');"
        "print(d['License-Expression'], d.get_all('License-File'))"
    )
    assert meta == "Apache-2.0 ['LICENSE']", meta


def test_up_demo_runs_from_the_wheel(installed, tmp_path):
    """``smartzone up --demo`` (``./dev demo`` without the backfill) with only what the wheel ships: the
    packaged broker configuration, registry and charter; readings flow and the API answers."""
    mqtt_port, influx_port, api_port = services.free_port(), services.free_port(), services.free_port()
    env = {
        **installed.env,
        "SMARTZONE_DATA_DIR": str(tmp_path / "zone"),
        "SMARTZONE_MQTT__PORT": str(mqtt_port),
        "SMARTZONE_INFLUX__URL": f"http://127.0.0.1:{influx_port}",
        "SMARTZONE_SIMULATOR__RATE": "200",
        "SMARTZONE_API__PORT": str(api_port),
    }
    proc = subprocess.Popen(
        [str(installed.venv / "bin" / "smartzone"), "up", "--demo"],
        cwd=installed.elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        influx = Influx(InfluxSettings(url=f"http://127.0.0.1:{influx_port}"))

        def flowing() -> bool:
            assert proc.poll() is None, proc.communicate()[0][-3000:]  # stopped: say why at once
            try:
                return count_points(influx, "smartzone_raw") > 100
            except InfluxError:  # influxd not up yet
                return False

        assert wait_for(flowing, 90)
        api = f"http://127.0.0.1:{api_port}"

        def catalogue() -> int:
            try:
                return httpx.get(f"{api}/v1/datasets", timeout=5).status_code
            except httpx.HTTPError:
                return 0

        assert wait_for(lambda: catalogue() == 200, 30)
        shipped = installed.venv.glob("lib/python*/site-packages/ingest/broker/mosquitto.conf")
        kept = [ln for ln in next(shipped).read_text().splitlines() if ln.startswith("max_")]
        written = (tmp_path / "zone" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        assert kept and set(kept) <= set(written)  # the local broker runs the packaged configuration
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-3000:]
        assert "started mosquitto" in out and "smart zone stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
