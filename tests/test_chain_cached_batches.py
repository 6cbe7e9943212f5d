"""``EngineChain.moderate_many`` with the verdict cache and a primary that takes lists (the
local engine): the texts the cache cannot answer (the leads) go to the primary in one call,
identical texts share one answer, and the verdicts are those ``moderate`` gives one by one."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.lowlevel
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.core.cache import ROUTE_CACHE, VerdictCache, normalise
from chatmod.core.engine_chain import ROUTE_FALLBACK, EngineChain
from chatmod.core.interfaces import Engine, takes_batches
from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError

DEADLINE = 20


class ListEngine(Engine[None]):
    """Answers lists: ``delete`` for a text with "bad", an EngineError for one with "down"
    (in any case); waits for ``gate`` when one is given."""

    def __init__(self, name: str = "lists", gate: trio.Event | None = None) -> None:
        super().__init__(name, None)
        self.asked: list[list[str]] = []
        self.gate = gate

    async def moderate(self, message: Message) -> Verdict:
        result = (await self.moderate_many([message]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def moderate_many(self, messages: Sequence[Message]) -> list[Verdict | Exception]:
        self.asked.append([m.text for m in messages])
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        texts = [m.text.lower() for m in messages]
        return [EngineError("down") if "down" in text
                else Verdict("delete" if "bad" in text else "pass", 0.5, self.name, "local")
                for text in texts]


class Backup(Engine[None]):
    async def moderate(self, message: Message) -> Verdict:
        return Verdict("flag", None, self.name, "local")


def chain_of(primary: Engine[None]) -> EngineChain:
    return EngineChain([primary, Backup("backup", None)], "flag", timeout=5,
                       cache=VerdictCache(100, 60.0))


def msgs(*texts: str) -> list[Message]:
    return [Message(id=str(i), text=text, source="t") for i, text in enumerate(texts)]


def seen(verdicts: Sequence[Verdict]) -> list[tuple[str, str, str]]:
    return [(v.action, v.engine, v.route) for v in verdicts]


@given(texts=st.lists(st.sampled_from(["ok", "OK", "o k", "bad", "BAD!", "down", "bad down",
                                       "fine", "f i n e"]), min_size=1, max_size=20),
       cached=st.lists(st.sampled_from(["ok", "bad", "down", "fine"]), max_size=3))
@example(texts=["down", "down", "ok"], cached=[])
async def test_a_batch_gets_the_verdicts_moderate_gives_one_by_one(
        texts: list[str], cached: list[str]) -> None:
    # The same texts through two fresh chains (``cached`` asked first in each): all at once
    # through moderate_many, and a moderate() each, concurrently.
    batched, single = ListEngine(), ListEngine()
    assert takes_batches(batched)
    in_batch, one_by_one = chain_of(batched), chain_of(single)
    messages = msgs(*texts)
    singles: list[Verdict | None] = [None] * len(messages)

    async def one(index: int) -> None:
        singles[index] = await one_by_one.moderate(messages[index])

    with trio.fail_after(DEADLINE):
        await in_batch.moderate_many(msgs(*cached))
        await one_by_one.moderate_many(msgs(*cached))
        batch = await in_batch.moderate_many(messages)
        async with trio.open_nursery() as nursery:
            for index in range(len(messages)):
                nursery.start_soon(one, index)
    # Which of two identical texts leads (the other waits on it: route cache) is the
    # scheduler's choice when asked one by one: compare each text's verdicts, not their positions.
    assert None not in singles
    keys = [normalise(text) for text in texts]  # "fine" and "f i n e" are one text to it
    assert sorted(zip(keys, seen(batch), strict=True)) == sorted(
        zip(keys, seen([v for v in singles if v is not None]), strict=True))
    assert in_batch.failures == one_by_one.failures
    assert in_batch.cache is not None
    assert one_by_one.cache is not None
    assert in_batch.cache.statistics() == one_by_one.cache.statistics()


async def test_the_primary_is_asked_once_for_the_texts_the_cache_cannot_answer() -> None:
    engine = ListEngine()
    chain = chain_of(engine)
    with trio.fail_after(DEADLINE):
        first = await chain.moderate_many(msgs("bad", "ok", "BAD", "b a d", "fine"))
        second = await chain.moderate_many(msgs("ok", "new", "bad"))
    assert engine.asked == [["bad", "ok", "fine"], ["new"]]
    assert seen(first) == [("delete", "lists", "local"), ("pass", "lists", "local"),
                           ("delete", "lists", ROUTE_CACHE), ("delete", "lists", ROUTE_CACHE),
                           ("pass", "lists", "local")]
    assert [v.route for v in second] == [ROUTE_CACHE, "local", ROUTE_CACHE]


async def test_a_failed_lead_falls_back_and_its_twins_ask_on_their_own() -> None:
    engine = ListEngine()
    chain = chain_of(engine)
    with trio.fail_after(DEADLINE):
        verdicts = await chain.moderate_many(msgs("down", "ok", "DOWN"))
        again = await chain.moderate_many(msgs("down"))
    # The twin asks the chain itself (the primary first): no verdict of the fallback is
    # shared or kept.
    assert engine.asked == [["down", "ok"], ["DOWN"], ["down"]]
    assert seen(verdicts) == [("flag", "backup", ROUTE_FALLBACK), ("pass", "lists", "local"),
                              ("flag", "backup", ROUTE_FALLBACK)]
    assert seen(again) == [("flag", "backup", ROUTE_FALLBACK)]
    assert chain.failures["lists"] == 3


async def test_a_text_asked_in_another_batch_waits_for_that_answer() -> None:
    gate = trio.Event()
    engine = ListEngine(gate=gate)
    chain = chain_of(engine)
    results: dict[str, list[Verdict]] = {}

    async def batch(key: str, texts: list[str]) -> None:
        results[key] = await chain.moderate_many(msgs(*texts))

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(batch, "first", ["bad"])
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(batch, "second", ["Bad", "ok"])
            await trio.testing.wait_all_tasks_blocked()
            assert engine.asked == [["bad"], ["ok"]]
            gate.set()
    assert seen(results["first"]) == [("delete", "lists", "local")]
    assert seen(results["second"]) == [("delete", "lists", ROUTE_CACHE),
                                       ("pass", "lists", "local")]


async def test_a_cancelled_batch_leaves_no_twin_waiting() -> None:
    # The stop cancels a batch waiting on the engine: a message waiting on the batch's
    # request for the same text asks on its own.
    gate = trio.Event()
    engine = ListEngine(gate=gate)
    chain = chain_of(engine)
    got: list[Verdict] = []

    async def twin() -> None:
        got.append(await chain.moderate(msgs("bad")[0]))

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            stop = trio.CancelScope()

            async def cancelled_batch() -> None:
                with stop:
                    await chain.moderate_many(msgs("bad"))

            nursery.start_soon(cancelled_batch)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(twin)
            await trio.testing.wait_all_tasks_blocked()
            assert engine.asked == [["bad"]]  # the twin waits on the batch's request
            stop.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert engine.asked == [["bad"], ["bad"]]  # ...and asks once it was cancelled
            gate.set()
    assert seen(got) == [("delete", "lists", "local")]
