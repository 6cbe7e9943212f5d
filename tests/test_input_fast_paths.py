"""Differential tests of the input line's fast paths (issue 14): each function that was
replaced is kept here as it was, and the new one must give the same message or the same error.

The 10,000-example run: ``HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest
tests/test_input_fast_paths.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.core.model import JOIN_EVENT, JOIN_TEXT_PREFIX, Message, generate_message_id
from chatmod.errors import InputError
from chatmod.protocols.lines import (
    decode_line,
    parse_input_data,
    parse_input_line,
    parse_input_record,
)

GENERATED_ID = re.compile(r"^[0-9a-f]{8}-[0-9]+$")


# --- the reference: chatmod.protocols.lines and plugins/stdin.py as of 63b095e -------------

def _reference_optional_str(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"{key!r} must be a string, found {type(value).__name__}")


def reference_parse_input_record(
    record: object, source: str, default_channel: str | None = None
) -> Message:
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, found {type(record).__name__}")
    kind = record.get("type")
    if kind == JOIN_EVENT:
        author = _reference_optional_str(record, "author")
        if not author:
            raise InputError("a join needs 'author', the name that joined")
        join_channel = _reference_optional_str(record, "channel")
        return Message(
            id=_reference_optional_str(record, "id") or generate_message_id(),
            text=JOIN_TEXT_PREFIX + author, source=source, author=author,
            channel=join_channel if join_channel is not None else default_channel,
            event=JOIN_EVENT,
        )
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
    channel = _reference_optional_str(record, "channel")
    return Message(
        id=_reference_optional_str(record, "id") or generate_message_id(),
        text=text, source=source, author=_reference_optional_str(record, "author"),
        channel=channel if channel is not None else default_channel,
        metadata=metadata, images=tuple(images),
    )


def reference_stdin_line(data: bytes, default_channel: str | None) -> tuple[Message | None, bool]:
    """What the stdin source made of one framed jsonl line (None: blank), and whether invalid
    UTF-8 was replaced; raises InputError as it did."""
    text, replaced = decode_line(data)
    if not text.strip():
        return None, False
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from None
    return reference_parse_input_record(record, "stdin", default_channel), replaced


# --- helpers ---------------------------------------------------------------------------------

def outcome(function: Any, *args: Any) -> tuple[str, object]:
    """The function's result with generated ids made comparable, or its InputError's text."""
    try:
        result = function(*args)
    except InputError as exc:
        return "error", str(exc)
    if isinstance(result, tuple):
        message, replaced = result
        return "ok", (normalised(message), replaced)
    return "ok", normalised(result)


def normalised(message: Message | None) -> Message | None:
    if message is not None and GENERATED_ID.match(message.id):
        return replace(message, id="<generated>")
    return message


json_integers = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what orjson writes
json_scalars = st.one_of(
    st.none(), st.booleans(), json_integers,
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)
records = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "join", "other"]) | json_values,
        "text": st.text(max_size=30) | json_values,
        "id": st.text(max_size=10) | json_integers | json_values,
        "author": st.text(max_size=10) | json_integers | json_values,
        "channel": st.text(max_size=10) | json_integers | json_values,
        "metadata": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values,
        "images": st.lists(st.text(max_size=12), max_size=3) | json_values,
    },
)
default_channels = st.none() | st.sampled_from(["#main", ""])


@given(record=records | json_values, default_channel=default_channels)
@example(record={"text": "hi", "id": "", "channel": None}, default_channel="#main")
@example(record={"text": "hi", "id": 0, "author": 7, "channel": 3}, default_channel=None)
@example(record={"text": "hi", "images": "", "metadata": 0}, default_channel=None)
@example(record={"text": "hi", "images": {}, "author": True}, default_channel=None)
@example(record={"type": "join", "author": "", "channel": 1}, default_channel=None)
def test_parse_input_record_is_the_reference(record: object, default_channel: str | None) -> None:
    assert outcome(parse_input_record, record, "stdin", default_channel) == outcome(
        reference_parse_input_record, record, "stdin", default_channel)


def encoded_lines(record: object, junk: bytes, cr: bool) -> bytes:
    return orjson.dumps(record) + junk + (b"\r" if cr else b"")


# Lines as the framer hands them: JSON records (some with junk or invalid UTF-8 after them or
# in place of them), blank and whitespace-only lines, arbitrary bytes.
framed_lines = st.one_of(
    st.builds(encoded_lines, records,
              st.sampled_from([b"", b" ", b"\t", b"\xff", b"\xc3", b"x", b"\x00", b"\r"]),
              st.booleans()),
    st.sampled_from([b"", b"\r", b" \t ", b"\xef\xbb\xbf{\"text\": \"bom\"}",
                     b"{\"text\": \"\xff\"}", b"{\"text\": \"\xed\xa0\x80\"}",
                     b"\x1c{\"text\": \"a\"}", b"{\"text\": \"a\"}\x85"]),
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda text: text.encode("utf-8", "surrogatepass")),
)


@given(data=framed_lines, default_channel=default_channels)
@example(data=b'{"text": "caf\xc3\xa9"}', default_channel=None)
@example(data=b'{"text": "\xff"}', default_channel=None)
@example(data=b'{"text": "\xed\xa0\x80"}', default_channel=None)  # an encoded surrogate
@example(data=b'{"text": "a"}\r', default_channel=None)
@example(data=b'{"text": "a"}\r\r', default_channel=None)
@example(data=b"\xef\xbb\xbf{\"text\": \"a\"}", default_channel=None)  # a byte order mark
@example(data=b"\xc2\xa0", default_channel=None)  # U+00A0: blank to str.strip, not to JSON
def test_parse_input_data_is_the_stdin_reference(data: bytes, default_channel: str | None) -> None:
    assert outcome(parse_input_data, data, "stdin", default_channel) == outcome(
        reference_stdin_line, data, default_channel)


@given(record=records)
def test_parse_input_line_takes_bytes_as_its_text(record: object) -> None:
    line = orjson.dumps(record)
    assert outcome(parse_input_line, line, "stdin") == outcome(
        parse_input_line, line.decode(), "stdin")
