"""The Chatsight engine against the sandbox over loopback: every message decided exactly once,
whatever the websocket does."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from chatmod.chatsight.websocket import ChatsightSocket, SocketSettings
from chatmod.config.schema import Secret
from chatmod.config.sections import PolicySection
from chatmod.core.backoff import Backoff
from chatmod.core.engine_chain import EngineChain
from chatmod.core.model import Message, Verdict
from chatmod.core.pipeline import Pipeline
from chatmod.errors import EngineError
from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine
from chatmod.policy.rules import Policy
from chatmod.sandbox.server import Faults, Sandbox

from .helpers import ListSource, RecordingSink, eventually
from .servers import free_port

API_KEY = "c.test.0123456789abcdef"
WRONG_KEY = "c.test.wrong-key-000000"


# Tests that talk to the sandbox over loopback run in real time, with short durations: a
# MockClock that jumps while a real socket is busy makes their outcome depend on the machine's
# speed. They assert what load cannot change: lower bounds on time, counters, routes.
AUTH_BACKOFF = 0.3


async def start_sandbox(nursery: trio.Nursery, **faults: Any) -> Sandbox:
    sandbox = Sandbox(api_key=API_KEY, verdicts="wordlist", seed=7, faults=Faults(**faults))
    await nursery.start(sandbox.serve)
    return sandbox


def engine_for(sandbox: Sandbox, key: str = API_KEY, **options: Any) -> ChatsightEngine:
    # Unless a test is about the deadline, a loaded machine's slow reply must not go over HTTP.
    options.setdefault("verdict_timeout", 30.0)
    config = ChatsightConfig(
        api_key=Secret("test", key), ws_url=sandbox.ws_url(), http_url=sandbox.http_url(),
        **options,
    )
    return ChatsightEngine("chatsight", config)


def texts(n: int) -> list[Message]:
    return [Message(id=f"m-{i}", text=f"you idiot {i}" if i % 4 == 0 else f"hello there {i}",
                    source="test") for i in range(n)]


async def run_pipeline(
    engine: ChatsightEngine, messages: list[Message], last_resort: str = "flag",
    *, engine_started: bool = False,
) -> tuple[RecordingSink, ListSource]:
    """Run ``messages`` through a pipeline; it starts ``engine`` unless ``engine_started``."""
    source, sink = ListSource("test", messages), RecordingSink()
    chain = EngineChain([engine], last_resort, timeout=30)
    to_start = [] if engine_started else [engine]
    pipeline = Pipeline([source], to_start, chain, Policy(PolicySection()), [sink],
                        concurrency=200, queue_size=64)
    with trio.fail_after(110):
        await pipeline.run()
    return sink, source


def assert_exactly_once(sink: RecordingSink, messages: list[Message]) -> None:
    counts = Counter(d.message.id for d in sink.decisions)
    assert set(counts) == {m.id for m in messages}
    assert set(counts.values()) == {1}


def assert_correct_verdicts(sink: RecordingSink) -> None:
    for decision in sink.decisions:
        if decision.verdict.route in ("ws", "http"):
            expected = "delete" if "idiot" in decision.message.text else "pass"
            assert decision.verdict.action == expected, decision


async def test_clean_run_out_of_order_replies(nursery: trio.Nursery) -> None:
    sandbox = await start_sandbox(nursery, latency=(0.0, 0.05))
    engine = engine_for(sandbox)
    messages = texts(400)
    sink, source = await run_pipeline(engine, messages)
    assert_exactly_once(sink, messages)
    assert_correct_verdicts(sink)
    assert {d.verdict.route for d in sink.decisions} == {"ws"}
    assert len(source.acknowledged) == 400
    assert sandbox.stats["ws_requests"] == 400
    # Replies really came back in another order than the requests went out.
    assert [d.message.id for d in sink.decisions] != [m.id for m in messages]


@pytest.mark.time_limit(120)  # 3000 messages: about 45 s on a loaded 2-core machine
async def test_chaos_every_message_decided_exactly_once(nursery: trio.Nursery) -> None:
    sandbox = await start_sandbox(
        nursery, latency=(0.0, 0.03), cut_every=0.3, drop_rate=0.05, duplicate_rate=0.05,
        garbage_rate=0.05,
    )
    engine = engine_for(sandbox, verdict_timeout=0.1, reconnect_initial=0.05,
                        reconnect_max=0.2)
    messages = texts(3000)
    sink, _source = await run_pipeline(engine, messages)
    assert_exactly_once(sink, messages)
    assert_correct_verdicts(sink)
    routes = Counter(d.verdict.route for d in sink.decisions)
    assert routes["ws"] > 0
    assert routes["http"] > 0
    assert set(routes) <= {"ws", "http", "cache"}
    stats = Counter(engine.statistics())
    assert sandbox.stats["ws_cuts"] >= 1
    assert stats["ws.reconnects"] >= 1
    assert stats["ws.requests_moved_on_close"] > 0
    # Garbage frames, duplicate and late replies reach us only while a connection lasts, and
    # how many depends on how many requests the websocket still carries: under load HTTP wins
    # nearly every race, and none may arrive (seen 0 in loaded runs). Each is counted exactly
    # in its own test below; here each is one more fault that must cost no decision.
    assert stats["ws_timeouts"] > 0  # the silent drops went over HTTP
    assert stats["in_flight"] == 0


async def test_every_kind_of_garbage_is_counted_and_costs_no_decision(
        nursery: trio.Nursery) -> None:
    sandbox = await start_sandbox(nursery, garbage_rate=1.0)  # before every reply, in turn
    engine = engine_for(sandbox)
    messages = texts(40)
    sink, _source = await run_pipeline(engine, messages)
    assert_exactly_once(sink, messages)
    assert_correct_verdicts(sink)
    assert {d.verdict.route for d in sink.decisions} == {"ws"}
    stats = Counter(engine.statistics())
    assert sandbox.stats["ws_garbage"] == 40
    # 40 garbage frames of 4 kinds in turn: not JSON, binary, an unknown reference, a wrong
    # shape; each counted where it belongs.
    assert stats["ws.non_text_frames"] == 10
    assert stats["ws.replies_unknown"] == 10
    assert stats["ws.invalid_replies"] == 20


async def test_a_duplicate_reply_is_counted_and_costs_no_second_decision(
        nursery: trio.Nursery) -> None:
    sandbox = await start_sandbox(nursery, duplicate_rate=1.0)  # every reply sent twice
    engine = engine_for(sandbox)
    messages = texts(40)
    sink, _source = await run_pipeline(engine, messages)
    assert_exactly_once(sink, messages)
    assert_correct_verdicts(sink)
    assert {d.verdict.route for d in sink.decisions} == {"ws"}
    assert sandbox.stats["ws_duplicated"] == 40
    assert Counter(engine.statistics())["ws.replies_duplicate"] == 40


async def test_a_websocket_reply_after_http_answered_is_late_and_costs_no_decision(
        nursery: trio.Nursery) -> None:
    # Each websocket reply comes 3 s after its request; the deadline (0.1 s) sends each
    # message over HTTP too, which answers at once: every websocket reply then comes late.
    sandbox = await start_sandbox(nursery, ws_delay=3.0)
    engine = engine_for(sandbox, verdict_timeout=0.1)
    await nursery.start(engine.run)  # it outlives the pipeline: the late replies reach it
    messages = texts(20)
    sink, _source = await run_pipeline(engine, messages, engine_started=True)
    assert_exactly_once(sink, messages)
    assert_correct_verdicts(sink)
    assert {d.verdict.route for d in sink.decisions} == {"http"}
    with trio.fail_after(20):
        await eventually(lambda: engine.statistics()["ws.replies_late"] == 20, within=20)
    stats = Counter(engine.statistics())
    assert (stats["ws_timeouts"], stats["ws_won_race"]) == (20, 0)


@pytest.mark.parametrize("refusal", ["cut", "401"])
async def test_rejected_key_falls_back_with_bounded_reconnects(
    nursery: trio.Nursery, refusal: str,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox = await start_sandbox(nursery, auth_failure=refusal)
    # auth_cut_window: a cut is recognised as a refusal however slowly this machine runs.
    engine = engine_for(sandbox, key=WRONG_KEY, auth_backoff=AUTH_BACKOFF, auth_cut_window=10.0)
    with caplog.at_level(logging.DEBUG):
        start = trio.current_time()
        await nursery.start(engine.run)
        messages = texts(50)
        sink, _ = await run_pipeline(engine, messages, last_resort="flag",
                                     engine_started=True)
        await eventually(lambda: engine.socket.stats["auth_failures"] >= 4)
        elapsed = trio.current_time() - start
    assert_exactly_once(sink, messages)
    assert {(d.verdict.route, d.verdict.action) for d in sink.decisions} == {
        ("failclosed", "flag")}
    # Every refusal is followed by a wait of auth_backoff, not the short reconnect backoff.
    delays = [r.args[0] for r in caplog.records  # type: ignore[index]
              if r.msg == "reconnecting in %.2f s"]
    assert delays[:3] == [AUTH_BACKOFF] * 3
    assert elapsed >= 3 * AUTH_BACKOFF
    assert engine.socket.stats["connect_attempts"] <= engine.socket.stats["auth_failures"] + 1
    # A cut is confirmed by one HTTP request with the key each time; a 401 on upgrade needs none.
    key_checks = engine.statistics().get("key_checks", 0)
    assert key_checks >= 1 if refusal == "cut" else key_checks == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([r for r in errors if "rejected the API key" in r.getMessage()]) == 1
    output = caplog.text + capsys.readouterr().err + "".join(
        d.to_line().decode() for d in sink.decisions)
    assert WRONG_KEY not in output
    assert "wrong-key" not in output


async def test_half_open_socket_is_detected_by_keepalive(nursery: trio.Nursery) -> None:
    sandbox = await start_sandbox(nursery)
    verdict_timeout = 30.0  # far beyond the keepalive's detection
    engine = engine_for(sandbox, ping_interval=0.3, ping_timeout=1.0,
                        verdict_timeout=verdict_timeout, reconnect_initial=100.0,
                        reconnect_max=100.0)
    await nursery.start(engine.run)
    first = await engine.moderate(Message(id="a", text="hello", source="t"))
    assert first.route == "ws"
    sandbox.half_open = True
    sent_at = trio.current_time()
    verdict = await engine.moderate(Message(id="b", text="you idiot", source="t"))
    waited = trio.current_time() - sent_at
    assert (verdict.route, verdict.action) == ("http", "delete")
    # Detected by an unanswered ping (about ping_interval + ping_timeout), not the deadline.
    assert waited < verdict_timeout
    assert engine.socket.stats["keepalive_timeouts"] == 1
    assert not engine.socket.is_open
    sandbox.half_open = False


async def never_refused() -> bool:
    return False


async def delays_after_cuts(
    sandbox: Sandbox, refused: bool, connections: int, monkeypatch: pytest.MonkeyPatch,
) -> tuple[ChatsightSocket, list[float], int]:
    """Run a socket to ``sandbox`` (which cuts every connection soon after it opens) for
    ``connections`` connections; the delays it chose after each, and how often it asked
    whether the key is refused (the answer being ``refused``). Real time, short: the
    backoff is 10 ms doubling to 40 ms, a refused key waits 50 ms."""
    settings = SocketSettings(url=sandbox.ws_url(), api_key=API_KEY, subprotocol=None,
                              connect_timeout=5, ping_interval=10, ping_timeout=5,
                              auth_cut_window=1, auth_backoff=0.05)
    checks = 0

    async def key_refused() -> bool:
        nonlocal checks
        checks += 1
        return refused

    socket = ChatsightSocket(settings, Backoff(0.01, 0.04, jitter=0),
                             on_reply=lambda reply: "unknown", on_closed=lambda connection: 0,
                             key_refused=key_refused)
    delays: list[float] = []
    enough = trio.Event()
    connect_once = socket._connect_once

    async def recorded() -> float:
        delays.append(await connect_once())
        if len(delays) == connections:
            enough.set()
        return delays[-1]

    monkeypatch.setattr(socket, "_connect_once", recorded)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(socket.run)
        with trio.fail_after(10):
            await enough.wait()
        nursery.cancel_scope.cancel()
    return socket, delays, checks


async def test_cuts_right_after_opening_with_the_key_accepted_keep_the_normal_backoff(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every connection is cut 20 ms after it opens, before any reply: a server restart, a
    # proxy recycling connections, an idle chat. HTTP does not refuse the key.
    sandbox = await start_sandbox(nursery, cut_every=0.02)
    with caplog.at_level(logging.INFO):
        socket, delays, checks = await delays_after_cuts(sandbox, False, 5, monkeypatch)
    assert delays == [0.01, 0.02, 0.04, 0.04, 0.04]  # the normal backoff, never auth_backoff
    assert checks == socket.stats["cuts_at_opening"] == 5
    assert socket.stats["auth_failures"] == 0
    assert "rejected the API key" not in caplog.text


async def test_a_cut_right_after_opening_with_the_key_refused_waits_auth_backoff(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = await start_sandbox(nursery, cut_every=0.02)
    with caplog.at_level(logging.INFO):
        socket, delays, checks = await delays_after_cuts(sandbox, True, 3, monkeypatch)
    assert delays == [0.05, 0.05, 0.05]  # auth_backoff each time
    assert checks == socket.stats["auth_failures"] == 3
    assert len([r for r in caplog.records if "rejected the API key" in r.getMessage()]) == 1


@pytest.mark.parametrize("http", ["up", "down"])
async def test_a_right_key_with_repeated_cuts_is_never_declared_rejected(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, http: str,
) -> None:
    # Real time, short: each connection is cut 50 ms after opening with no reply. The
    # engine's own HTTP request says the key is fine (or, HTTP down, says nothing).
    sandbox = await start_sandbox(nursery, cut_every=0.05)
    engine = engine_for(sandbox, reconnect_initial=0.01, reconnect_max=0.05, auth_backoff=300.0,
                        http_retries=0)
    if http == "down":
        engine = ChatsightEngine("chatsight", replace(
            engine.config, http_url=f"http://127.0.0.1:{free_port()}"))
    with caplog.at_level(logging.INFO):
        await nursery.start(engine.run)
        # With the cut taken for a refused key, the second attempt would come after 300 s.
        await eventually(lambda: engine.socket.stats["connect_attempts"] >= 6, within=15)
    stats = engine.statistics()
    assert stats.get("ws.auth_failures", 0) == 0
    assert stats["ws.cuts_at_opening"] >= 5
    assert stats["key_checks"] >= 5
    assert sandbox.stats["http_auth_rejected"] == sandbox.stats["ws_auth_rejected"] == 0
    assert "rejected the API key" not in caplog.text
    assert API_KEY not in caplog.text


async def test_steady_traffic_on_a_socket_cut_before_every_reply(nursery: trio.Nursery) -> None:
    # Replies take 0.3 s and every connection is cut after 0.15 s: no connection ever sees a
    # reply, as with a proxy that recycles connections under load. Every message is decided
    # once (over HTTP), and the websocket is never given up for 300 s.
    sandbox = await start_sandbox(nursery, cut_every=0.15, latency=(0.3, 0.3))
    engine = engine_for(sandbox, verdict_timeout=0.1, reconnect_initial=0.02,
                        reconnect_max=0.1, auth_backoff=300.0)
    messages = texts(60)
    source, sink = TrickleSource("test", messages, interval=0.02), RecordingSink()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=30),
                        Policy(PolicySection()), [sink], concurrency=100)
    with trio.fail_after(30):
        await pipeline.run()
    assert_exactly_once(sink, messages)
    assert_correct_verdicts(sink)
    assert {d.verdict.route for d in sink.decisions} == {"http"}
    stats = engine.statistics()
    assert stats.get("ws.auth_failures", 0) == 0
    # Taken for a refused key, the first cut would have stopped the websocket for 300 s.
    assert stats["ws.cuts_at_opening"] >= 2
    assert stats["ws.connect_attempts"] >= 3


async def test_reconnect_backoff_doubles_up_to_its_cap() -> None:
    # Nothing listens on this port: every attempt is refused at once.
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = SocketSettings(url=f"ws://127.0.0.1:{port}/text/moderation", api_key=API_KEY,
                              subprotocol=None, connect_timeout=5, ping_interval=10,
                              ping_timeout=5, auth_cut_window=1, auth_backoff=300)
    backoff = Backoff(0.05, 0.4, jitter=0)
    delays: list[float] = []
    stop = trio.CancelScope()

    def next_delay() -> float:
        """The socket's backoff, recorded; the sixth failure ends the test."""
        delay = Backoff.next_delay(backoff)
        delays.append(delay)
        if len(delays) == 6:
            stop.cancel()
        return delay

    backoff.next_delay = next_delay  # type: ignore[method-assign]
    socket = ChatsightSocket(settings, backoff,
                             on_reply=lambda reply: "unknown", on_closed=lambda connection: 0,
                             key_refused=never_refused)
    start = trio.current_time()
    with stop:
        await socket.run()
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.4, 0.4])
    assert socket.stats["connect_attempts"] == 6
    assert socket.stats["connect_failures"] == 6
    assert trio.current_time() - start >= sum(delays[:5])  # it really waited between attempts


