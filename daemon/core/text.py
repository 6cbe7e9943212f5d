"""Chat text shown to an operator (log lines, ``chatmod tail``): control characters escaped,
so that a chat line can neither rewrite the operator's terminal nor forge a log line."""

from __future__ import annotations

# C0 controls and DEL, and C1 controls too: some terminals take 0x9B as an escape sequence.
CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
CONTROL_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def printable(text: str, limit: int) -> str:
    """``text`` with control characters escaped, cut to ``limit`` characters."""
    shown = text.translate(CONTROL_ESCAPES)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
