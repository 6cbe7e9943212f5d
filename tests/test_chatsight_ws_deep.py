"""The msgspec fast path for Chatsight replies (round 4: the websocket's, then HTTP's) against
what a peer can send: replies nested deep in a part chatmod does not read, and bytes that are
not UTF-8.

orjson refuses a document nested deeper than 1024 (a ``JSONDecodeError``: an invalid reply)
and reads one less deep. msgspec skips an unread part by recursion, so how deep it goes
depends on Python's recursion limit and on how deep the caller's stack already is: it raised
``RecursionError``, which left the socket's reader and ended the engine's run, for a reply
orjson reads (nested 1000 deep) as for one it refuses. Such a reply must read as orjson
reads it, whatever the stack.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import trio
from wsproto.events import TextMessage

from chatmod.chatsight.protocol import parse_http_reply, parse_result, parse_ws_reply
from chatmod.errors import ProtocolError
from chatmod.protocols.replies import json_object
from chatmod.sandbox import server as sandbox_server
from chatmod.sandbox.answers import moderation_reply

from .test_chatsight import (
    assert_correct_verdicts,
    assert_exactly_once,
    engine_for,
    run_pipeline,
    start_sandbox,
    texts,
)
from .test_chatsight_ws_fastpath import old_parse_ws_reply, outcome

USUAL = '"suggestedAction": ["pass", 0.5], "metadata": {"self_reference": "r"}'


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def reply_with_unread(depth: int) -> str:
    """The usual reply with a ``patches`` part nested ``depth`` deep."""
    return f'{{"success": true, "response": {{{USUAL}, "patches": {nested(depth)}}}}}'


# 1000 and 1020: orjson reads them; 1100, 5000: orjson refuses them (not JSON to chatmod).
DEPTHS = [10, 900, 1000, 1020, 1100, 5000]


def in_a_deep_stack(frames: int, call: Any) -> Any:
    """``call()`` with ``frames`` more Python frames under it (a reader deep in trio's)."""
    if frames == 0:
        return call()
    return in_a_deep_stack(frames - 1, call)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("stack", [0, 600])
def test_a_reply_nested_deep_where_not_read_reads_as_orjson_reads_it(
        depth: int, stack: int) -> None:
    data = reply_with_unread(depth)
    expected = outcome(old_parse_ws_reply, data)
    assert expected[0] == ("reply" if depth <= 1020 else "error")
    assert in_a_deep_stack(stack, lambda: outcome(parse_ws_reply, data)) == expected
    assert in_a_deep_stack(stack, lambda: outcome(parse_ws_reply, data.encode())) == expected


@pytest.mark.parametrize("place", ["top", "metadata", "group"])
def test_deep_nesting_anywhere_in_the_usual_reply_reads_as_orjson_reads_it(place: str) -> None:
    deep = nested(3000)
    data = {
        "top": f'{{"extra": {deep}, "response": {{{USUAL}}}}}',
        "metadata": ('{"response": {"suggestedAction": ["pass", 0.5], "metadata": '
                     f'{{"self_reference": "r", "extra": {deep}}}}}}}'),
        "group": f'{{"response": {{{USUAL}, "engine1": {{"a": {deep}}}}}}}',
    }[place]
    assert outcome(parse_ws_reply, data) == outcome(old_parse_ws_reply, data) == (
        "error", "reply is not JSON")


@pytest.mark.parametrize("data", [
    # Not UTF-8 where chatmod does not read (msgspec skipped it unchecked) ...
    b'{"response": {' + USUAL.encode() + b', "patches": "\xff"}}',
    b'{"response": {' + USUAL.encode() + b', "patches": "\xc0\xaf"}}',  # overlong
    b'{"response": {' + USUAL.encode() + b', "patches": "\xed\xa0\x80"}}',  # a surrogate
    # ... and where it does (msgspec raised UnicodeDecodeError, no ProtocolError).
    b'{"response": {"suggestedAction": ["pass", 0.5], "metadata": '
    b'{"self_reference": "\xed\xa0\x80"}}}',
    b'{"response": {' + USUAL.encode() + b', "engine1": {"\xff": 0.5}}}',
])
def test_bytes_that_are_not_utf8_are_no_reply_as_before(data: bytes) -> None:
    assert outcome(old_parse_ws_reply, data) == ("error", "reply is not JSON")
    assert outcome(parse_ws_reply, data) == ("error", "reply is not JSON")


@pytest.mark.parametrize("depth", [1000, 5000])
async def test_a_deep_frame_from_the_peer_costs_no_decision_and_no_restart(
        depth: int, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before every reply the sandbox sends a frame nested ``depth`` deep: a stray reply whose
    # unread part orjson reads (1000: its reference is not ours) or a reply orjson refuses.
    frame = moderation_reply("pass", 0.1, "no-such-reference").decode()
    frame = frame[:-1] + f', "patches": {nested(depth)}}}'
    monkeypatch.setattr(sandbox_server, "GARBAGE_FRAMES",
                        (TextMessage(data=frame),))
    sandbox = await start_sandbox(nursery, garbage_rate=1.0)
    engine = engine_for(sandbox)
    messages = texts(20)
    with trio.fail_after(60):
        sink, _source = await run_pipeline(engine, messages)
    assert_exactly_once(sink, messages)
    assert_correct_verdicts(sink)
    assert {d.verdict.route for d in sink.decisions} == {"ws"}
    stats = Counter(engine.statistics())
    assert sandbox.stats["ws_garbage"] == 20
    if depth <= 1020:
        assert stats["ws.replies_unknown"] == 20
    else:
        assert stats["ws.invalid_replies"] == 20
    assert stats["ws.reconnects"] == 0


def orjson_http_outcome(data: bytes | str) -> tuple[Any, ...]:
    """How an HTTP reply read before msgspec came (orjson, whole), as :func:`http_outcome`."""
    try:
        envelope = json_object(data, ProtocolError)
        if envelope.get("success") is False:
            raise ProtocolError("success: false")
        result = parse_result(envelope.get("response"))
    except ProtocolError as exc:
        return ("error", str(exc))
    return ("result", result.action, result.score, result.scores)


def http_outcome(data: bytes | str) -> tuple[Any, ...]:
    try:
        result = parse_http_reply(data)
    except ProtocolError as exc:
        return ("error", str(exc))
    return ("result", result.action, result.score, result.scores)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("stack", [0, 600])
def test_an_http_reply_nested_deep_where_not_read_reads_as_orjson_reads_it(
        depth: int, stack: int) -> None:
    data = reply_with_unread(depth).encode()  # HTTP bodies come as bytes
    expected = orjson_http_outcome(data)
    assert expected[0] == ("result" if depth <= 1020 else "error")
    assert in_a_deep_stack(stack, lambda: http_outcome(data)) == expected


@pytest.mark.parametrize("data", [
    b'{"response": {' + USUAL.encode() + b', "patches": "\xff"}}',
    b'{"response": {' + USUAL.encode() + b', "engine1": {"\xed\xa0\x80": 0.5}}}',
])
def test_an_http_reply_not_utf8_is_no_reply_as_before(data: bytes) -> None:
    assert http_outcome(data) == orjson_http_outcome(data) == ("error", "reply is not JSON")
