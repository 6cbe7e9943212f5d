from __future__ import annotations

import pytest

from chatmod.errors import InputError
from chatmod.protocols.lines import (
    OversizedLine,
    decode_line,
    parse_input_line,
)

from .per_line import Line, PerLineFramer


def feed_all(framer: PerLineFramer, *chunks: bytes) -> list[Line | OversizedLine]:
    out: list[Line | OversizedLine] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    out.extend(framer.end())
    return out


def test_lines_split_across_chunks() -> None:
    items = feed_all(PerLineFramer(100), b"hel", b"lo\nwor", b"ld\n", b"last")
    assert items == [Line(1, b"hello"), Line(2, b"world"), Line(3, b"last")]


def test_oversized_line_is_reported_with_its_size_and_never_buffered_whole() -> None:
    framer = PerLineFramer(10)
    items = list(framer.feed(b"ok\n" + b"x" * 8))
    assert items == [Line(1, b"ok")]
    for _ in range(1000):
        assert list(framer.feed(b"y" * 1024)) == []
        assert len(framer._buffer) <= 10  # the point: memory stays bounded
    items = list(framer.feed(b"zz\nnext\n"))
    assert items == [OversizedLine(2, 8 + 1024 * 1000 + 2), Line(3, b"next")]


def test_line_exactly_at_the_limit_is_kept_and_one_over_is_not() -> None:
    items = feed_all(PerLineFramer(4), b"abcd\nabcde\n")
    assert items == [Line(1, b"abcd"), OversizedLine(2, 5)]


def test_oversized_last_line_without_newline() -> None:
    assert feed_all(PerLineFramer(4), b"abcdefgh") == [OversizedLine(1, 8)]


def test_empty_input_has_no_lines() -> None:
    assert feed_all(PerLineFramer(4)) == []


def test_decode_line_replaces_invalid_utf8_and_strips_cr() -> None:
    assert decode_line(b"caf\xc3\xa9\r") == ("café", False)
    text, replaced = decode_line(b"bad \xff\xfe bytes")
    assert replaced
    assert text == "bad \ufffd\ufffd bytes"


def test_input_line_full() -> None:
    message = parse_input_line(
        '{"id": "m-1", "text": "hi", "author": "alice", "channel": "#lobby", '
        '"metadata": {"room": 5}, "images": ["https://example.com/a.png"], "extra": 1}',
        "stdin",
    )
    assert (message.id, message.text, message.author, message.channel) == (
        "m-1", "hi", "alice", "#lobby")
    assert message.metadata == {"room": 5}
    assert message.images == ("https://example.com/a.png",)
    assert message.source == "stdin"


def test_input_line_minimal_gets_an_id_and_default_channel() -> None:
    message = parse_input_line('{"text": "hi", "id": 42}', "stdin", default_channel="#d")
    assert message.id == "42"
    assert message.channel == "#d"
    assert parse_input_line('{"text": "hi"}', "stdin").id


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "x"}', "'text' must be a string, found nothing"),
        ('{"text": 5}', "'text' must be a string, found int"),
        ('{"text": "a", "metadata": [1]}', "'metadata' must be an object"),
        ('{"text": "a", "images": "http://x"}', "'images' must be an array"),
        ('{"text": "a", "author": {"n": 1}}', "'author' must be a string"),
    ],
)
def test_invalid_input_lines_say_why(line: str, error: str) -> None:
    with pytest.raises(InputError, match=error):
        parse_input_line(line, "stdin")
