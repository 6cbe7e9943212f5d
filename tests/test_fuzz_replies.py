"""Property tests of the parsers that read what Chatsight and Discuse send: websocket and HTTP
moderation replies, Discuse check replies, voice transcripts and keyword-alert webhooks.

One property each: whatever arrives, the parser returns its result or raises its module's
typed error (a :class:`chatmod.errors.ProtocolError`), never anything else. The inputs are
raw bytes, arbitrary JSON, and the documents' own samples with parts replaced or cut.

Examples per property: 300, or 10,000 with ``HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from chatmod.chatsight.protocol import (
    ChatsightResult,
    Reply,
    parse_http_reply,
    parse_result,
    parse_ws_reply,
)
from chatmod.chatsight.stats import parse_lifetime, parse_search, parse_search_request
from chatmod.chatsight.voice import (
    Transcript,
    parse_transcript,
    repair_speakers,
    supply_commas,
)
from chatmod.chatsight.webhook import (
    KeywordAlert,
    ReplayGuard,
    sign,
    verify,
)
from chatmod.config.schema import Secret
from chatmod.errors import ProtocolError, WebhookRejected
from chatmod.http.api import WEBHOOK_PATH, HttpSection, StatusApi
from chatmod.http.server import HttpRequest
from chatmod.protocols.discuse import parse_check_reply, verdict_for

DATA = Path(__file__).parent / "data"
CHATSIGHT_DOC = orjson.loads((DATA / "chatsight_http_reply.json").read_bytes())
DISCUSE_DOC = orjson.loads((DATA / "discuse_reply.json").read_bytes())
VOICE_DOC = (DATA / "voice_reply_document.txt").read_bytes()
SECRET = b"fuzzing-shared-secret"
NOW = 1_800_000_000.0

EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300
fuzz = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Numbers as providers send them, numeric strings included ("NaN" and "1e999" are numbers
# to float(), not to a moderator).
NUMBER_TEXTS = st.sampled_from(["0.95", " 1 ", "NaN", "nan", "Infinity", "-inf", "1e999",
                                "", "0x10", "1_000", "٣"])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=12) | NUMBER_TEXTS)
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=8), children, max_size=4),
                    max_leaves=20)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value, the value itself included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += paths(item, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> Any:
    """``document`` with a few of its parts replaced by arbitrary JSON, or removed."""
    value = copy.deepcopy(document)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(paths(value)))
        if not path:
            return draw(JSON)
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            parent[path[-1]] = draw(JSON)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return value


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` cut, with bytes flipped, or with a piece of other bytes put in."""
    start = draw(st.integers(min_value=0, max_value=len(data)))
    end = draw(st.integers(min_value=start, max_value=len(data)))
    return data[:start] + draw(st.binary(max_size=8)) + data[end:]


def as_bytes(value: Any) -> bytes:
    return orjson.dumps(value)


CHATSIGHT_REPLIES = (st.binary(max_size=200) | st.text(max_size=200)
                     | JSON.map(as_bytes) | mutated(CHATSIGHT_DOC).map(as_bytes)
                     | mutated({"api": "chatsight-lang-text", "success": True,
                                "response": {**CHATSIGHT_DOC["response"], "metadata": {
                                    "self_reference": "r-1"}}}).map(as_bytes))


def check_result(result: ChatsightResult) -> None:
    assert isinstance(result.action, str)
    assert result.score is None or isinstance(result.score, float)
    for group in result.scores.values():
        assert all(isinstance(n, float) for n in group.values())


@fuzz
@given(CHATSIGHT_REPLIES)
@example(b'{"success": true, "response": {"suggestedAction": [{"a": 1}]}}')
@example(b'{"response": {"metadata": {"self_reference": true}, "suggestedAction": "x"}}')
@example('{"response": "\ud800"}')
def test_chatsight_replies_parse_or_raise_reply_error(data: bytes | str) -> None:
    try:
        reply = parse_ws_reply(data)
    except ProtocolError:
        event("ws: ProtocolError")
    else:
        event("ws: result" if reply.result is not None else "ws: error reply")
        assert isinstance(reply, Reply)
        assert reply.reference is None or isinstance(reply.reference, str)
        if reply.result is not None:
            check_result(reply.result)
        else:
            assert isinstance(reply.error, str)
    with contextlib.suppress(ProtocolError):
        check_result(parse_http_reply(data))


