"""``http_deadline`` bounds a message's whole HTTP fallback: the wait for a free connection,
each attempt and the waits between retries (the pool bounds its first attempt itself, with no
cancel scope of its own around the request)."""

from __future__ import annotations

from typing import Any

import h11
import pytest
import trio

from chatmod.config.schema import Secret
from chatmod.core.model import Message
from chatmod.errors import EngineError
from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine

from .test_chatsight_http_pool import KEY, TIMEOUT, answer, read_request, serve

DEADLINE = 0.3  # seconds: far below every other bound in these tests


async def never_answers(stream: trio.SocketStream, _connection: int) -> None:
    await trio.sleep_forever()


async def always_busy(stream: trio.SocketStream, _connection: int) -> None:
    server = h11.Connection(h11.SERVER)
    while await read_request(stream, server) is not None:
        await stream.send_all(answer(server, 503, b"busy", [(b"retry-after", b"60")]))
        server.start_next_cycle()


async def start_engine(nursery: trio.Nursery, url: str, **options: Any) -> ChatsightEngine:
    config = ChatsightConfig(api_key=Secret("test", KEY), use_websocket=False,
                             http_url=url.removesuffix("/text/moderation"),
                             http_deadline=DEADLINE, http_timeout=600.0,
                             http_max_retry_wait=600.0, **options)
    engine = ChatsightEngine("chatsight", config)
    await nursery.start(engine.run)
    return engine


async def test_a_request_never_answered_fails_at_the_deadline(nursery: trio.Nursery) -> None:
    url, _ = await serve(nursery, never_answers)
    engine = await start_engine(nursery, url)
    with trio.fail_after(TIMEOUT), pytest.raises(
            EngineError, match=r"no HTTP answer within http_deadline \(0\.3 s\)"):
        await engine.moderate(Message(id="a", text="hello", source="t"))
    assert engine.breaker.failures == 1
    assert engine.statistics()["http.requests"] == 1


async def test_the_deadline_cuts_the_wait_between_retries(nursery: trio.Nursery) -> None:
    url, _ = await serve(nursery, always_busy)  # 503, retry after 60 s
    engine = await start_engine(nursery, url, http_retries=2)
    with trio.fail_after(TIMEOUT), pytest.raises(
            EngineError, match=r"no HTTP answer within http_deadline \(0\.3 s\)"):
        await engine.moderate(Message(id="a", text="hello", source="t"))
    stats = engine.statistics()
    assert (stats["http.requests"], stats["http.status_503"], stats["http.retries"]) == (1, 1, 1)


async def test_the_deadline_cuts_the_wait_for_a_free_connection(nursery: trio.Nursery) -> None:
    # One connection at most: the second message waits for the first's slot, which is held
    # until the first's deadline; the second's deadline ends its wait first (it never sends).
    url, accepted = await serve(nursery, never_answers)
    engine = await start_engine(nursery, url, http_concurrency=1)
    failures: list[str] = []

    async def moderate(name: str) -> None:
        with pytest.raises(EngineError) as failed:
            await engine.moderate(Message(id=name, text="hello", source="t"))
        failures.append(str(failed.value))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as both:
            both.start_soon(moderate, "a")
            both.start_soon(moderate, "b")
    assert failures == ["no HTTP answer within http_deadline (0.3 s)"] * 2
    assert engine.statistics()["http.requests"] == 1
    assert len(accepted) == 1
