"""IRC line framing and reading, with no I/O: the server's bytes into lines, a line into
irctokens' :class:`~irctokens.line.Line` (wrapped: a server may send anything)."""

from __future__ import annotations

from irctokens.line import Line, tokenise

from chatmod.errors import IrcLineError

# IRCv3 message-tags allow 8191 bytes of tags before the 512 of the line proper.
MAX_LINE_BYTES = 8191 + 512


class LineBuffer:
    """Splits the server's bytes into lines at LF (a CR before it is dropped). A line longer
    than ``limit`` is dropped (and counted in ``overlong``): a server cannot fill our memory."""

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self.overlong = 0
        self._pending = bytearray()
        self._skipping = False  # inside an overlong line: drop up to its end

    def push(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes, without their line ends."""
        lines: list[bytes] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            if self._skipping:
                self._skipping = False
            else:
                self._pending += data[start:end]
                if len(self._pending) <= self.limit:
                    lines.append(bytes(self._pending).rstrip(b"\r"))
                else:
                    self.overlong += 1
            self._pending.clear()
            start = end + 1
        if not self._skipping:
            self._pending += data[start:]
            if len(self._pending) > self.limit:
                self.overlong += 1
                self._skipping = True
                self._pending.clear()
        return lines


def parse_line(raw: bytes) -> Line | None:
    """One line from the server; ``None`` when it is blank. :class:`IrcLineError` when it
    has no command. Text that is not UTF-8 is read as Latin-1 (tags: replaced)."""
    for stop in (b"\0", b"\r", b"\n"):  # nothing after these belongs to the line
        raw = raw.split(stop, 1)[0]
    if not raw.strip(b" "):
        return None
    tags, body = b"", raw
    if raw.startswith(b"@"):
        tags, space, body = raw.partition(b" ")
        tags += space
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")
    # irctokens indexes the first word and the command without checking they are there.
    words = text.partition(" :")[0].split()
    if not words or (words[0].startswith(":") and len(words) < 2):
        raise IrcLineError(f"a line with no command: {raw[:80]!r}")
    try:
        return tokenise(tags.decode("utf-8", errors="replace") + text)
    except (ValueError, IndexError) as exc:  # irctokens' own checks; the above should cover it
        raise IrcLineError(f"unreadable line {raw[:80]!r}: {exc}") from None


def is_middle_param(value: str) -> bool:
    """Whether ``value`` can be sent as a parameter before the last (a nick, a channel)."""
    return bool(value) and not value.startswith(":") and not any(
        char in value for char in " \r\n\0")
