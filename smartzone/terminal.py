"""Untrusted text made safe for a terminal: the one escape every command applies before printing it.

Dead letters hold what anyone on the network sent (payloads, topics) and what was said about it (reasons,
details that quote it); InfluxDB's errors and tag values can quote it too. Printed raw, an ESC sequence in a
payload moves the cursor, rewrites earlier lines or retitles the window, and a bidirectional override makes
text read differently from what it is (CVE-2021-42574, "Trojan Source"). ``escape`` writes every control
character as a visible escape, Python-style:

- C0 controls (U+0000-U+001F: ``\\x1b``, and ``\\n``, ``\\r``, ``\\t`` too, so a payload cannot forge a line
  of the listing), DEL (``\\x7f``) and C1 controls (U+0080-U+009F, ``\\x9b`` is a one-byte CSI);
- bidirectional formatting (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and the line and
  paragraph separators (U+2028, U+2029), as ``\\u202e``; lone surrogates (``\\udc80``), which a UTF-8
  terminal cannot even be sent.

Backslashes are left as they are (a payload's JSON escapes stay readable), so ``\\x1b`` in the output is
either an escaped ESC or those four characters in the data.
"""

from __future__ import annotations

_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0)]
_FORMATS = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_SURROGATES = range(0xD800, 0xE000)  # lone ones cannot even be written to a UTF-8 terminal
_TABLE = {c: _NAMED.get(c, f"\\x{c:02x}") for c in _CONTROLS} | {c: f"\\u{c:04x}" for c in (*_FORMATS, *_SURROGATES)}


def escape(text: str | bytes) -> str:
    """``text`` with every control and bidirectional formatting character escaped; bytes are decoded as
    UTF-8 first (invalid bytes become U+FFFD)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text.translate(_TABLE)