async def test_raid_of_one_line_costs_one_request(nursery: trio.Nursery) -> None:
    from chatmod.core.cache import VerdictCache

    sandbox = await start_sandbox(nursery, latency=(0.01, 0.01))
    engine = engine_for(sandbox)
    messages = [Message(id=f"r-{i}", text="FOLLOW my stream  NOW", source="test")
                for i in range(500)]
    source, sink = ListSource("test", messages), RecordingSink()
    chain = EngineChain([engine], "flag", timeout=30, cache=VerdictCache(100, 60))
    pipeline = Pipeline([source], [engine], chain, Policy(PolicySection()), [sink],
                        concurrency=100)
    await pipeline.run()
    assert_exactly_once(sink, messages)
    routes = Counter(d.verdict.route for d in sink.decisions)
    assert routes == {"ws": 1, "cache": 499}
    assert sandbox.stats["ws_requests"] == 1


def mock_http(responses: list[httpx.Response]) -> tuple[httpx.MockTransport, list[float]]:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        assert request.headers["x-chatsight-api-auth"] == API_KEY
        return responses.pop(0)

    return httpx.MockTransport(handler), calls


OK_BODY = (b'{"api": "chatsight-lang-text", "success": true, "response": '
           b'{"suggestedAction": ["flag", 0.7], "engine1": {"baseline": 0.4}}}')


