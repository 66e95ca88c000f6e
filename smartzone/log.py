"""Logging, configured once: ``time level logger message key=value ...`` on stderr.

Messages quote topics, device keys and errors that came from the network: their control characters are
escaped (``smartzone.terminal``) so a log line stays one line and cannot drive the terminal.
"""

from __future__ import annotations

import logging

from smartzone.terminal import escape


class _Formatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), force=True)
    formatter = _Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    logging.getLogger("httpx").setLevel(logging.WARNING)
