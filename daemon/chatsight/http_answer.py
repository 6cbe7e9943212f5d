"""The plain HTTP/1.1 answer, read without h11's per-request cost. No I/O.

h11 spent about 120 µs of CPU per request and answer on the bench machine, a third of the
HTTP fallback's cost per message. Chatsight answers ``POST /text/moderation`` the plain way:
``HTTP/1.1``, a status, headers, ``Content-Length``, the body. :func:`parse_plain_head` reads
such a head with rules stricter than h11's; any other head (chunked, HTTP/1.0, 1xx/204/304,
``Connection: close``, obs-fold, a byte h11 might read differently) gives ``None`` and h11
reads the answer instead. tests/test_chatsight_http_answer.py checks the pair against h11.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Stricter than RFC 9112 and h11 on purpose: what matches here, h11 reads the same way.
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: [\x20-\x7e]*)?")
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?)[ \t]*")
_DIGITS = re.compile(rb"[0-9]{1,15}")
NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class PlainHead:
    status: int
    headers: list[tuple[bytes, bytes]]  # names in lower case, as h11 gives them
    content_length: int


def parse_plain_head(head: bytes) -> PlainHead | None:
    """The head (without its final blank line) of a plain answer, or ``None`` when it is not
    one (h11 then reads it)."""
    lines = head.split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        return None
    status = int(status_line[1])
    if status in NO_BODY_STATUSES:
        return None
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    for line in lines[1:]:
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            return None
        name, value = field[1].lower(), field[2]
        if name == b"content-length":
            if content_length is not None or _DIGITS.fullmatch(value) is None:
                return None
            content_length = int(value)
        elif name == b"connection":
            if value.lower() != b"keep-alive":
                return None  # close, upgrade, lists: h11 decides
        elif name in (b"transfer-encoding", b"upgrade"):
            return None
        headers.append((name, value))
    if content_length is None:
        return None
    return PlainHead(status, headers, content_length)
