"""Property tests of chat input framing and parsing (chatmod.protocols.lines): what stdin reads."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.core.model import Decision, Message, Verdict
from chatmod.errors import InputError
from chatmod.protocols.lines import (
    OversizedLine,
    decode_line,
    parse_input_line,
    parse_input_record,
)

from .per_line import Line, PerLineFramer

# Bytes rich in what framing must get right: newlines, CRs, NULs, invalid UTF-8.
stream_pieces = st.one_of(
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\x00", b"\xff", b"\xc3", b"\xa9", b"\n\n"]),
    st.binary(max_size=48),
)
streams = st.lists(stream_pieces, max_size=40).map(b"".join)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
# Records shaped like input lines: every field sometimes well typed, sometimes anything.
input_records = st.fixed_dictionaries(
    {},
    optional={
        "text": st.text() | json_values,
        "id": st.text(max_size=12) | st.integers() | json_values,
        "author": st.text(max_size=12) | json_values,
        "channel": st.text(max_size=12) | json_values,
        "metadata": st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values,
        "images": st.lists(st.text(max_size=20), max_size=3) | json_values,
        "extra": json_values,
    },
)


def reference_lines(stream: bytes, max_line_bytes: int) -> list[Line | OversizedLine]:
    """What framing must give: the stream split at newlines, a final empty piece dropped."""
    pieces = stream.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    return [
        Line(number, piece) if len(piece) <= max_line_bytes else OversizedLine(number, len(piece))
        for number, piece in enumerate(pieces, start=1)
    ]


@given(stream=streams, max_line_bytes=st.integers(min_value=0, max_value=64), data=st.data())
@example(stream=b"abcd\nabcde\n", max_line_bytes=4, data=None)
def test_framing_any_chunking_gives_the_reference_split(
    stream: bytes, max_line_bytes: int, data: st.DataObject | None
) -> None:
    if data is None:  # the @example: one byte at a time
        cuts = list(range(len(stream) + 1))
    else:
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    framer = PerLineFramer(max_line_bytes)
    produced: list[Line | OversizedLine] = []
    for start, end in itertools.pairwise(bounds):
        produced.extend(framer.feed(stream[start:end]))
        assert len(framer._buffer) <= max_line_bytes  # memory stays bounded between chunks
    produced.extend(framer.end())
    assert produced == reference_lines(stream, max_line_bytes)


@given(data=st.binary())
@example(data=b"caf\xc3\xa9\r")
@example(data=b"\xed\xa0\x80")  # an encoded surrogate: not UTF-8
@example(data=b"\r\r")
def test_decode_line_gives_encodable_text_and_says_when_it_replaced(data: bytes) -> None:
    text, replaced = decode_line(data)
    body = data[:-1] if data.endswith(b"\r") else data
    text.encode("utf-8")  # no lone surrogates: a decision line can always be written
    try:
        assert text == body.decode("utf-8")
        assert not replaced
    except UnicodeDecodeError:
        assert replaced
        assert "\ufffd" in text


def accepts(record: object) -> bool:
    """The input line's contract, written out independently of the parser."""
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return False

    def optional_str(key: str) -> bool:
        value = record.get(key)
        return value is None or isinstance(value, str) or (
            isinstance(value, int) and not isinstance(value, bool))

    # Absent and empty are the same for metadata and images (null, false, "", 0 too).
    metadata = record.get("metadata") or {}
    images = record.get("images") or []
    return (isinstance(metadata, dict) and isinstance(images, list)
            and all(isinstance(i, str) for i in images)
            and all(optional_str(key) for key in ("id", "author", "channel")))


def check_message(message: Message, record: dict[str, Any], default_channel: str | None) -> None:
    """A parsed record's fields round-trip, and the message can be decided and written."""
    def as_text(value: object) -> str | None:
        return None if value is None else str(value)

    assert message.text == record["text"]
    assert message.source == "stdin"
    given_id = as_text(record.get("id"))
    if given_id:
        assert message.id == given_id
    else:
        assert message.id  # none given (or empty): one is made up
    assert message.author == as_text(record.get("author"))
    channel = as_text(record.get("channel"))
    assert message.channel == (channel if channel is not None else default_channel)
    assert message.metadata == (record.get("metadata") or {})
    assert message.images == tuple(record.get("images") or [])
    decision = Decision(message, Verdict("pass", 0.0, "fuzz", "local"), "none", 1.0)
    line = orjson.loads(decision.to_line())
    assert (line["id"], line["text"], line["author"], line["channel"]) == (
        message.id, message.text, message.author, message.channel)


@given(record=input_records | json_values, default_channel=st.none() | st.text(max_size=8))
@example(record={"text": "hi", "id": 42}, default_channel="#d")
@example(record={"text": "a", "id": "", "metadata": False, "images": 0}, default_channel=None)
@example(record={"text": "a", "author": True}, default_channel=None)
def test_input_record_is_a_message_or_input_error(
    record: object, default_channel: str | None
) -> None:
    try:
        message = parse_input_record(record, "stdin", default_channel)
    except InputError:
        assert not accepts(record)
        return
    assert accepts(record)
    assert isinstance(record, dict)
    check_message(message, record, default_channel)


def representable(record: object) -> bool:
    """Whether orjson can write it: no lone surrogates, integers within 64 bits."""
    try:
        orjson.dumps(record)
    except orjson.JSONEncodeError:
        return False
    return True


@given(record=input_records | json_values, ascii_only=st.booleans())
@example(record={"text": "\ud800"}, ascii_only=True)  # "\ud800" in JSON is not valid text
@example(record={"text": "\ud800"}, ascii_only=False)
@example(record={"text": "a", "id": 2**64}, ascii_only=True)  # orjson reads it as a float
def test_input_line_from_json_text(record: object, ascii_only: bool) -> None:
    line = json.dumps(record, ensure_ascii=ascii_only)
    try:
        message = parse_input_line(line, "stdin")
    except InputError:
        assert not (accepts(record) and representable(record))
        return
    assert isinstance(record, dict)
    assert accepts(record)
    check_message(message, record, None)


@given(text=st.text())
@example(text="")
@example(text='{"text": "a"}garbage')
@example(text="\ud800")
@example(text='{"text": "a", "text": 5}')
def test_input_line_from_any_text_is_a_message_or_input_error(text: str) -> None:
    try:
        message = parse_input_line(text, "stdin")
    except InputError as exc:
        reason = str(exc)
    else:
        message.text.encode("utf-8")  # the decision line can be written
        return
    assert reason  # the skipped line is reported with a reason