@fuzz
@given(JSON | mutated(CHATSIGHT_DOC["response"]))
def test_a_chatsight_result_object_parses_or_raises_reply_error(response: Any) -> None:
    with contextlib.suppress(ProtocolError):
        check_result(parse_result(response))


SCORE = st.floats(min_value=0, max_value=1) | NUMBER_TEXTS


def discuse_section(scores: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({key: SCORE for key in scores}, optional={
        "hit": st.booleans(), "status": st.sampled_from(["ok", "error", ""]),
        "result": st.just({})})


# Replies in the document's shape with any scores, hits and statuses.
DISCUSE_SHAPED = st.fixed_dictionaries({}, optional={
    "sentiment": discuse_section(("toxic", "profanity", "threat", "insult")),
    "images": discuse_section(("porn", "sexual", "neutral")),
    "gifs": discuse_section(("porn", "sexual", "neutral")),
    "language": discuse_section(()), "links": discuse_section(()), "hits": st.booleans(),
}).map(as_bytes)


@fuzz
@given(st.binary(max_size=200) | JSON.map(as_bytes) | mutated(DISCUSE_DOC).map(as_bytes)
       | DISCUSE_SHAPED)
@example(b'{"hits": false}')
@example(b'{"sentiment": {"toxic": "NaN", "insult": 0.95}}')
def test_discuse_replies_parse_or_raise_check_reply_error(data: bytes) -> None:
    try:
        result = parse_check_reply(data)
    except ProtocolError:
        event("discuse: ProtocolError")
        return
    assert all(isinstance(n, float) and math.isfinite(n) for n in result.scores.values())
    action, score = verdict_for(result, 0.5, 0.9)
    event(f"verdict {action}")
    # The verdict follows the scores: none is hidden by another (e.g. a NaN).
    if any(n >= 0.9 for n in result.scores.values()):
        assert action == "delete"
    elif result.hits or result.unchecked or any(n >= 0.5 for n in result.scores.values()):
        assert action == "flag"
    else:
        assert action == "pass"
    assert score == max(result.scores.values(), default=0.0)


VOICE_DOC_JSON = orjson.loads(supply_commas(repair_speakers(VOICE_DOC)))


@fuzz
@given(st.binary(max_size=300) | damaged(VOICE_DOC) | JSON.map(as_bytes)
       | mutated(VOICE_DOC_JSON).map(as_bytes))
@example(b'{"speakers": [')
@example(b'[true, {"transcript": {"master": [[1, "a"]], "speakers": [[[1, "a"]]]}}]')
def test_voice_replies_parse_or_raise_voice_reply_error(data: bytes) -> None:
    # The repairs for the document's own mistakes take any bytes.
    assert isinstance(repair_speakers(data), bytes)
    assert isinstance(supply_commas(data), bytes)
    try:
        transcript = parse_transcript(data)
    except ProtocolError:
        event("voice: ProtocolError")
        return
    event(f"ready, {len(transcript.sentences)} sentence(s)" if transcript.ready else "not ready")
    assert isinstance(transcript, Transcript)
    for sentence in transcript.sentences:
        assert isinstance(sentence.text, str)
        if sentence.result is not None:
            check_result(sentence.result)


# Fresh for a check at NOW, or for the webhook route's own clock.
FRESH_TIMES = st.just(int(NOW * 1000)) | st.builds(lambda: int(time.time() * 1000))
TIMES = (st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats() | st.text(max_size=5)
         | st.booleans() | st.none())


@st.composite
def webhook_bodies(draw: st.DrawFn) -> bytes:
    """Bodies near a genuine alert: its fields replaced, dropped or kept, and signed with the
    secret or not."""
    time_ms = draw(FRESH_TIMES if draw(st.booleans()) else TIMES)
    signed = (isinstance(time_ms, int) and not isinstance(time_ms, bool)
              and draw(st.integers(0, 3)) > 0)
    envelope: dict[str, Any] = {
        "sender": draw(st.just("chatsight-webhooks") | JSON),
        "addon": draw(st.just("keywordAlert") | JSON),
        "payload": draw(mutated({"keywordDetected": "pizza", "metadata": {"room": "#5"},
                                 "fullText": False}) | JSON),
        "time": time_ms,
        "hmac": sign(SECRET, time_ms) if signed else draw(JSON | st.binary(max_size=32).map(
            lambda raw: base64.b64encode(raw).decode())),
    }
    for key in draw(st.lists(st.sampled_from(sorted(envelope)), max_size=2)):
        envelope.pop(key, None)
    return orjson.dumps(envelope)


@fuzz
@given(st.binary(max_size=200) | JSON.map(as_bytes) | webhook_bodies(),
       st.just(NOW) | st.floats(min_value=0, max_value=4e9))
@example(orjson.dumps({"time": int(NOW * 1000), "hmac": sign(SECRET, int(NOW * 1000)),
                       "payload": [[[[]]]]}), NOW)
def test_webhooks_verify_or_are_refused_with_4xx(body: bytes, now: float) -> None:
    guard = ReplayGuard(window=60)
    try:
        alert = verify(body, SECRET, now, guard)
    except WebhookRejected as exc:
        status = exc.status
    else:
        status = 200
        event("accepted")
        assert isinstance(alert, KeywordAlert)
        assert isinstance(alert.keyword, str)
        with pytest.raises(WebhookRejected, match="replayed"):  # the same body twice
            verify(body, SECRET, now, guard)
    assert status in (200, 400, 401)
    event(f"status {status}")


def test_a_body_too_deep_to_re_encode_is_refused_not_a_crash() -> None:
    t = int(NOW * 1000)
    deep = b'{"time": %d, "hmac": "%s", "payload": %s1%s}' % (
        t, sign(SECRET, t).encode(), b"[" * 300, b"]" * 300)
    with pytest.raises(WebhookRejected, match="nested too deeply") as caught:
        verify(deep, SECRET, NOW, ReplayGuard(window=60))
    assert caught.value.status == 400


REQUEST_PARTS = st.tuples(
    st.just("POST") | st.sampled_from(["GET", "HEAD", "PUT", "post", ""]) | st.text(max_size=6),
    st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4),
    st.binary(max_size=200) | webhook_bodies(),
)


