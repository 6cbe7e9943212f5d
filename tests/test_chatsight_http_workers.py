"""The HTTP fallback's worker pool (chatsight/http.py WorkerPool) and how the engine uses it:
at most ``size`` calls at once, in the order queued, an idle worker reused, nothing run after
the pool's nursery is cancelled; in the engine, every message queued when it stops gets an
EngineError, and a message that waited past its deadline is never sent."""

from __future__ import annotations

import trio
import trio.testing

from chatmod.chatsight.http import JOBS_BETWEEN_YIELDS, WorkerPool
from chatmod.config.schema import Secret
from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError
from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine

from .test_chatsight_http_pool import KEY, TIMEOUT, keep_alive_server, serve

BOUND = 10.0  # seconds any of these tests may take


class Results:
    """The results an engine hands back, with a wait for a number of them."""

    def __init__(self) -> None:
        self.got: list[Verdict | EngineError] = []
        self._changed = trio.Event()

    def append(self, result: Verdict | EngineError) -> None:
        self.got.append(result)
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.got) < count:
            self._changed = trio.Event()
            await self._changed.wait()


async def test_at_most_size_calls_run_at_once_in_the_order_queued() -> None:
    pool = WorkerPool(2)
    gates = [trio.Event() for _ in range(5)]
    started: list[int] = []
    running = [0]
    most = [0]

    async def call(index: int) -> None:
        started.append(index)
        running[0] += 1
        most[0] = max(most[0], running[0])
        await gates[index].wait()
        running[0] -= 1

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            pool.start_in(nursery)
            for index in range(5):
                pool.run_soon(call, index)
            await trio.testing.wait_all_tasks_blocked()
            assert (sorted(started), len(pool)) == ([0, 1], 3)  # two workers, any order
            for index in (1, 0, 2, 3, 4):  # out of order: the queue still runs in order
                gates[index].set()
                await trio.testing.wait_all_tasks_blocked()
            assert started[2:] == [2, 3, 4]
            assert (most[0], len(pool)) == (2, 0)
            nursery.cancel_scope.cancel()


async def test_an_idle_worker_takes_the_next_call_and_no_new_one_starts() -> None:
    pool = WorkerPool(8)
    tasks: list[trio.lowlevel.Task] = []

    async def call() -> None:
        tasks.append(trio.lowlevel.current_task())
        await trio.lowlevel.checkpoint()

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            pool.start_in(nursery)
            for _ in range(3):
                pool.run_soon(call)
                await trio.testing.wait_all_tasks_blocked()  # done: its worker is parked
            assert len(tasks) == 3
            assert len(set(tasks)) == 1
            assert len(nursery.child_tasks) == 1
            nursery.cancel_scope.cancel()


async def test_queued_calls_never_run_once_the_nursery_is_cancelled() -> None:
    pool = WorkerPool(1)
    ran: list[int] = []
    first_started = trio.Event()

    async def call(index: int) -> None:
        ran.append(index)
        first_started.set()
        await trio.sleep_forever()

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            pool.start_in(nursery)
            for index in range(3):
                pool.run_soon(call, index)
            await first_started.wait()
            nursery.cancel_scope.cancel()
    assert ran == [0]
    assert len(pool) == 2  # left queued: their owner answers for them


async def test_calls_that_never_wait_let_other_tasks_run() -> None:
    pool = WorkerPool(1)
    done: list[int] = []
    seen_by_other_task: list[int] = []

    async def call(index: int) -> None:  # like a message the breaker skips: no await
        done.append(index)

    async def other() -> None:
        seen_by_other_task.append(len(done))

    calls = JOBS_BETWEEN_YIELDS * 3
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            pool.start_in(nursery)
            pool.run_soon(call, 0)  # starts the worker (it runs at the next checkpoint)
            for index in range(1, calls):
                pool.run_soon(call, index)
            nursery.start_soon(other)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert done == list(range(calls))
    # The other task ran while calls were still queued, not only after the whole queue.
    assert len(seen_by_other_task) == 1
    assert seen_by_other_task[0] < calls


async def never_answers(_stream: trio.SocketStream, _connection: int) -> None:
    await trio.sleep_forever()


async def test_messages_queued_for_http_each_fail_once_when_the_engine_stops() -> None:
    # One connection, never answered: the first message is sent, the others wait for the
    # worker. Stopping the engine must answer every one (the fallback then decides).
    results: dict[str, list[Verdict | EngineError]] = {}
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            url, accepted = await serve(nursery, never_answers)
            config = ChatsightConfig(api_key=Secret("test", KEY), use_websocket=False,
                                     http_url=url.removesuffix("/text/moderation"),
                                     http_concurrency=1, http_timeout=600.0,
                                     http_deadline=600.0)
            engine = ChatsightEngine("chatsight", config)
            with trio.CancelScope() as engine_scope:
                await nursery.start(engine.run)
            for name in ("a", "b", "c"):
                results[name] = []
                await engine.submit(Message(id=name, text="hello", source="t"),
                                    results[name].append)
            await trio.testing.wait_all_tasks_blocked()
            assert len(engine._http_workers) == 2  # b and c wait for the one worker
            assert len(accepted) == 1
            engine_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert {name: [str(r) for r in got] for name, got in results.items()} == {
        name: ["engine chatsight stopped"] for name in "abc"}


async def test_a_message_that_waited_past_its_deadline_is_not_sent() -> None:
    # Two connections at most: two messages hold them until their deadline; the third,
    # queued just after, fails at the same time without ever being sent.
    with trio.fail_after(TIMEOUT * 2):
        async with trio.open_nursery() as nursery:
            url, accepted = await serve(nursery, never_answers)
            config = ChatsightConfig(api_key=Secret("test", KEY), use_websocket=False,
                                     http_url=url.removesuffix("/text/moderation"),
                                     http_concurrency=2, http_timeout=600.0,
                                     http_deadline=0.3, http_retries=0)
            engine = ChatsightEngine("chatsight", config)
            await nursery.start(engine.run)
            results = Results()
            for name in ("a", "b", "c"):
                await engine.submit(Message(id=name, text="hello", source="t"),
                                    results.append)
            await results.wait_for(3)
            assert [str(r) for r in results.got] == [
                "no HTTP answer within http_deadline (0.3 s)"] * 3
            assert engine.statistics()["http.requests"] == 2
            assert len(accepted) == 2
            nursery.cancel_scope.cancel()


async def test_the_pool_serves_many_messages_on_few_connections() -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            url, accepted = await serve(nursery, keep_alive_server)
            config = ChatsightConfig(api_key=Secret("test", KEY), use_websocket=False,
                                     http_url=url.removesuffix("/text/moderation"),
                                     http_concurrency=4)
            engine = ChatsightEngine("chatsight", config)
            await nursery.start(engine.run)
            results = Results()
            for index in range(200):
                await engine.submit(Message(id=str(index), text="hello", source="t"),
                                    results.append)
            await results.wait_for(200)
            assert {(r.action, r.route) for r in results.got if isinstance(r, Verdict)} == {
                ("pass", "http")}
            assert len(results.got) == 200
            assert len(accepted) <= 4
            assert len(engine._http_workers) == 0
            nursery.cancel_scope.cancel()
