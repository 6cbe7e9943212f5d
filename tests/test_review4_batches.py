"""Review of the batch fast paths (issue 14): what a reload in the middle of a batch and an
engine's failure there are attributed to."""

from __future__ import annotations

import trio
import trio.testing

from chatmod.core.engine_chain import ROUTE_FALLBACK, EngineChain
from chatmod.core.model import Message
from tests.test_chain_cached_batches import Backup, ListEngine

DEADLINE = 10


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
