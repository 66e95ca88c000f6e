"""The project's shape: stages talk through the model, the broker and the databases, not each other.

Stages import ``smartzone`` (the core) and ``storage``; never one another. The core imports no stage,
except its composition roots (the CLI, ``up`` and the simulator's backfill, which runs simulated data
through the ingest pipeline), which start them. Shared parts: the LoRaWAN
payload codecs (``ingest.codecs``, pure functions over bytes) are the device side's encoders too, so
the gateways' simulator may import them and nothing else of ingest; and the charter document
(``datacharter.charter``) sets the raw retention and pepper rotation, so ingest may import it and
nothing else of the charter (the pepper store, ``ingest.pepper``, is ingest's own). The API describes
each dataset by its charter rules and their plain-language explanation (``datacharter.charter``,
``datacharter.explain``); it imports nothing of the charter job.
The dashboards take the open datasets' fields from the charter document (``datacharter.charter``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "storage", "datacharter", "api", "gateways", "dashboards")
PACKAGES = ("smartzone", *STAGES)
COMPOSITION_ROOTS = {"smartzone/cli.py", "smartzone/up.py", "gateways/backfill.py"}
# stage -> modules of other stages it may import
SHARED = {"gateways": ("ingest.codecs",), "ingest": ("datacharter.charter",),
          "api": ("datacharter.charter", "datacharter.explain"), "dashboards": ("datacharter.charter",)}


def _imports(path: Path, shared: tuple[str, ...] = ()) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        out |= {n.split(".")[0] for n in names if not any(n == m or n.startswith(m + ".") for m in shared)}
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_stages_do_not_import_each_other(package):
    allowed = {package, "smartzone", "storage"} if package != "smartzone" else {"smartzone"}
    for path in (REPO / package).rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel in COMPOSITION_ROOTS:
            continue
        bad = (_imports(path, SHARED.get(package, ())) & set(PACKAGES)) - allowed
        assert not bad, f"{rel} imports {sorted(bad)}"


def test_one_wheel_holds_every_package(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True)
    wheel = next(tmp_path.glob("smartzone-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in PACKAGES:
        assert f"{pkg}/__init__.py" in names, pkg
    assert "ingest/broker/mosquitto.conf" in names and "gateways/registry/antwerp.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_urllib3_is_not_replaced_by_urllib3_future():
    """grafana-client's niquests pulls in urllib3-future, whose wheel overwrites urllib3 (requests-based tools
    then fail); ``./dev`` builds it with URLLIB3_NO_OVERRIDE so both live side by side."""
    import importlib.metadata

    import urllib3

    assert urllib3.__version__ == importlib.metadata.version("urllib3")
