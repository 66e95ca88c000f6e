"""``python -m gateways.agent run --config FILE`` and ``... selftest --config FILE [--root DIR] [--json]``."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from pathlib import Path

from gateways.agent.config import ConfigError, load


def _run(args: argparse.Namespace) -> int:
    from gateways.agent.relay import Agent

    try:
        cfg = load(args.config)
        cfg.password()
    except ConfigError as exc:
        print(f"smartzone-gateway-agent: {exc}", file=sys.stderr)
        return 2
    agent = Agent(cfg, root=Path(args.root)).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    agent.stop()
    return 0


def _selftest(args: argparse.Namespace) -> int:
    # the self-test checks (issue 15, section 3) live in their own module, imported only when asked for
    selftest = importlib.import_module("gateways.agent.selftest")

    argv = ["--config", str(args.config), "--root", str(args.root)] + (["--json"] if args.json else [])
    return int(selftest.main(argv))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartzone-gateway-agent", description="The Smart Zone gateway agent.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="relay the local broker to the centre over the disk spool; heartbeat")
    run.add_argument("--config", type=Path, default=Path("/etc/smartzone-gateway/agent.toml"))
    run.add_argument("--root", default="/", help="where /proc, /sys and /dev are read (tests: a fake root)")
    run.add_argument("--log-level", default="INFO")
    st = sub.add_parser("selftest", help="check the gateway's parts; exit code = number of failures")
    st.add_argument("--config", type=Path, default=Path("/etc/smartzone-gateway/agent.toml"))
    st.add_argument("--root", default="/")
    st.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    return _run(args) if args.command == "run" else _selftest(args)


if __name__ == "__main__":
    sys.exit(main())
