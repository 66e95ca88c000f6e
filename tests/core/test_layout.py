"""The project's shape, held against the house we intend (``docs/architecture.json``).

Each product file belongs to one part (the most specific path that names it): the composition root
(``cli/``), the stages (ingest, the charter job, the API, dashboards, gateways), the charter's rules
(``datacharter/charter.py``, ``explain.py``, ``noise.py``: data every stage reads), the payload codecs
(``ingest/codecs/``: decoders for ingest, encoders for the simulator), storage and the core
(``smartzone/``). An import from one part into another must be one of the file's arrows, and no never is
broken. Only the composition root wires stages; no file and no part imports itself back through others.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOUSE = json.loads((REPO / "docs" / "architecture.json").read_text())
PACKAGES = ("smartzone", "cli", "ingest", "storage", "datacharter", "api", "gateways", "dashboards", "experiments")


def _part(rel: str) -> str | None:
    """The part a file belongs to: the longest path of ``is`` that names it."""
    best, length = None, -1
    for name, part in HOUSE["parts"].items():
        for p in part["is"]:
            if (rel == p or (p.endswith("/") and rel.startswith(p))) and len(p) > length:
                best, length = name, len(p)
    return best


def _module_file(module: str) -> str | None:
    """The repository file a dotted module name resolves to (a package's ``__init__.py``), if it is ours."""
    base = REPO / Path(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand.relative_to(REPO).as_posix()
    return None


def _imports(path: Path) -> set[str]:
    """Every module of ours the file imports, at any depth of the file (function-level imports count)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import mod`` imports the module pkg.mod when there is one
            names = [
                f"{node.module}.{a.name}" if _module_file(f"{node.module}.{a.name}") else node.module
                for a in node.names
            ]
        else:
            continue
        for n in names:
            if n.split(".")[0] in PACKAGES:
                target = _module_file(n)
                if target:
                    out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    return {p.relative_to(REPO).as_posix(): _imports(p) for p in files}


GRAPH = _graph()


def test_every_product_file_is_on_a_part():
    assert not [f for f in GRAPH if _part(f) is None]


def test_every_import_between_parts_is_an_arrow_of_the_house():
    arrows = {tuple(a) for a in HOUSE["arrows"]}
    nevers = {(a, b): why for a, b, why in HOUSE["never"]}
    assert not arrows & set(nevers), "an arrow the house also forbids"
    bad = []
    for src, targets in GRAPH.items():
        for dst in targets:
            a, b = _part(src), _part(dst)
            if a != b and (a, b) not in arrows:
                bad.append(f"{src} ({a}) -> {dst} ({b}){': ' + nevers[a, b] if (a, b) in nevers else ''}")
    assert not bad, "\n".join(bad)


def test_only_the_composition_root_imports_several_stages():
    stages = {"Ingest", "Job", "API", "Dashboards", "Gateways"}
    for src, targets in GRAPH.items():
        if _part(src) == "Root":
            continue
        others = {_part(t) for t in targets} & stages - {_part(src)}
        assert not others, f"{src} imports the stages {sorted(others)}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if start in state:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state and nxt in graph:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_no_import_circle_between_files():
    graph = {f: ts - {f} for f, ts in GRAPH.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_import_circle_between_packages_or_parts():
    packages: dict[str, set[str]] = {}
    parts: dict[str, set[str]] = {}
    for src, targets in GRAPH.items():
        for dst in targets:
            if src.split("/")[0] != dst.split("/")[0]:
                packages.setdefault(src.split("/")[0], set()).add(dst.split("/")[0])
            if _part(src) != _part(dst):
                parts.setdefault(_part(src), set()).add(_part(dst))
    for graph in (packages, parts):
        graph = graph | {n: set() for vs in graph.values() for n in vs if n not in graph}
        assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_layout_check_finds_a_forbidden_import():
    """Negative control: an ingest module importing the charter job, or the core importing a stage, is caught."""
    arrows = {tuple(a) for a in HOUSE["arrows"]}
    assert (_part("ingest/worker.py"), _part("datacharter/job.py")) not in arrows
    assert (_part("smartzone/settings.py"), _part("storage/influx.py")) not in arrows
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _imports(REPO / "cli" / "up.py") >= {"cli/services.py", "ingest/worker.py", "datacharter/job.py"}


def test_one_wheel_holds_every_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("smartzone-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in PACKAGES:
        assert f"{pkg}/__init__.py" in names, pkg
    assert "ingest/broker/mosquitto.conf" in names and "gateways/registry/antwerp.yaml" in names
    assert "experiments/migrations/env.py" in names and "experiments/migrations/versions/0001_initial.py" in names
    # the sample experiments, shipped as templates (data files: no __init__.py)
    assert {"experiments/samples/mqtt_rtt_probe.py", "experiments/samples/ble_scan.py"} <= names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_urllib3_is_not_replaced_by_urllib3_future():
    """grafana-client's niquests pulls in urllib3-future, whose wheel overwrites urllib3 (requests-based tools
    then fail); ``./dev`` builds it with URLLIB3_NO_OVERRIDE so both live side by side."""
    import importlib.metadata

    import urllib3

    assert urllib3.__version__ == importlib.metadata.version("urllib3")
