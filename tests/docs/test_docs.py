"""The documentation: the site builds with ``mkdocs build --strict``, the README stays short, links resolve,
and every command the docs show either runs here or is marked as an example that cannot.

Commands are the lines of ```sh / ```bash / ```console / ```shell blocks that start (after an optional
``$ ``) with ``smartzone `` or ``./dev ``. A block whose previous non-blank line is an HTML comment
``<!-- example: why it cannot run here -->`` is an example; every command of any other block must be one
this module runs (``RUNNABLE``: offline commands that need no broker or database) and is run, and must
succeed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = sorted(DOCS.rglob("*.md"))
SHELL_FENCES = {"sh", "bash", "console", "shell"}
EXAMPLE = re.compile(r"<!--\s*example:\s*\S.*-->")
# Commands that need no service: run by test_runnable_commands_succeed (prefixes of what the docs show).
RUNNABLE = (
    "smartzone --help",
    "smartzone charter check",
    "smartzone charter explain",
    "smartzone registry check",
    "smartzone config show",
    "smartzone dashboards build --check",
)


def runnable(command: str) -> bool:
    """A command this module runs: an offline one, or any command's ``--help``."""
    return command.startswith(RUNNABLE) or (command.startswith("smartzone ") and command.endswith(" --help"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTZONE_")}
    env["NO_MKDOCS_2_WARNING"] = "1"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def shell_blocks(path: Path) -> list[tuple[int, bool, list[str]]]:
    """(line, marked as example, commands) for each shell code block of a Markdown file."""
    blocks = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"\s*(`{3,})\s*([\w-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if lang not in SHELL_FENCES:
            continue
        before = [ln for ln in lines[:start] if ln.strip()]
        marked = bool(before) and bool(EXAMPLE.fullmatch(before[-1].strip()))
        blocks.append((start + 1, marked, _commands(body)))
    return blocks


def _commands(body: list[str]) -> list[str]:
    joined, cur = [], ""
    for line in body:
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        cur = f"{cur} {line}".strip() if cur else line
        if cur.endswith("\\"):
            cur = cur[:-1].rstrip()
            continue
        joined.append(cur)
        cur = ""
    out = []
    for cmd in joined:
        cmd = re.sub(r"\s+#.*$", "", cmd).strip()
        if cmd.startswith(("smartzone ", "./dev ")) or cmd in ("smartzone", "./dev"):
            out.append(cmd)
    return out


def documented_commands() -> list[tuple[str, int, bool, str]]:
    out = []
    for path in [README, *PAGES]:
        for line, marked, commands in shell_blocks(path):
            out += [(str(path.relative_to(REPO)), line, marked, c) for c in commands]
    return out


def test_docs_parse_finds_commands():
    commands = documented_commands()
    assert any(c == "./dev test" for *_, c in commands), "the README's test command is gone"
    assert any(not marked for _, _, marked, _ in commands), "no command of the docs is run by a test"


def test_every_command_is_run_or_marked_as_an_example():
    unmarked = [(f, ln, c) for f, ln, marked, c in documented_commands() if not marked and not runnable(c)]
    assert not unmarked, (
        "commands that no test runs; make them runnable here or mark the block with "
        f"'<!-- example: why -->': {unmarked}"
    )


RUN = sorted({c for _, _, marked, c in documented_commands() if not marked and runnable(c)})


@pytest.mark.parametrize("command", RUN)
def test_runnable_commands_succeed(command):
    args = command.split()[1:]
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    if not command.endswith("--check"):  # a check that passes is silent
        assert done.stdout.strip(), f"{command} printed nothing"


def test_mkdocs_build_strict(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "-f",
            str(REPO / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    api = (tmp_path / "site" / "reference" / "api.html").read_text()
    assert "/v1/datasets/{id}/observations" in api, "the API reference was not generated from the OpenAPI"


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 250


def test_readme_test_command_is_what_ci_runs():
    ci = [
        ln.strip()
        for ln in (REPO / ".ci" / "run").read_text().splitlines()
        if ln.strip() and not ln.startswith("#") and not ln.startswith(("set ", "cd "))
    ]
    readme = [c for f, _, _, c in documented_commands() if f == "README.md"]
    assert ci == ["./dev test"], ci
    assert "./dev test" in readme and "./dev demo" in readme


def test_readme_links_resolve():
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [ln.split("#")[0] for ln in links if not re.match(r"[a-z]+:", ln) and not ln.startswith("#")]
    assert local, "the README links to no docs page"
    missing = [ln for ln in local if ln and not (REPO / ln).exists()]
    assert not missing, missing


def test_every_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    pages = [str(p.relative_to(DOCS)) for p in PAGES if "hooks" not in p.parts]
    assert [p for p in pages if p not in nav] == []