async def http_only_engine(
    nursery: trio.Nursery, transport: httpx.MockTransport, **options: Any
) -> ChatsightEngine:
    config = ChatsightConfig(api_key=Secret("test", API_KEY), use_websocket=False,
                             http_url="http://127.0.0.1:9", **options)
    engine = ChatsightEngine("chatsight", config, http_transport=transport)
    await nursery.start(engine.run)
    return engine


async def test_http_honours_retry_after(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
) -> None:
    transport, calls = mock_http([
        httpx.Response(429, headers={"retry-after": "3"}),
        httpx.Response(503),
        httpx.Response(200, content=OK_BODY),
    ])
    engine = await http_only_engine(nursery, transport, http_retries=2,
                                    http_max_retry_wait=10.0)
    verdict = await engine.moderate(Message(id="a", text="hm", source="t"))
    assert (verdict.action, verdict.route, verdict.score) == ("flag", "http", 0.7)
    assert calls[1] - calls[0] == pytest.approx(3.0)  # Retry-After, exactly
    assert 0 < calls[2] - calls[1] <= 0.2  # the backoff's first step


async def test_http_auth_failure_is_not_retried(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
) -> None:
    transport, calls = mock_http([httpx.Response(401), httpx.Response(200, content=OK_BODY)])
    engine = await http_only_engine(nursery, transport)
    with pytest.raises(EngineError, match="refused the API key"):
        await engine.moderate(Message(id="a", text="hm", source="t"))
    assert len(calls) == 1


