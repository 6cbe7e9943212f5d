"""Batches between the pipeline's stages: the intake's room counted in messages, a cancelled
``submit_many``, and the batch paths' failures (an engine failing one message of a batch, a
policy raising for one, a streaming engine's ``submit_many``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from chatmod.config.sections import DeadLettersSection, PolicySection
from chatmod.core.cache import Lead
from chatmod.core.dead_letters import DeadLetters
from chatmod.core.engine_chain import EngineChain
from chatmod.core.intake import Room, SourceIntake
from chatmod.core.interfaces import (
    BatchResultCallback,
    Engine,
    Intake,
    ResultCallback,
    Source,
    StreamingEngine,
    VerdictsCallback,
    takes_batches,
)
from chatmod.core.model import Decision, Message, Verdict
from chatmod.core.pipeline import Pipeline
from chatmod.errors import EngineError
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.rules import Policy

from .helpers import RecordingSink, messages

DEADLINE = 20


class Counts:
    received = 0
    invalid = 0


def intake_with_room(size: int) -> tuple[SourceIntake, Counts, Room,
                                         trio.MemoryReceiveChannel[list[Message]]]:
    send, receive = trio.open_memory_channel[list[Message]](math.inf)
    counts, room = Counts(), Room(size)
    return SourceIntake(counts, send, room), counts, room, receive


async def test_a_batch_is_split_by_backpressure_and_waits_for_room() -> None:
    intake, counts, room, receive = intake_with_room(3)
    batch = messages(7)
    done = trio.Event()

    async def submit() -> None:
        await intake.submit_many(batch)
        done.set()

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            await trio.testing.wait_all_tasks_blocked()
            # Room for three: the first three are in, the rest waits (backpressure).
            assert receive.receive_nowait() == batch[:3]
            assert counts.received == 3
            assert not done.is_set()
            room.give_back(2)
            await trio.testing.wait_all_tasks_blocked()
            assert receive.receive_nowait() == batch[3:5]
            assert not done.is_set()
            room.give_back(3)
            await done.wait()
    assert receive.receive_nowait() == batch[5:]
    assert counts.received == 7
    assert room.free == 1
    assert intake.held == []


async def test_a_cancelled_submit_many_keeps_all_it_had_not_handed_over() -> None:
    intake, counts, room, receive = intake_with_room(2)
    batch = messages(5)
    with trio.fail_after(DEADLINE):
        with trio.move_on_after(0.05) as scope:
            await intake.submit_many(batch)
        assert scope.cancelled_caught
        assert receive.receive_nowait() == batch[:2]
        assert (counts.received, intake.held) == (2, batch[2:])
        # The drain hands the held ones over, in order, as room comes.
        room.give_back(2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(intake.submit_held)
            await trio.testing.wait_all_tasks_blocked()
            assert receive.receive_nowait() == batch[2:4]
            room.give_back(2)
        assert receive.receive_nowait() == batch[4:]
    assert (counts.received, intake.held) == (5, [])


class BatchSource(Source):
    """Submits its messages with one submit_many, then stays open until stopped."""

    def __init__(self, batch: Sequence[Message]) -> None:
        super().__init__("batch", None)
        self.batch = list(batch)
        self.acknowledged: list[str] = []

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await intake.submit_many(self.batch)

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        self.acknowledged.extend(m.id for m in messages)


class GatedBatchEngine(WordlistEngine):
    """Takes batches; each waits for the gate; counts the lists it was handed."""

    def __init__(self) -> None:
        super().__init__("wordlist", WordlistConfig())
        self.gate = trio.Event()
        self.lists: list[int] = []

    async def moderate_many(self, messages: Sequence[Message]) -> list[Verdict | Exception]:
        self.lists.append(len(messages))
        await self.gate.wait()
        return await super().moderate_many(messages)


async def test_a_stop_during_a_blocked_submit_many_decides_every_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = GatedBatchEngine()
    source = BatchSource(messages(10, source="batch"))
    sink = RecordingSink()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=50),
                        Policy(PolicySection()), [sink], concurrency=3, queue_size=2)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            await trio.sleep(1)
            # Three in flight (the engine holds them), two in the intake, five waiting.
            assert sum(engine.lists) == 3
            assert pipeline.received == 5
            pipeline.stop_reading(30)
            await trio.sleep(1)
            engine.gate.set()
    assert sorted(d.message.id for d in sink.decisions) == sorted(f"m-{i}" for i in range(10))
    assert pipeline.received == 10
    assert all(n <= 3 for n in engine.lists)
    assert sorted(source.acknowledged) == sorted(f"m-{i}" for i in range(10))


class OneFailsEngine(WordlistEngine):
    """Takes batches; fails the messages whose text says "fail" (or the whole call)."""

    def __init__(self, raise_for_all: bool = False) -> None:
        super().__init__("primary", WordlistConfig(delete=("idiot",)))
        self.raise_for_all = raise_for_all
        self.lists: list[list[str]] = []

    async def moderate_many(self, messages: Sequence[Message]) -> list[Verdict | Exception]:
        self.lists.append([m.id for m in messages])
        if self.raise_for_all:
            raise RuntimeError("engine bug")
        return [EngineError("unavailable") if "fail" in m.text else self.verdict_for(m.text)
                for m in messages]


@pytest.mark.parametrize("raise_for_all", [False, True], ids=["one-fails", "call-raises"])
async def test_an_engine_failing_for_one_message_of_a_batch_falls_back_for_it_only(
    raise_for_all: bool,
) -> None:
    primary = OneFailsEngine(raise_for_all)
    fallback = WordlistEngine("fallback", WordlistConfig(flag=("fail",)))
    batch = [Message(id="a", text="hello", source="batch"),
             Message(id="b", text="please fail", source="batch"),
             Message(id="c", text="you idiot", source="batch")]
    sink = RecordingSink()
    chain = EngineChain([primary, fallback], "flag", timeout=5)
    pipeline = Pipeline([BatchSource(batch)], [primary, fallback], chain,
                        Policy(PolicySection()), [sink])
    with trio.fail_after(DEADLINE):
        summary = await pipeline.run()
    assert primary.lists == [["a", "b", "c"]]  # one call for the batch
    assert (summary.decided, summary.undecided) == (3, 0)
    got = {d.message.id: (d.verdict.engine, d.verdict.route, d.verdict.action)
           for d in sink.decisions}
    if raise_for_all:
        assert got == {"a": ("fallback", "fallback", "pass"),
                       "b": ("fallback", "fallback", "flag"),
                       "c": ("fallback", "fallback", "pass")}
        assert chain.failures["primary"] == 3
    else:
        assert got == {"a": ("primary", "local", "pass"),
                       "b": ("fallback", "fallback", "flag"),
                       "c": ("primary", "local", "delete")}
        assert chain.failures["primary"] == 1


class PolicyFailingFor(Policy):
    """Raises for the message ids in ``failing`` (each id ``times`` times)."""

    def __init__(self, failing: set[str], times: int) -> None:
        super().__init__(PolicySection())
        self.left = dict.fromkeys(failing, times)

    def decide(self, message: Message, verdict: Verdict, latency_ms: float) -> Decision:
        if self.left.get(message.id, 0) > 0:
            self.left[message.id] -= 1
            raise RuntimeError("policy bug")
        return super().decide(message, verdict, latency_ms)


@pytest.mark.parametrize("times", [1, 2], ids=["once", "always"])
async def test_a_batch_with_a_message_whose_policy_raises(tmp_path: Path, times: int) -> None:
    source = BatchSource(messages(6, source="batch"))
    engine = WordlistEngine("wordlist", WordlistConfig())
    sink = RecordingSink()
    path = tmp_path / "dead.jsonl"
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        PolicyFailingFor({"m-2"}, times), [sink],
                        dead_letters=DeadLetters(DeadLettersSection(path=str(path))))
    with trio.fail_after(DEADLINE):
        summary = await pipeline.run()
    decided = sorted(d.message.id for d in sink.decisions)
    assert pipeline.message_failures == times
    if times == 1:  # the second attempt decides it
        assert decided == [f"m-{i}" for i in range(6)]
        assert (summary.decided, summary.dead_lettered) == (6, 0)
        assert not path.exists() or path.read_bytes() == b""
    else:
        assert decided == ["m-0", "m-1", "m-3", "m-4", "m-5"]
        assert (summary.decided, summary.dead_lettered, summary.undecided) == (5, 1, 0)
        [record] = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        assert record["message"]["id"] == "m-2"
    assert sorted(source.acknowledged) == [f"m-{i}" for i in range(6)]


class ListStreamer(StreamingEngine[None]):
    """Streams; ``submit`` raises for texts saying "bug" and answers "twice" texts twice.
    Does not override ``submit_many``: the default must work."""

    def __init__(self) -> None:
        super().__init__("streamer", None)
        self.asked: list[str] = []

    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        if "bug" in message.text:
            raise RuntimeError("submit bug")
        self.asked.append(message.id)
        on_result(Verdict("pass", 0.1, self.name, "ws"))
        if "twice" in message.text:
            on_result(Verdict("delete", 0.9, self.name, "ws"))

    async def moderate(self, message: Message) -> Verdict:
        raise AssertionError("a streaming primary is fed through submit")


class ManyStreamer(ListStreamer):
    """Overrides ``submit_many``: records the lists, then raises part-way through one."""

    def __init__(self) -> None:
        super().__init__()
        self.lists: list[list[str]] = []

    async def submit_many(self, messages: Sequence[Message],
                          on_result: BatchResultCallback) -> None:
        self.lists.append([m.id for m in messages])
        for index, message in enumerate(messages):
            if "bug" in message.text:
                raise RuntimeError("submit_many bug")
            on_result(index, Verdict("pass", 0.1, self.name, "ws"))


@pytest.mark.parametrize("engine_type", [ListStreamer, ManyStreamer])
async def test_a_streaming_batch_each_message_decided_once(
    engine_type: type[ListStreamer],
) -> None:
    primary = engine_type()
    fallback = WordlistEngine("fallback", WordlistConfig())
    batch = [Message(id=str(i), text=("bug" if i == 3 else "twice" if i == 5 else "ok"),
                     source="batch") for i in range(8)]
    sink = RecordingSink()
    pipeline = Pipeline([BatchSource(batch)], [primary, fallback],
                        EngineChain([primary, fallback], "flag", timeout=5),
                        Policy(PolicySection()), [sink])
    assert pipeline.streaming
    with trio.fail_after(DEADLINE):
        summary = await pipeline.run()
    assert (summary.decided, summary.undecided) == (8, 0)
    assert sorted(int(d.message.id) for d in sink.decisions) == list(range(8))
    routes = {d.message.id: (d.verdict.engine, d.verdict.action) for d in sink.decisions}
    assert routes["3"] == ("fallback", "pass")
    if isinstance(primary, ManyStreamer):
        # One list; what it had not answered when it raised falls back.
        assert primary.lists == [[str(i) for i in range(8)]]
        assert {routes[str(i)][0] for i in range(3)} == {"streamer"}
        assert {routes[str(i)][0] for i in range(3, 8)} == {"fallback"}
    else:
        assert routes["5"] == ("streamer", "pass")  # the first answer stands
    assert pipeline.in_flight == 0


class VerdictListStreamer(ListStreamer):
    """Settles in lists (as Chatsight's engine settles one read's replies): each list's
    verdicts told at once through ``on_verdicts``, in two parts, the first message told twice
    (once in each part); a "fail" text is told its error through ``on_result``."""

    settles_in_lists = True

    def __init__(self) -> None:
        super().__init__()
        self.told_at_once: list[list[int]] = []

    async def submit_many(self, messages: Sequence[Message], on_result: BatchResultCallback,
                          on_verdicts: VerdictsCallback | None = None) -> None:
        assert on_verdicts is not None
        told = []
        for index, message in enumerate(messages):
            if "fail" in message.text:
                on_result(index, EngineError("no verdict"))
            else:
                told.append((index, Verdict("pass", 0.1, self.name, "ws")))
        half = len(told) // 2
        for part in (told[:half] + told[:1], told[half:] + told[:1]):
            self.told_at_once.append([index for index, _ in part])
            on_verdicts(part)


async def test_verdicts_told_in_lists_decide_each_message_once() -> None:
    primary = VerdictListStreamer()
    fallback = WordlistEngine("fallback", WordlistConfig())
    batch = [Message(id=str(i), text="fail" if i == 2 else "ok", source="batch")
             for i in range(7)]
    source = BatchSource(batch)
    sink = RecordingSink()
    pipeline = Pipeline([source], [primary, fallback],
                        EngineChain([primary, fallback], "flag", timeout=5),
                        PolicyFailingFor({"4"}, 1), [sink])
    with trio.fail_after(DEADLINE):
        summary = await pipeline.run()
    assert (summary.decided, summary.undecided) == (7, 0)
    routes = {d.message.id: d.verdict.engine for d in sink.decisions}
    assert sorted(routes, key=int) == [str(i) for i in range(7)]  # each once
    assert len(sink.decisions) == 7
    assert routes["2"] == "fallback"
    assert {routes[str(i)] for i in (0, 1, 3, 5, 6)} == {"streamer"}
    # "4": the policy raised in the list's loop; the retry decided it, the others went on.
    assert pipeline.message_failures == 1
    assert routes["4"] in {"streamer", "fallback"}
    assert primary.told_at_once == [[0, 1, 3, 0], [4, 5, 6, 0]]
    assert pipeline.in_flight == 0
    assert sorted(source.acknowledged, key=int) == [str(i) for i in range(7)]


def test_only_an_engine_whose_moderate_many_is_its_latest_word_takes_batches() -> None:
    class OnlyModerate(WordlistEngine):
        async def moderate(self, message: Message) -> Verdict:
            return Verdict("flag", 1.0, self.name, "local")

    class Both(OnlyModerate):
        async def moderate_many(self, messages: Sequence[Message]) -> list[Verdict | Exception]:
            return [Verdict("flag", 1.0, self.name, "local") for _ in messages]

    class Plain(Engine[None]):
        async def moderate(self, message: Message) -> Verdict:
            return Verdict("pass", 0.0, self.name, "local")

    assert takes_batches(WordlistEngine("w", WordlistConfig()))
    assert not takes_batches(OnlyModerate("w", WordlistConfig()))
    assert takes_batches(Both("w", WordlistConfig()))
    assert not takes_batches(Plain("p", None))


async def test_the_default_moderate_many_asks_each_concurrently_and_keeps_errors() -> None:
    class Mixed(Engine[None]):
        async def moderate(self, message: Message) -> Verdict:
            await trio.sleep(0.01)
            if message.id == "m-1":
                raise EngineError("down")
            return Verdict("pass", 0.0, self.name, "local")

    with trio.fail_after(DEADLINE):
        results = await Mixed("mixed", None).moderate_many(messages(3))
    assert [type(r).__name__ for r in results] == ["Verdict", "EngineError", "Verdict"]


async def test_a_lead_claimed_with_no_cache_keeps_nothing_once_a_cache_appears() -> None:
    engine = ListStreamer()
    chain = EngineChain([engine], "flag", timeout=5)  # no cache: the text needs no key
    told: list[object] = []
    lead = chain.claim(Message("1", "", "src"), told.append)
    assert isinstance(lead, Lead)
    chain.reconfigure_cache(10, 60.0)  # a reload turns the cache on meanwhile
    chain.primary_answered(lead, Verdict("delete", 1.0, engine.name, "ws"))
    assert chain.cache is not None
    assert chain.cache.statistics()["cache.size"] == 0  # not kept under an empty text
    assert told == []
