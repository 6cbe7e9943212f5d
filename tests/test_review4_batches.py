"""Review of the batch fast paths (issue 14): what a reload in the middle of a batch and an
engine's failure there are attributed to."""

from __future__ import annotations

import trio
import trio.testing

from chatmod.core.engine_chain import ROUTE_FALLBACK, EngineChain
from chatmod.core.model import Message
from chatmod.plugins.local import LocalConfig, LocalEngine

from .test_chain_cached_batches import Backup, ListEngine
from .test_local_batches import Recorder, actions, msgs, start_stoppable

DEADLINE = 10
# What a stopped engine holds fails with no engine work: far under the chain's timeout.
STOPPED_ANSWER_DEADLINE = 2


async def test_a_batch_failed_by_the_primary_replaced_meanwhile_counts_against_it() -> None:
    # The primary asked for the list fails it after a reload made another engine the
    # primary: the failures are the engine's that failed, not its successor's (the per-engine
    # failure counters and "engine X failed" warnings name the engine that failed).
    gate = trio.Event()
    old, new = ListEngine("old", gate), ListEngine("new")
    chain = EngineChain([old, Backup("backup", None)], "flag", timeout=5)
    messages = [Message(str(i), "down", "t") for i in range(3)]
    verdicts = []

    async def ask() -> None:
        verdicts.extend(await chain.moderate_many(messages))

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            assert old.asked == [["down"] * 3]
            chain.replace(old, new)  # a reload, while the list is with the old primary
            gate.set()
    assert [(v.engine, v.route) for v in verdicts] == [("backup", ROUTE_FALLBACK)] * 3
    assert chain.failures == {"old": 3}
    assert new.asked == []  # the fallback goes on from the second engine: not asked


async def test_a_batch_stopped_before_its_model_call_started_fails_at_once() -> None:
    # The engine is stopped while a gathered batch waits for a worker thread (the thread
    # limiter is full): the batch is no longer "gathering" and not yet scored; what it holds
    # must fail at once, as what is gathered or queued does, not wait for the chain's timeout.
    predictor = Recorder()
    engine = LocalEngine("local", LocalConfig(batch_size=2, rules=False), predictor=predictor)
    outcome: list[object] = []
    answered = trio.Event()
    limiter = trio.to_thread.current_default_thread_limiter()

    async def ask() -> None:
        outcome.append(actions(await engine.moderate_many(msgs("ok", "bad"))))
        answered.set()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            running = await start_stoppable(nursery, engine)
            tokens = limiter.total_tokens
            limiter.total_tokens = 1
            await limiter.acquire()  # every worker thread busy
            try:
                nursery.start_soon(ask)
                await trio.testing.wait_all_tasks_blocked()
                assert limiter.statistics().tasks_waiting == 1  # the batch, for a thread
                running.cancel()
                with trio.fail_after(STOPPED_ANSWER_DEADLINE):
                    await answered.wait()
            finally:
                limiter.release()
                limiter.total_tokens = tokens
    assert outcome == [["EngineError", "EngineError"]]
    assert predictor.batches == []