async def test_http_gives_up_after_retries(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
) -> None:
    transport, calls = mock_http([httpx.Response(500)] * 3)
    engine = await http_only_engine(nursery, transport, http_retries=2)
    with pytest.raises(EngineError, match="failed after 3 attempt"):
        await engine.moderate(Message(id="a", text="hm", source="t"))
    assert len(calls) == 3


async def test_metadata_is_trimmed_and_warned_once(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox = await start_sandbox(nursery)
    engine = engine_for(sandbox)
    await nursery.start(engine.run)
    metadata = {f"key{i:02d}": i for i in range(30)}
    with caplog.at_level(logging.WARNING):
        for i in range(3):
            verdict = await engine.moderate(
                Message(id=f"m{i}", text="hello", source="t", metadata=metadata))
            assert verdict.route == "ws"
    warnings = [r.getMessage() for r in caplog.records if "metadata keys" in r.getMessage()]
    assert len(warnings) == 1
    # Context sent: chatmod_id and chatmod_source (no channel, no author): 18 of its own fit.
    assert "has 30 metadata keys of its own: sent 18 of them" in warnings[0]
    assert "with chatmod's 2 context keys, left out 12" in warnings[0]
    assert engine.statistics()["metadata_trimmed"] == 3


async def test_a_trimmed_message_is_counted_once_whatever_routes_it_takes(
    nursery: trio.Nursery,
) -> None:
    sandbox = await start_sandbox(nursery, drop_rate=1.0)  # the websocket never answers
    engine = engine_for(sandbox, verdict_timeout=0.05)
    await nursery.start(engine.run)
    with trio.fail_after(10):
        verdict = await engine.moderate(Message(
            id="m1", text="hello", source="t", metadata={f"key{i:02d}": i for i in range(30)}))
    assert verdict.route == "http"  # sent over the websocket, then over HTTP
    assert sandbox.stats["ws_requests"] == sandbox.stats["http_moderated"] == 1
    assert engine.statistics()["metadata_trimmed"] == 1


def test_requests_carry_the_message_context_first() -> None:
    engine = ChatsightEngine("chatsight", ChatsightConfig(api_key=Secret("t", API_KEY)))
    message = Message(id="m-9", text="t", source="irc", author="alice", channel="#lobby",
                      metadata={f"key{i:02d}": i for i in range(30)})
    metadata, left_out = engine._metadata(message)
    assert metadata is not None
    assert (len(metadata), left_out) == (20, 14)
    assert {k: metadata[k] for k in ("chatmod_id", "chatmod_source", "chatmod_channel",
                                     "chatmod_author")} == {
        "chatmod_id": "m-9", "chatmod_source": "irc", "chatmod_channel": "#lobby",
        "chatmod_author": "alice"}
    assert sorted(k for k in metadata if k.startswith("key")) == [f"key{i:02d}"
                                                                 for i in range(16)]


async def test_http_breaker_skips_a_failing_service_then_probes_it(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
) -> None:
    responses = [httpx.Response(503)] * 4 + [httpx.Response(200, content=OK_BODY)]
    transport, calls = mock_http(responses)
    engine = await http_only_engine(nursery, transport, http_retries=0,
                                    http_breaker_failures=3, http_breaker_cooldown=10.0)
    message = Message(id="a", text="hm", source="t")
    for _ in range(3):
        with pytest.raises(EngineError, match="HTTP 503"):
            await engine.moderate(message)
    assert len(calls) == 3
    start = trio.current_time()
    with pytest.raises(EngineError, match="skipped for now"):
        await engine.moderate(message)  # no request: the breaker is open
    assert len(calls) == 3
    assert trio.current_time() == start  # answered at once
    await trio.sleep(10)
    with pytest.raises(EngineError, match="HTTP 503"):
        await engine.moderate(message)  # the probe fails: open for another 10 s
    assert len(calls) == 4
    with pytest.raises(EngineError, match="skipped"):
        await engine.moderate(message)
    await trio.sleep(10)
    verdict = await engine.moderate(message)  # the probe succeeds: closed again
    assert verdict.route == "http"
    assert len(calls) == 5
    assert engine.statistics()["http_skipped"] == 2


async def test_unanswered_request_goes_over_http_at_its_deadline(
    nursery: trio.Nursery,
) -> None:
    sandbox = await start_sandbox(nursery, drop_rate=1.0)  # the websocket never answers
    engine = engine_for(sandbox, verdict_timeout=0.3)
    await nursery.start(engine.run)
    start = trio.current_time()
    verdict = await engine.moderate(Message(id="a", text="you idiot", source="t"))
    assert (verdict.route, verdict.action) == ("http", "delete")
    assert trio.current_time() - start >= 0.3
    assert engine.statistics()["ws_timeouts"] == 1
    assert sandbox.stats["ws_requests"] == 1  # the websocket had it first


async def test_late_websocket_reply_still_wins_the_race_with_http(
    nursery: trio.Nursery,
) -> None:
    # The websocket holds the request past its deadline, so it also goes over HTTP, which
    # takes far longer; then the websocket answers: its reply wins and HTTP is called off.
    sandbox = await start_sandbox(nursery)
    engine = engine_for(sandbox, verdict_timeout=0.1, http_timeout=600.0, http_deadline=600.0)
    await nursery.start(engine.run)
    sandbox.half_open = True  # the websocket request waits unread
    sandbox.faults.latency = (600.0, 600.0)  # HTTP answers after the test
    verdicts: list[Verdict] = []

    async def moderate() -> None:
        verdicts.append(await engine.moderate(Message(id="a", text="hello", source="t")))

    nursery.start_soon(moderate)
    await eventually(lambda: sandbox.stats["http_requests"] == 1)  # the race is on
    sandbox.faults.latency = (0.0, 0.0)
    sandbox.half_open = False  # now the websocket reads the request and answers at once
    await eventually(lambda: len(verdicts) == 1)
    assert verdicts[0].route == "ws"
    stats = engine.statistics()
    assert stats["ws_won_race"] == 1
    assert stats["in_flight"] == 0
    # HTTP was called off, not left to answer late: its task is gone (the overdue sweep, the
    # warm HTTP connections' keeper and the sweep of messages held too long stay).
    assert engine._tasks is not None
    await eventually(lambda: engine._tasks is not None and [
        t.name for t in engine._tasks.child_tasks if "_over_http" in t.name] == [])
    assert len(engine._tasks.child_tasks) == 3
    assert engine.statistics().get("http_answers_dropped", 0) == 0


class TrickleSource(ListSource):
    """Submits its messages slowly, so a test can act while they flow."""

    def __init__(self, name: str, messages: list[Message], interval: float = 0.002) -> None:
        super().__init__(name, messages)
        self.interval = interval

    async def run(self, intake: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        for message in self.messages:
            await intake.submit(message)
            self.submitted += 1
            await trio.sleep(self.interval)


async def test_replacing_the_engine_under_load_loses_nothing(nursery: trio.Nursery) -> None:
    first_sandbox = await start_sandbox(nursery, latency=(0.0, 0.02))
    second_sandbox = await start_sandbox(nursery, latency=(0.0, 0.02))
    old, new = engine_for(first_sandbox), engine_for(second_sandbox)
    messages = texts(600)
    source, sink = TrickleSource("test", messages), RecordingSink()
    pipeline = Pipeline([source], [old], EngineChain([old], "flag", timeout=30),
                        Policy(PolicySection()), [sink], concurrency=100)
    async with trio.open_nursery() as inner:
        inner.start_soon(pipeline.run)
        await eventually(lambda: source.submitted >= 200)
        pipeline.replace_engine(old, new)
    assert_exactly_once(sink, messages)
    assert {d.verdict.route for d in sink.decisions} == {"ws"}
    assert first_sandbox.stats["ws_requests"] > 0
    assert second_sandbox.stats["ws_requests"] > 0
    assert pipeline.chain.engines == [new]
    assert not old.socket.is_open  # retired once nothing waited on it


async def test_a_retired_engine_fails_what_it_holds_to_the_fallback(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import chatmod.core.pipeline

    monkeypatch.setattr(chatmod.core.pipeline, "ENGINE_RETIRE_GRACE", 0.5)
    # Never answers over the websocket, and the deadline is far away.
    silent = await start_sandbox(nursery, drop_rate=1.0)
    working = await start_sandbox(nursery)
    old = engine_for(silent, verdict_timeout=60.0)
    new = engine_for(working)
    stuck = texts(5)
    source = ListSource("test", stuck, stay_open=True)
    sink = RecordingSink()
    pipeline = Pipeline([source], [old], EngineChain([old], "flag", timeout=30),
                        Policy(PolicySection()), [sink], concurrency=100)
    async with trio.open_nursery() as inner:
        inner.start_soon(pipeline.run)
        await eventually(lambda: len(old.table) == 5)
        pipeline.replace_engine(old, new)
        await eventually(lambda: len(sink.decisions) == 5, within=5)
        pipeline.stop_reading(drain_timeout=5)
    assert_exactly_once(sink, stuck)
    assert {d.verdict.route for d in sink.decisions} == {"failclosed"}


async def test_a_peer_reset_with_replies_pending_does_not_end_the_sandbox(
    nursery: trio.Nursery,
) -> None:
    # Replies wait 0.3 s; the client sends a request and resets the connection before the
    # reply. The sandbox used to end with "fatal: ExceptionGroup" (the reset, raised inside
    # the connection's nursery, escaped the handler).
    import socket as stdlib_socket
    import struct
    from urllib.parse import urlsplit

    import orjson
    from wsproto import WSConnection
    from wsproto.connection import ConnectionType
    from wsproto.events import Request, TextMessage

    sandbox = await start_sandbox(nursery, latency=(0.3, 0.3))
    client = WSConnection(ConnectionType.CLIENT)
    port = urlsplit(sandbox.ws_url()).port
    assert port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(client.send(Request(
        host="127.0.0.1", target="/text/moderation",
        extra_headers=[(b"x-chatsight-api-auth", API_KEY.encode())])))
    with trio.fail_after(10):
        while not list(client.events()):
            client.receive_data(await stream.receive_some(4096))
    await stream.send_all(client.send(TextMessage(data=orjson.dumps(
        {"text": "hello", "self_reference": "r-1"}).decode())))
    await eventually(lambda: sandbox.stats["ws_requests"] >= 1)
    stream.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()  # a reset, with the reply still to come
    engine = engine_for(sandbox)
    await nursery.start(engine.run)
    verdict = await engine.moderate(Message(id="after", text="you idiot", source="t"))
    assert (verdict.route, verdict.action) == ("ws", "delete")
