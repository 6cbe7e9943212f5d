"""No message is left without an answer when the websocket dies while its writer is blocked.

The field report: a latency fault held 10,000 requests, the websocket's writer stalled on a
full socket, the keepalive's ping (queued behind the requests) went unanswered, the socket
closed "after 41.78 s (no pong)", and 1,728 messages then stayed undecided for minutes. The
submitter was waiting for the writer to drain its queue (backpressure); the keepalive
cancelled the writer and nothing ever told that waiter the connection had ended, so the
streaming stage stopped taking messages altogether.

Real sockets over loopback (a full socket buffer is what blocks the writer), in real time,
bounded.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from chatmod.chatsight.ws_client import HIGH_WATER
from chatmod.config.schema import Secret
from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError
from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine
from chatmod.sandbox.server import Faults, Sandbox

from .helpers import eventually

API_KEY = "c.test.0123456789abcdef"
# Requests far beyond what loopback's socket buffers take while the peer reads nothing.
MESSAGES = 4000
TEXT_SIZE = 8 * 1024
# Keepalive detection, the close, and HTTP failing fast: seconds, on a loaded machine.
ALL_ANSWERED_WITHIN = 30.0


async def start_sandbox(nursery: trio.Nursery, **faults: Any) -> Sandbox:
    sandbox = Sandbox(api_key=API_KEY, verdicts="wordlist", seed=7, faults=Faults(**faults))
    await nursery.start(sandbox.serve)
    return sandbox


def engine_for(sandbox: Sandbox, **options: Any) -> ChatsightEngine:
    config = ChatsightConfig(
        api_key=Secret("test", API_KEY), ws_url=sandbox.ws_url(), http_url=sandbox.http_url(),
        **options)
    return ChatsightEngine("chatsight", config)


@pytest.mark.time_limit(60)
async def test_socket_closing_while_the_submitter_waits_for_the_writer(
    nursery: trio.Nursery,
) -> None:
    # HTTP fails at once (503, no retry): the breaker opens and skips it, as in the report;
    # every message then gets an EngineError, the engine chain's cue for its fallback.
    sandbox = await start_sandbox(nursery, http_error_rate=1.0)
    engine = engine_for(
        sandbox, verdict_timeout=600.0, ping_interval=0.3, ping_timeout=0.5,
        reconnect_initial=600.0, reconnect_max=600.0, http_retries=0,
        max_in_flight=MESSAGES + 1)
    await nursery.start(engine.run)
    first = await engine.moderate(Message(id="first", text="hello", source="t"))
    assert first.route == "ws"  # the websocket is open
    ws = engine.socket._ws
    assert ws is not None
    sandbox.half_open = True  # the sandbox stops reading: the writer blocks on a full socket

    messages = [Message(id=f"m-{i}", text=f"{i} " + "x" * TEXT_SIZE, source="t")
                for i in range(MESSAGES)]
    answers: list[list[Verdict | EngineError]] = [[] for _ in messages]
    all_answered = trio.Event()
    answered = 0

    def on_result(index: int, result: Verdict | EngineError) -> None:
        nonlocal answered
        answers[index].append(result)
        answered += 1
        if answered == MESSAGES:
            all_answered.set()

    submitted = trio.Event()

    async def submit() -> None:
        await engine.submit_many(messages, on_result)
        submitted.set()

    nursery.start_soon(submit)
    # The submitter waits for the writer (backpressure) while the connection is still open.
    await eventually(lambda: ws._queued_bytes > HIGH_WATER)
    assert ws.is_open

    with trio.move_on_after(ALL_ANSWERED_WITHIN):
        await submitted.wait()
        await all_answered.wait()
    assert engine.socket.stats["keepalive_timeouts"] == 1
    assert submitted.is_set(), "submit_many still waits for a writer that is gone"
    assert [len(a) for a in answers] == [1] * MESSAGES
    # Not one message left over the websocket: each one went to HTTP, which failed.
    assert all(isinstance(a[0], EngineError) for a in answers)
    assert len(engine.table) == 0
    sandbox.half_open = False


@pytest.mark.time_limit(30)
async def test_message_held_past_every_deadline_fails_to_the_fallback(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    # The safety net: whatever path lost a message's answer, the engine fails it after
    # verdict_timeout + 2 * http_deadline + a margin, so the fallback decides it.
    sandbox = await start_sandbox(nursery)
    engine = engine_for(sandbox, verdict_timeout=0.2, http_deadline=0.2)
    await nursery.start(engine.run)
    # A message whose answer no path will deliver: registered as held, never sent.
    results: list[Verdict | EngineError] = []
    lost = [engine._settler(results.append, trio.current_time()) for _ in range(3)]
    assert engine._window.free == engine.config.max_in_flight  # no window slot taken
    for _ in lost:
        await engine._window.take(1)  # as _start's callers take a slot
    caplog.set_level(logging.ERROR, logger="chatmod.engine")
    held_limit = engine.held_limit
    started = trio.current_time()
    with trio.fail_after(held_limit + 10.0):
        await eventually(lambda: len(results) == 3, within=held_limit + 10.0)
    assert trio.current_time() - started >= held_limit - 0.1
    assert all(isinstance(r, EngineError) for r in results)
    assert engine.statistics()["held_too_long"] == 3
    assert engine._window.free == engine.config.max_in_flight  # their slots came back
    held_logs = [r for r in caplog.records if "held" in r.getMessage()]
    assert len(held_logs) == 1  # logged once, counted each time
    # The engine still works.
    verdict = await engine.moderate(Message(id="after", text="hello", source="t"))
    assert verdict.route == "ws"


@pytest.mark.time_limit(40)
async def test_a_message_the_safety_net_failed_leaves_the_in_flight_table(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A websocket request whose reply does not come (the sandbox reads nothing while half
    # open) goes over HTTP when overdue, and HTTP loses its answer (injected: it never
    # returns). The safety net fails the message: it must leave the in-flight table too, its
    # HTTP request is called off, and the reply that comes at last is a late stray, counted
    # as such, that does not answer the message a second time.
    sandbox = await start_sandbox(nursery)
    engine = engine_for(sandbox, verdict_timeout=0.2, http_deadline=0.2, ping_interval=60.0,
                        ping_timeout=60.0)
    http_called_off = trio.Event()
    http_calls: list[str] = []

    async def http_loses_its_answer(message: Message, *_: Any) -> Verdict | EngineError:
        http_calls.append(message.id)
        try:
            await trio.sleep_forever()
        finally:
            http_called_off.set()

    monkeypatch.setattr(engine, "_http_result", http_loses_its_answer)
    await nursery.start(engine.run)
    first = await engine.moderate(Message(id="first", text="hello", source="t"))
    assert first.route == "ws"  # the websocket is open
    sandbox.half_open = True

    results: list[Verdict | EngineError] = []
    answered = trio.Event()

    def on_result(result: Verdict | EngineError) -> None:
        results.append(result)
        answered.set()

    held_limit = engine.held_limit
    started = trio.current_time()
    await engine.submit(Message(id="lost", text="hello again", source="t"), on_result)
    assert len(engine.table) == 1
    with trio.fail_after(held_limit + 10.0):
        await answered.wait()
    assert trio.current_time() - started >= held_limit - 0.1
    assert [type(r) for r in results] == [EngineError]
    assert http_calls == ["lost"]  # it did go over HTTP, racing
    stats = engine.statistics()
    assert stats["held_too_long"] == 1
    assert stats["in_flight"] == 0
    assert len(engine.table) == 0
    assert engine._window.free == engine.config.max_in_flight
    with trio.fail_after(5.0):
        await http_called_off.wait()

    replies_before = engine.socket.stats["replies"]
    sandbox.half_open = False  # the sandbox reads the request now, and answers it
    await eventually(lambda: engine.socket.stats["replies"] == replies_before + 1)
    assert engine.socket.stats["replies_late"] == 1
    assert [type(r) for r in results] == [EngineError]  # answered once
    assert engine.routes["ws"] == 1  # the first message's only
    # The engine still works.
    verdict = await engine.moderate(Message(id="after", text="hello", source="t"))
    assert verdict.route == "ws"
