"""Redis stream entries to messages: the checks on what a producer put in a stream. No I/O.

Anyone who can ``XADD`` to the stream can put anything in an entry: any number of fields,
names and values of any bytes, of any size. :func:`entry_to_message` turns an entry into a
message or raises :class:`~chatmod.errors.InputError` saying why it cannot; nothing else
escapes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from chatmod.core.model import Message
from chatmod.errors import InputError
from chatmod.protocols.lines import parse_input_record

# Same default as the stdin source's max_line_bytes: the two inputs carry the same lines.
DEFAULT_MAX_ENTRY_BYTES = 65536
# The input line has six fields; a producer may add its own, but not without bound (field
# names cost nothing towards the size of an entry whose values are empty).
MAX_ENTRY_FIELDS = 64
TEXT_FIELDS = ("text", "author", "channel", "type")
JSON_FIELDS = ("metadata", "images")


def entry_size(fields: Mapping[bytes, bytes]) -> int:
    """Bytes of an entry's field names and values together."""
    return sum(len(name) + len(value) for name, value in fields.items())


def over_limits(fields: Mapping[bytes, bytes], max_entry_bytes: int) -> str | None:
    """Why the entry is too big to be a chat message, or None when it is not."""
    if len(fields) > MAX_ENTRY_FIELDS:
        return f"{len(fields)} fields is over the limit of {MAX_ENTRY_FIELDS}"
    size = entry_size(fields)
    if size > max_entry_bytes:
        return f"{size} bytes is over max_entry_bytes ({max_entry_bytes})"
    return None


def entry_to_message(
    entry_id: bytes,
    fields: Mapping[bytes, bytes],
    *,
    source: str,
    default_channel: str | None = None,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
) -> Message:
    """The message an entry carries; :class:`InputError` says why there is none.

    Fields map to the input line: ``text`` (required), ``author``, ``channel`` (UTF-8),
    ``metadata`` (a JSON object), ``images`` (a JSON array of URLs). An ``id`` that is
    missing, blank or not UTF-8 is replaced by the entry id, so that the decision can still
    be traced to its entry. Other fields are ignored.
    """
    reason = over_limits(fields, max_entry_bytes)
    if reason is not None:
        raise InputError(reason)
    record: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = fields.get(name.encode())
        if value is not None:
            record[name] = _decode(name, value)
    for name in JSON_FIELDS:
        value = fields.get(name.encode())
        if value is not None:
            try:
                record[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise InputError(f"{name!r} is not JSON") from None
    record["id"] = _message_id(fields.get(b"id")) or entry_id.decode("ascii", "replace")
    return parse_input_record(record, source, default_channel)


def _decode(name: str, value: bytes) -> str:
    # Rejected rather than repaired: a moderation verdict on a text with replaced
    # characters would not be a verdict on what was said. The entry keeps the bytes.
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name!r} is not UTF-8 (byte {exc.start})") from None


def _message_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.strip() else None