@fuzz
@given(REQUEST_PARTS)
def test_the_webhook_route_answers_any_request_with_a_status(
        parts: tuple[str, dict[str, str], bytes]) -> None:
    method, headers, body = parts
    taken: list[KeywordAlert] = []

    async def take(alert: KeywordAlert) -> None:
        taken.append(alert)

    api = StatusApi(lambda: True, bytes, alerts=take, section=HttpSection(
        enabled=True, chatsight_webhook_secret=Secret("fuzz", SECRET.decode())))
    request = HttpRequest(method, WEBHOOK_PATH, "", {k.lower(): v for k, v in headers.items()},
                          body)
    response = trio.run(api.handle, request)
    event(f"status {response.status}")
    assert response.status in (200, 400, 401, 405)
    assert len(taken) == (response.status == 200)


@pytest.mark.parametrize("parse", [
    parse_ws_reply, parse_http_reply, parse_check_reply, parse_transcript, parse_lifetime,
    parse_search, parse_search_request,
    lambda data: verify(data, SECRET, 0.0, ReplayGuard(60.0)),
])
def test_every_parser_refuses_with_the_one_protocol_error(parse: Callable[[bytes], object]
                                                          ) -> None:
    with pytest.raises(ProtocolError):
        parse(b"[not an object")
