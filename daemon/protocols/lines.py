"""Chat input lines: framing bytes into bounded lines and parsing input lines. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import orjson

from chatmod.core.model import (
    JOIN_EVENT,
    JOIN_TEXT_PREFIX,
    Message,
    generate_message_id,
    new_message,
)
from chatmod.core.quick import quick_init
from chatmod.errors import InputError


@quick_init
@dataclass(frozen=True, slots=True)
class OversizedLine:
    number: int
    size: int


class FramedLines(NamedTuple):
    """The lines one read completed: ``data[i]`` is line ``first + i`` without its newline,
    or ``b""`` in place of a line too long (its bytes were dropped; it is in ``oversized``).
    """

    first: int
    data: list[bytes]
    oversized: list[OversizedLine]


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

    def feed_lines(self, data: bytes) -> FramedLines:
        """The lines completed by ``data``, as bytes (no object per line: a read brings
        hundreds of them)."""
        pieces = data.split(b"\n")
        rest = pieces.pop()
        first = self._line_number + 1
        oversized: list[OversizedLine] = []
        if pieces:
            # The first piece ends a line begun by earlier reads; the others are whole lines.
            head = self._complete_line(pieces[0])
            if isinstance(head, OversizedLine):
                oversized.append(head)
                pieces[0] = b""
            else:
                pieces[0] = head
            limit = self.max_line_bytes
            if len(data) > limit:  # else no whole line in it can be too long
                for index in range(1, len(pieces)):
                    if len(pieces[index]) > limit:
                        oversized.append(OversizedLine(first + index, len(pieces[index])))
                        pieces[index] = b""
            self._line_number += len(pieces) - 1
        if self._discarding:
            self._discarding += len(rest)
        elif len(self._buffer) + len(rest) > self.max_line_bytes:
            self._discarding = len(self._buffer) + len(rest)
            self._buffer.clear()
        else:
            self._buffer += rest
        return FramedLines(first, pieces, oversized)

    def pending_bytes(self) -> int:
        """Bytes of a line begun and not yet ended (0 while an oversized one is dropped)."""
        return len(self._buffer)

    def end_lines(self) -> FramedLines:
        """The last line, if the stream did not end with a newline, as :meth:`feed_lines`
        gives lines."""
        if not self._buffer and not self._discarding:
            return FramedLines(self._line_number + 1, [], [])
        last = self._complete_line(b"")
        if isinstance(last, OversizedLine):
            return FramedLines(last.number, [b""], [last])
        return FramedLines(self._line_number, [last], [])

    def _complete_line(self, tail: bytes) -> bytes | OversizedLine:
        self._line_number += 1
        if self._discarding:
            size = self._discarding + len(tail)
            self._discarding = 0
            return OversizedLine(self._line_number, size)
        if self._buffer:
            line = bytes(self._buffer) + tail
            self._buffer.clear()
        else:
            line = tail
        if len(line) > self.max_line_bytes:
            return OversizedLine(self._line_number, len(line))
        return line


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
    # Every input line comes through here: the common case (plain strings, no metadata or
    # images) takes one dict lookup per field; anything else goes to the general checks.
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, found {type(record).__name__}")
    get = record.get
    kind = get("type")
    if kind is not None:
        if kind == JOIN_EVENT:
            return _join_record(record, source, default_channel)
        if kind != "message":
            raise InputError(f"'type' must be 'message' or 'join', found {str(kind)[:40]!r}")
    text = get("text")
    if not isinstance(text, str):
        found = "nothing" if text is None else type(text).__name__
        raise InputError(f"'text' must be a string, found {found}")
    metadata = get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError(f"'metadata' must be an object, found {type(metadata).__name__}")
    images = get("images")
    if images:
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise InputError("'images' must be an array of URL strings")
        images = tuple(images)
    else:
        images = ()
    channel = get("channel")
    if channel is None:
        channel = default_channel
    elif type(channel) is not str:
        channel = _optional_str(record, "channel")
    message_id = get("id")
    if type(message_id) is not str:
        message_id = _optional_str(record, "id")
    author = get("author")
    if author is not None and type(author) is not str:
        author = _optional_str(record, "author")
    return Message(message_id or generate_message_id(), text, source, author, channel,
                   metadata, images)


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


def parse_input_line(
    text: str | bytes, source: str, default_channel: str | None = None
) -> Message:
    """A message from one JSON input line (text, or bytes of valid UTF-8); :class:`InputError`
    says what is wrong."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from None
    return parse_input_record(record, source, default_channel)


def parse_input_data(
    data: bytes, source: str, default_channel: str | None = None
) -> tuple[Message | None, bool]:
    """The message of one framed JSON input line (None for a blank line), and whether invalid
    UTF-8 was replaced; :class:`InputError` says what is wrong.

    The same as :func:`decode_line`, a blank check and :func:`parse_input_line`, without
    decoding the line first: orjson reads bytes of valid UTF-8 as it reads their text, and
    refuses any other, which then takes that general path.
    """
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        text, replaced = decode_line(data)
        if not text.strip():
            return None, replaced
        return parse_input_line(text, source, default_channel), replaced
    return parse_input_record(record, source, default_channel), False


# A key the line does not have (msgspec leaves the default, this very object, in its place).
_ABSENT = msgspec.Raw()


class _InputLine(msgspec.Struct, forbid_unknown_fields=True, gc=False,
                 rename={"kind": "type"}):
    """An input line of the fields :func:`parse_input_record` reads, the usual ones of the
    type it takes without a conversion: msgspec refuses any other line (a key more, an
    integer id, a value of another type), which then takes the general path. ``metadata``,
    ``images`` and ``type`` are only seen, not read: a line with any of them takes the
    general path too (orjson reads them: it refuses an integer beyond 64 bits, which
    msgspec would take and the request's JSON could then not hold)."""

    text: str
    id: str | None = None
    author: str | None = None
    channel: str | None = None
    metadata: msgspec.Raw = _ABSENT
    images: msgspec.Raw = _ABSENT
    kind: msgspec.Raw = _ABSENT


_decode_input_line = msgspec.json.Decoder(_InputLine).decode


def parse_input_lines(
    lines: FramedLines, source: str, default_channel: str | None,
    problems: list[tuple[int, InputError | None]],
) -> list[Message]:
    """:func:`parse_input_data` for each framed JSON input line, in one loop: the messages (a
    blank line, or one left out as too long, has none). A line refused goes to ``problems``
    as its number and error; a line whose invalid UTF-8 was replaced goes there with None
    (and gives its message).

    A line of the usual shape (a string ``text``, maybe a string or null ``id``, ``author``
    and ``channel``, nothing else) is read by msgspec straight into its message's parts (no
    dict, no lookups: half the time of orjson and the checks); any other line takes the
    general path, with the same outcome."""
    decode, refused, make = _decode_input_line, (
        msgspec.MsgspecError, UnicodeDecodeError, RecursionError), new_message
    messages: list[Message] = []
    append = messages.append
    for number, data in enumerate(lines.data, lines.first):
        try:
            line = decode(data)
        except refused:
            pass
        else:
            if line.metadata is _ABSENT and line.images is _ABSENT and line.kind is _ABSENT:
                append(make(line.id or generate_message_id(), line.text, source, line.author,
                            default_channel if line.channel is None else line.channel))
                continue
        try:  # not JSON, not UTF-8, blank, a join, metadata, or not of the usual types
            message, replaced = parse_input_data(data, source, default_channel)
        except InputError as exc:
            problems.append((number, exc))
            continue
        if message is not None:
            append(message)
            if replaced:
                problems.append((number, None))
    return messages
