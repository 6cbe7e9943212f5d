"""Redis stream entries to messages (no I/O): what a hostile producer can put in a stream
yields a message or an InputError, nothing else."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from chatmod.errors import InputError
from chatmod.plugins.redis_entries import (
    DEFAULT_MAX_ENTRY_BYTES,
    MAX_ENTRY_FIELDS,
    entry_size,
    entry_to_message,
    over_limits,
)
from chatmod.plugins.stdin import DEFAULT_MAX_LINE_BYTES

ENTRY_ID = b"1700000000000-7"
REDIS_ENTRY_ID = re.compile(rb"[0-9]+-[0-9]+")


def parse(fields: dict[bytes, bytes], **options: int) -> object:
    return entry_to_message(ENTRY_ID, fields, source="redis", default_channel="#lobby",
                            **options)


def test_an_entry_becomes_the_message_of_the_input_line() -> None:
    message = entry_to_message(ENTRY_ID, {
        b"id": b"m-1", b"text": "héllo".encode(), b"author": b"al", b"channel": b"#x",
        b"metadata": b'{"n": 1}', b"images": b'["https://e.test/a.png"]', b"extra": b"\xff",
    }, source="redis")
    assert (message.id, message.text, message.author, message.channel) == (
        "m-1", "héllo", "al", "#x")
    assert message.metadata == {"n": 1}
    assert message.images == ("https://e.test/a.png",)
    assert message.source == "redis"


def test_default_channel_for_an_entry_that_names_none() -> None:
    assert entry_to_message(ENTRY_ID, {b"text": b"hi"}, source="redis",
                            default_channel="#lobby").channel == "#lobby"


@pytest.mark.parametrize("raw_id", [None, b"", b"   ", b"\t\n", b"\xff", b"\xc3\x28", b"a\xffb"],
                         ids=["missing", "empty", "blank", "whitespace", "not-utf8",
                              "bad-sequence", "partly-binary"])
def test_an_unusable_id_is_replaced_by_the_entry_id(raw_id: bytes | None) -> None:
    fields = {b"text": b"hi"}
    if raw_id is not None:
        fields[b"id"] = raw_id
    assert entry_to_message(ENTRY_ID, fields, source="redis").id == ENTRY_ID.decode()


@pytest.mark.parametrize(("fields", "reason"), [
    ({b"author": b"al"}, "'text' must be a string, found nothing"),
    ({b"text": b"caf\xe9"}, "'text' is not UTF-8 (byte 3)"),
    ({b"text": b"hi", b"author": b"\xff"}, "'author' is not UTF-8 (byte 0)"),
    ({b"text": b"hi", b"channel": b"#\xc3"}, "'channel' is not UTF-8 (byte 1)"),
    ({b"text": b"hi", b"metadata": b"{nope"}, "'metadata' is not JSON"),
    ({b"text": b"hi", b"metadata": b"\x00\x01"}, "'metadata' is not JSON"),
    ({b"text": b"hi", b"metadata": b"[" * 5000}, "'metadata' is not JSON"),
    ({b"text": b"hi", b"metadata": b"[1]"}, "'metadata' must be an object, found list"),
    ({b"text": b"hi", b"images": b'{"a": 1}'}, "'images' must be an array of URL strings"),
    ({b"text": b"hi", b"images": b'[1]'}, "'images' must be an array of URL strings"),
    ({b"text": b"hi", b"images": b'"x"'}, "'images' must be an array of URL strings"),
])
def test_what_cannot_be_a_message_says_why(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(InputError) as raised:
        parse(fields)
    assert str(raised.value) == reason


def test_the_size_cap_is_stdin_s_and_counts_names_and_values() -> None:
    assert DEFAULT_MAX_ENTRY_BYTES == DEFAULT_MAX_LINE_BYTES
    text = b"x" * (DEFAULT_MAX_ENTRY_BYTES - len(b"text"))
    assert parse({b"text": text}).text == text.decode()  # type: ignore[attr-defined]
    with pytest.raises(InputError, match=r"^65537 bytes is over max_entry_bytes \(65536\)$"):
        parse({b"text": text + b"x"})
    with pytest.raises(InputError, match=r"^26 bytes is over max_entry_bytes \(20\)$"):
        parse({b"text": b"hi", b"metadata": b"{}" * 4, b"id": b"12"}, max_entry_bytes=20)


def test_the_field_count_is_capped_even_when_the_fields_are_empty() -> None:
    fields = {b"text": b"hi"} | {str(i).encode(): b"" for i in range(MAX_ENTRY_FIELDS - 1)}
    assert parse(fields).text == "hi"  # type: ignore[attr-defined]
    fields[b"one-more"] = b""
    assert entry_size(fields) < 1000
    assert over_limits(fields, DEFAULT_MAX_ENTRY_BYTES) == (
        f"{MAX_ENTRY_FIELDS + 1} fields is over the limit of {MAX_ENTRY_FIELDS}")
    with pytest.raises(InputError, match="fields is over the limit"):
        parse(fields)


KNOWN_NAMES = st.sampled_from([b"id", b"text", b"author", b"channel", b"metadata", b"images"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
).map(orjson.dumps)
values = (st.binary(max_size=64) | st.text(max_size=32).map(str.encode) | json_values
          | st.sampled_from([b"", b"[" * 2000, b"1" * 400, b"NaN", b"\xef\xbb\xbf{}",
                             b'"\\ud800"', b'["\\u0000"]']))


utf8 = st.text(max_size=32).map(str.encode)
json_objects = st.dictionaries(st.text(max_size=8), st.integers(0, 9) | st.text(max_size=8),
                               max_size=4).map(orjson.dumps)
json_urls = st.lists(st.text(max_size=16).map(lambda path: f"https://e.test/{path}"),
                     max_size=3).map(orjson.dumps)
# Entries shaped like the input line (each field mostly well formed, sometimes anything)...
line_like = st.tuples(
    st.fixed_dictionaries({b"text": utf8 | values}, optional={
        b"id": utf8 | values, b"author": utf8 | values, b"channel": utf8 | values,
        b"metadata": json_objects | values, b"images": json_urls | values}),
    st.dictionaries(st.binary(max_size=8), values, max_size=3),
).map(lambda parts: parts[1] | parts[0])
# ... and any fields at all, up to past the field cap.
anything = st.dictionaries(KNOWN_NAMES | st.binary(max_size=8), values,
                           max_size=MAX_ENTRY_FIELDS + 4)


@given(
    entry_id=st.integers(0, 2**64 - 1).map(lambda n: f"{n}-0".encode()) | st.binary(max_size=24),
    fields=line_like | anything,
    max_entry_bytes=st.just(DEFAULT_MAX_ENTRY_BYTES) | st.integers(16, 1 << 20),
    channel=st.none() | st.text(max_size=8),
)
@example(entry_id=b"\xff", fields={b"text": b"hi"}, max_entry_bytes=16, channel=None)
@example(entry_id=ENTRY_ID, fields={b"text": b"", b"metadata": b"null", b"images": b"null"},
         max_entry_bytes=16, channel=None)
def test_any_entry_is_a_message_or_an_input_error(
    entry_id: bytes, fields: dict[bytes, bytes], max_entry_bytes: int, channel: str | None,
) -> None:
    try:
        message = entry_to_message(entry_id, fields, source="redis", default_channel=channel,
                                   max_entry_bytes=max_entry_bytes)
    except InputError as exc:
        event(f"InputError: {re.sub('[0-9]+', 'N', str(exc))[:40]}")
        return
    event("a message")
    assert over_limits(fields, max_entry_bytes) is None
    assert message.text == fields[b"text"].decode()
    assert message.source == "redis"
    # Always traceable: its own id when that is usable text, else its entry's.
    try:
        own_id = fields.get(b"id", b"").decode("utf-8")
    except UnicodeDecodeError:
        own_id = ""
    if own_id.strip():
        assert message.id == own_id
    elif REDIS_ENTRY_ID.fullmatch(entry_id):
        assert message.id == entry_id.decode()
