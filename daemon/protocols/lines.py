"""Chat input lines: framing bytes into bounded lines and parsing input lines. No I/O here."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from chatmod.core.model import JOIN_EVENT, JOIN_TEXT_PREFIX, Message, generate_message_id
from chatmod.errors import InputError


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    data: bytes


@dataclass(frozen=True, slots=True)
class OversizedLine:
    number: int
    size: int


class LineFramer:
    """Splits a byte stream into lines of at most ``max_line_bytes``.

    A longer line is reported once (:class:`OversizedLine`) and its bytes are dropped as
    they arrive, so it never sits in memory whole.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray()
        self._line_number = 0
        self._discarding = 0  # bytes dropped so far of an oversized line; 0 when not dropping

    def feed(self, data: bytes) -> Iterator[Line | OversizedLine]:
        """Lines completed by ``data``, in order."""
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            yield from self._complete_line(data[start:newline])
            start = newline + 1
        rest = data[start:]
        if self._discarding:
            self._discarding += len(rest)
        elif len(self._buffer) + len(rest) > self.max_line_bytes:
            self._discarding = len(self._buffer) + len(rest)
            self._buffer.clear()
        else:
            self._buffer += rest

    def pending_bytes(self) -> int:
        """Bytes of a line begun and not yet ended (0 while an oversized one is dropped)."""
        return len(self._buffer)

    def end(self) -> Iterator[Line | OversizedLine]:
        """The last line, if the stream did not end with a newline."""
        if self._buffer or self._discarding:
            yield from self._complete_line(b"")

    def _complete_line(self, tail: bytes) -> Iterator[Line | OversizedLine]:
        self._line_number += 1
        if self._discarding:
            size = self._discarding + len(tail)
            self._discarding = 0
            yield OversizedLine(self._line_number, size)
            return
        if self._buffer:
            line = bytes(self._buffer) + tail
            self._buffer.clear()
        else:
            line = tail
        if len(line) > self.max_line_bytes:
            yield OversizedLine(self._line_number, len(line))
        else:
            yield Line(self._line_number, line)


def decode_line(data: bytes) -> tuple[str, bool]:
    """The line as text without its line ending, and whether invalid UTF-8 was replaced."""
    if data.endswith(b"\r"):
        data = data[:-1]
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def _optional_str(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"{key!r} must be a string, found {type(value).__name__}")


def parse_input_record(
    record: object, source: str, default_channel: str | None = None
) -> Message:
    """A message from the design's input line (already JSON-decoded).

    ``{"id", "text", "author", "channel", "metadata", "images"}``; only ``text`` is required.
    ``{"type": "join", "author", "channel"}`` is someone joining (their name is checked).
    """
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, found {type(record).__name__}")
    kind = record.get("type")
    if kind == JOIN_EVENT:
        return _join_record(record, source, default_channel)
    if kind not in (None, "message"):
        raise InputError(f"'type' must be 'message' or 'join', found {str(kind)[:40]!r}")
    text = record.get("text")
    if not isinstance(text, str):
        found = "nothing" if text is None else type(text).__name__
        raise InputError(f"'text' must be a string, found {found}")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError(f"'metadata' must be an object, found {type(metadata).__name__}")
    images = record.get("images") or []
    if images and (not isinstance(images, list) or not all(isinstance(i, str) for i in images)):
        raise InputError("'images' must be an array of URL strings")
    channel = _optional_str(record, "channel")
    return Message(
        id=_optional_str(record, "id") or generate_message_id(),
        text=text,
        source=source,
        author=_optional_str(record, "author"),
        channel=channel if channel is not None else default_channel,
        metadata=metadata,
        images=tuple(images),
    )


def _join_record(record: dict[str, Any], source: str, default_channel: str | None) -> Message:
    """``{"type": "join", "author": NAME, "channel": ...}``: NAME's username is checked."""
    author = _optional_str(record, "author")
    if not author:
        raise InputError("a join needs 'author', the name that joined")
    channel = _optional_str(record, "channel")
    return Message(
        id=_optional_str(record, "id") or generate_message_id(),
        text=JOIN_TEXT_PREFIX + author,
        source=source,
        author=author,
        channel=channel if channel is not None else default_channel,
        event=JOIN_EVENT,
    )


def parse_input_line(text: str, source: str, default_channel: str | None = None) -> Message:
    """A message from one JSON input line; :class:`InputError` says what is wrong."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from None
    return parse_input_record(record, source, default_channel)
