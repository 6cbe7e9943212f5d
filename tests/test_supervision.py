"""Supervised components: a source, sink or engine that fails is restarted, counted and shown
down; a message that fails twice goes to the dead letters; nothing read is lost."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from chatmod.config.sections import DeadLettersSection, PolicySection
from chatmod.core.dead_letters import DeadLetters
from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import Intake, ResultCallback, Source, StreamingEngine
from chatmod.core.model import Decision, Message, Verdict
from chatmod.core.pipeline import Pipeline
from chatmod.core.report import RunSummary
from chatmod.core.supervisor import Supervisor, describe
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.rules import Policy

from .helpers import ListSource, RecordingSink, messages


class Boom(RuntimeError):
    pass


async def test_a_component_failing_after_start_is_restarted_with_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(initial_delay=1.0, max_delay=4.0)
    starts: list[float] = []
    health_while_waiting: list[bool] = []

    async def flaky(*, task_status: trio.TaskStatus[str]) -> None:
        starts.append(trio.current_time())
        task_status.started("port")
        await trio.sleep(0.5)
        if len(starts) < 4:
            health_while_waiting.append(supervisor.health("sink", "flaky").up)
            raise Boom(f"failure {len(starts)}")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(supervisor.supervise, "sink", "flaky", flaky) == "port"
    health = supervisor.health("sink", "flaky")
    assert (health.failures, health.restarts) == (3, 3)
    assert health.last_error == "Boom: failure 3"
    assert health_while_waiting == [True, True, True]
    # Each restart waits a jittered backoff: in [delay / 2, delay], doubling up to the cap.
    gaps = [b - a - 0.5 for a, b in itertools.pairwise(starts)]
    for gap, ceiling in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert ceiling / 2 <= gap <= ceiling
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert errors[0].startswith("sink flaky failed: Boom: failure 1; restarting in ")


async def test_health_is_down_between_a_failure_and_the_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    supervisor = Supervisor(initial_delay=10.0, max_delay=10.0)
    failed = trio.Event()

    async def fails_once(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        if not failed.is_set():
            failed.set()
            raise Boom("once")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.supervise, "engine", "e", fails_once)
        await failed.wait()
        await trio.sleep(1)
        assert [c.label for c in supervisor.down()] == ["engine e"]
        assert supervisor.statistics()["engine.e.up"] == 0.0
        await trio.sleep(10)
        assert supervisor.down() == []
        assert supervisor.statistics() == {
            "engine.e.up": 1.0, "engine.e.failures": 1, "engine.e.restarts": 1}
        nursery.cancel_scope.cancel()


async def test_a_failure_before_ready_is_the_callers_error() -> None:
    supervisor = Supervisor()

    async def cannot_start(*, task_status: trio.TaskStatus[None]) -> None:
        raise Boom("port in use")

    with pytest.raises(BaseException) as caught:  # noqa: PT011 - a group or the error itself
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.supervise, "http", "server", cannot_start)
    assert describe(caught.value) == "Boom: port in use"
    assert supervisor.health("http", "server").failures == 0


def test_describe_never_gives_an_empty_reason() -> None:
    assert describe(OSError()) == "OSError"
    assert describe(ExceptionGroup("x", [ValueError("bad")])) == "ValueError: bad"


class FailingOnceSource(Source):
    """Submits its messages; after ``fail_after`` of them it raises once, then goes on."""

    def __init__(self, items: Sequence[Message], fail_after: int) -> None:
        super().__init__("flaky", None)
        self.items = list(items)
        self.fail_after = fail_after
        self.position = 0
        self.runs = 0
        self.acknowledged: list[str] = []

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.runs += 1
        task_status.started()
        while self.position < len(self.items):
            if self.runs == 1 and self.position == self.fail_after:
                raise Boom("lost the connection")
            await intake.submit(self.items[self.position])
            self.position += 1

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        self.acknowledged.extend(m.id for m in messages)


def wordlist() -> WordlistEngine:
    return WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))


async def test_a_failing_source_is_restarted_and_its_messages_all_decided(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = FailingOnceSource(messages(50), fail_after=20)
    sink = RecordingSink()
    engine = wordlist()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        Policy(PolicySection()), [sink])
    with trio.fail_after(60):
        summary = await pipeline.run()
    assert source.runs == 2
    assert (summary.received, summary.decided, summary.undecided) == (50, 50, 0)
    assert sorted(d.message.id for d in sink.decisions) == sorted(f"m-{i}" for i in range(50))
    assert pipeline.supervisor.health("source", "flaky").failures == 1


class CrashingRunSink(RecordingSink):
    """Its background task fails once, a while after start."""

    def __init__(self) -> None:
        super().__init__("crashing")
        self.runs = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        task_status.started()
        if self.runs == 1:
            await trio.sleep(1)
            raise Boom("background flush failed")
        await trio.sleep_forever()


class CrashingRunEngine(WordlistEngine):
    def __init__(self) -> None:
        super().__init__("wordlist", WordlistConfig(delete=("idiot",)))
        self.runs = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        task_status.started()
        if self.runs == 1:
            await trio.sleep(1)
            raise Boom("model reload failed")
        await trio.sleep_forever()


async def test_failing_sink_and_engine_tasks_are_restarted_while_messages_flow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = ListSource("slow", [])
    sink = CrashingRunSink()
    engine = CrashingRunEngine()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        Policy(PolicySection()), [sink])

    class Trickle(Source):
        async def run(self, intake: Intake, *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            for message in messages(30):
                await intake.submit(message)
                await trio.sleep(0.1)  # virtual time: spread over the failures

    pipeline.sources = {"slow": Trickle("slow", None)}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            await trio.sleep(10)  # virtual: the 30 messages take 3 s, the restarts < 2 s
            assert len(sink.decisions) == 30
            assert sink.runs == 2
            assert engine.runs == 2
            assert pipeline.supervisor.down() == []
            pipeline.stop_reading(5)
    assert pipeline.supervisor.health("sink", "crashing").failures == 1
    assert pipeline.supervisor.health("engine", "wordlist").failures == 1
    assert len({d.message.id for d in sink.decisions}) == 30


class BrokenPolicy(Policy):
    """Fails on every message whose text says "poison"."""

    def decide(self, message: Message, verdict: Verdict, latency_ms: float) -> Decision:
        if "poison" in message.text:
            raise Boom("policy bug")
        return super().decide(message, verdict, latency_ms)


class StreamingWordlist(WordlistEngine, StreamingEngine[WordlistConfig]):
    """The wordlist as a streaming engine (answers from submit)."""

    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        on_result(await self.moderate(message))


@pytest.mark.parametrize("streaming", [False, True], ids=["awaited", "streaming"])
async def test_a_message_that_fails_twice_goes_to_the_dead_letters(
    tmp_path: Path, streaming: bool,
) -> None:
    source = ListSource("a", [Message(id="m-1", text="hello", source="a"),
                              Message(id="m-2", text="poison pill", source="a"),
                              Message(id="m-3", text="you idiot", source="a")])
    engine: WordlistEngine = StreamingWordlist("wordlist", WordlistConfig(delete=("idiot",))) \
        if streaming else wordlist()
    sink = RecordingSink()
    path = tmp_path / "dead.jsonl"
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        BrokenPolicy(PolicySection()), [sink],
                        dead_letters=DeadLetters(DeadLettersSection(path=str(path))))
    assert pipeline.streaming is streaming
    with trio.fail_after(20):
        summary = await pipeline.run()
    assert sorted(d.message.id for d in sink.decisions) == ["m-1", "m-3"]
    assert (summary.received, summary.decided, summary.dead_lettered, summary.undecided) == (
        3, 2, 1, 0)
    assert pipeline.message_failures == 2
    [record] = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert record["component"] == "pipeline"
    assert record["error"] == "Boom: policy bug"
    assert record["message"]["id"] == "m-2"
    assert sorted(source.acknowledged) == ["m-1", "m-2", "m-3"]


class RaisingSubmitEngine(StreamingWordlist):
    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        raise Boom("submit bug")


async def test_a_streaming_engine_whose_submit_raises_falls_back() -> None:
    primary = RaisingSubmitEngine("broken", WordlistConfig())
    fallback = WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))
    sink = RecordingSink()
    pipeline = Pipeline([ListSource("a", messages(5, text="you idiot", source="a"))],
                        [primary, fallback],
                        EngineChain([primary, fallback], "flag", timeout=5),
                        Policy(PolicySection()), [sink])
    with trio.fail_after(20):
        summary = await pipeline.run()
    assert (summary.decided, summary.undecided) == (5, 0)
    assert {(d.verdict.engine, d.verdict.route, d.action) for d in sink.decisions} == {
        ("wordlist", "fallback", "delete")}


async def test_a_failing_observer_costs_no_decision() -> None:
    sink = RecordingSink()
    engine = wordlist()
    pipeline = Pipeline([ListSource("a", messages(10, source="a"))], [engine],
                        EngineChain([engine], "flag", timeout=5), Policy(PolicySection()), [sink])

    def observer(batch: Sequence[Decision]) -> None:
        raise Boom("stats store bug")

    pipeline.observers.append(observer)
    with trio.fail_after(20):
        summary = await pipeline.run()
    assert summary.decided == 10
    assert pipeline.observer_failures >= 1


class BlockedSource(Source):
    """Reads four messages at once and submits them one by one (taking each off its list
    first, as the contract asks); what it has not submitted at the stop waits for
    hand_over."""

    def __init__(self) -> None:
        super().__init__("batch", None)
        self.pending = messages(4, source="batch")
        self.handed_over = False

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while self.pending:
            await intake.submit(self.pending.pop(0))
        await trio.sleep_forever()

    async def hand_over(self, intake: Intake) -> None:
        self.handed_over = True
        while self.pending:
            await intake.submit(self.pending.pop(0))

    def unsubmitted(self) -> int:
        return len(self.pending)


async def test_stop_hands_over_what_a_source_read_but_had_not_submitted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()

    class GatedEngine(WordlistEngine):
        async def moderate(self, message: Message) -> Verdict:
            await gate.wait()
            return await super().moderate(message)

    engine = GatedEngine("wordlist", WordlistConfig())
    source = BlockedSource()
    sink = RecordingSink()
    # One worker and room for one message: the source blocks in submit at its third.
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=50),
                        Policy(PolicySection()), [sink], concurrency=1, queue_size=1)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            await trio.sleep(1)
            # m-0 with the worker, m-1 queued, m-2 in a blocked submit, m-3 not submitted.
            assert [m.id for m in source.pending] == ["m-3"]
            assert pipeline.received == 2
            pipeline.stop_reading(30)
            await trio.sleep(1)
            gate.set()
    assert source.handed_over
    assert sorted(d.message.id for d in sink.decisions) == ["m-0", "m-1", "m-2", "m-3"]
    assert pipeline.received == 4


async def test_what_could_not_be_handed_over_is_counted_undecided(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class NeverHandsOver(BlockedSource):
        async def hand_over(self, intake: Intake) -> None:
            await trio.sleep_forever()  # e.g. a line whose end never comes

    class StuckEngine(WordlistEngine):
        async def moderate(self, message: Message) -> Verdict:
            await trio.sleep_forever()
            raise AssertionError("unreachable")

    engine = StuckEngine("wordlist", WordlistConfig())
    source = NeverHandsOver()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=1000),
                        Policy(PolicySection()), [RecordingSink()], concurrency=1,
                        queue_size=1)
    summaries: list[RunSummary] = []

    async def run() -> None:
        summaries.append(await pipeline.run())

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await trio.sleep(1)
            pipeline.stop_reading(5)
    [summary] = summaries
    # m-0 is with the worker and m-1 in the queue: received; m-2 was in a cancelled submit
    # (held by the intake), m-3 still with the source: all four undecided.
    assert (summary.received, summary.decided, summary.undecided) == (2, 0, 4)
    assert trio.current_time() == pytest.approx(6, abs=0.01)  # the drain deadline


class SubmitCancelledSource(Source):
    """Submits forever; whatever submit was cancelled on is kept by the intake."""

    def __init__(self) -> None:
        super().__init__("endless", None)
        self.count = 0

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await intake.submit(Message(id=f"e-{self.count}", text="hi", source="endless"))
            self.count += 1


async def test_a_submit_cancelled_by_the_stop_is_still_decided(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = SlowWordlist()
    source = SubmitCancelledSource()
    sink = RecordingSink()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=50),
                        Policy(PolicySection()), [sink], concurrency=2, queue_size=2)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            await trio.sleep(3.05)
            pipeline.stop_reading(60)
    # Every message whose submit began was decided: the counted ones and the one held.
    assert len(sink.decisions) == pipeline.received == source.count + 1
    assert len({d.message.id for d in sink.decisions}) == len(sink.decisions)


class SlowWordlist(WordlistEngine):
    def __init__(self) -> None:
        super().__init__("wordlist", WordlistConfig())

    async def moderate(self, message: Message) -> Verdict:
        await trio.sleep(1)
        return await super().moderate(message)


async def test_a_stop_during_start_up_ends_the_run_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class SlowStartingEngine(WordlistEngine):
        """Starts in 5 s, like a model that loads."""

        async def run(self, *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            await trio.sleep(5)
            task_status.started()

    engine = SlowStartingEngine("wordlist", WordlistConfig())
    source = ListSource("a", messages(3, source="a"))
    summaries: list[RunSummary] = []

    async def run() -> None:
        summaries.append(await pipeline.run())

    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        Policy(PolicySection()), [RecordingSink()])
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await trio.sleep(1)
            pipeline.stop_reading(10)  # SIGTERM while the engine still loads
    [summary] = summaries
    assert summary.stop_requested
    # What the source managed to hand over before its first checkpoint is decided.
    assert summary.received == summary.decided == source.submitted
    assert summary.undecided == 0
