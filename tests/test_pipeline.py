from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from chatmod.config.sections import PolicySection
from chatmod.core.cache import VerdictCache
from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import Engine, ResultCallback, Sink, StreamingEngine
from chatmod.core.model import Decision, Message, Verdict
from chatmod.core.pipeline import Pipeline
from chatmod.errors import EngineError
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.rules import Policy

from .helpers import ListSource, RecordingSink, messages


class SlowEngine(Engine):
    def __init__(self, delay: float) -> None:
        super().__init__("slow", None)
        self.delay = delay

    async def moderate(self, message: Message) -> Verdict:
        await trio.sleep(self.delay)
        return Verdict("pass", 0.0, self.name, "ws")


class GatedSink(Sink):
    """Blocks every write until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__("gated", None)
        self.gate = trio.Event()
        self.written = 0

    async def write(self, decisions: Sequence[Decision]) -> None:
        await self.gate.wait()
        self.written += len(decisions)


def make_pipeline(
    sources: list[ListSource],
    sinks: list[Sink],
    engine: Engine | None = None,
    engine_timeout: float = 5,
    **kwargs: int,
) -> Pipeline:
    engine = engine or WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))
    return Pipeline(sources, [engine], EngineChain([engine], "flag", timeout=engine_timeout),
                    Policy(PolicySection()), sinks, **kwargs)


async def test_every_message_gets_exactly_one_decision_and_is_acknowledged() -> None:
    first = ListSource("a", messages(300, source="a"))
    second = ListSource("b", messages(200, text="you idiot", source="b"))
    sinks = [RecordingSink("one"), RecordingSink("two")]
    pipeline = make_pipeline([first, second], list(sinks), concurrency=7, queue_size=5)
    summary = await pipeline.run()
    assert (summary.received, summary.decided, summary.undecided) == (500, 500, 0)
    for sink in sinks:
        ids = Counter((d.message.source, d.message.id) for d in sink.decisions)
        assert len(ids) == 500
        assert set(ids.values()) == {1}
        assert sink.closed
    assert sorted(first.acknowledged) == sorted(m.id for m in first.messages)
    assert len(second.acknowledged) == 200
    actions = Counter(d.action for d in sinks[0].decisions)
    assert actions == {"none": 300, "delete": 200}


async def test_slow_sink_makes_sources_wait(autojump_clock: trio.testing.MockClock) -> None:
    source = ListSource("a", messages(1000))
    sink = GatedSink()
    pipeline = make_pipeline([source], [sink], concurrency=4, queue_size=8)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        await trio.sleep(10)
        # Held: one batch in the sink (at most what the decision queue, the workers waiting
        # to send and the one handed straight to the waiting sink stage hold: 8 + 4 + 1),
        # the decision queue refilled, the workers, the intake queue, the source's one.
        bound = (8 + 4 + 1) + 8 + 4 + 8 + 1
        assert 0 < source.submitted <= bound
        sink.gate.set()
    assert sink.written == 1000
    assert source.submitted == 1000


async def test_failing_sink_does_not_stop_the_others_and_nothing_is_acknowledged() -> None:
    source = ListSource("a", messages(20))
    good, bad = RecordingSink("good"), RecordingSink("bad", fail=True)
    pipeline = make_pipeline([source], [bad, good])
    summary = await pipeline.run()
    assert len(good.decisions) == 20
    assert summary.decided == 20
    assert source.acknowledged == []
    assert pipeline.statistics()["sink_failures.bad"] == 20
    assert pipeline.statistics()["unacknowledged"] == 20


async def test_stop_reading_drains_in_flight_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = ListSource("a", messages(10), stay_open=True)
    sink = RecordingSink()
    pipeline = make_pipeline([source], [sink], engine=SlowEngine(delay=3), concurrency=100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pipeline.run)
        await trio.sleep(1)
        assert source.submitted == 10
        assert not sink.decisions
        start = trio.current_time()
        pipeline.stop_reading(drain_timeout=30)
    assert trio.current_time() - start == pytest.approx(2)  # the engine's remaining 2 s
    assert len(sink.decisions) == 10
    assert sink.closed


async def test_drain_timeout_stops_and_reports_undecided(
    autojump_clock: trio.testing.MockClock,
) -> None:
    source = ListSource("a", messages(10), stay_open=True)
    sink = RecordingSink()
    pipeline = make_pipeline([source], [sink], engine=SlowEngine(delay=3600),
                             engine_timeout=7200, concurrency=100)
    result: list[object] = []

    async def run() -> None:
        result.append(await pipeline.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.sleep(1)
        start = trio.current_time()
        pipeline.stop_reading(drain_timeout=5)
    assert trio.current_time() - start == pytest.approx(5)
    summary = result[0]
    assert summary.undecided == 10
    assert summary.stop_requested
    assert sink.closed


async def test_latency_histogram_by_engine_and_route(
        autojump_clock: trio.testing.MockClock) -> None:
    source = ListSource("a", messages(100))
    pipeline = make_pipeline([source], [RecordingSink()], engine=SlowEngine(delay=0.3))
    await pipeline.run()
    [(engine, route, histogram)] = list(pipeline.latency.items())
    assert (engine, route, histogram.count) == ("slow", "ws", 100)
    assert histogram.sum_ms == pytest.approx(100 * 300)
    # Estimated within the bucket that holds 300 ms: (250, 500].
    stats = pipeline.statistics()
    assert 250 < stats["latency_ms.p50.ws"] <= 500
    assert 250 < stats["latency_ms.p99.ws"] <= 500


class Streamer(StreamingEngine[None]):
    """Streams like Chatsight: answers through the callback; counts what it was asked."""

    def __init__(self) -> None:
        super().__init__("streamer", None)
        self.asked: list[str] = []

    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        self.asked.append(message.id)
        on_result(Verdict("pass", 0.1, self.name, "ws"))

    async def moderate(self, message: Message) -> Verdict:
        raise AssertionError("a streaming primary is fed through submit")


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_verdict_the_source_brought_is_used_without_asking_an_engine(
        streaming: bool) -> None:
    brought = Verdict("delete", 0.9, "chatsight", "voice")
    source = ListSource("voice", [Message(id="s-1", text="said", source="voice", verdict=brought),
                                  Message(id="s-2", text="typed", source="voice")])
    sink = RecordingSink()
    engine: Engine = Streamer() if streaming else WordlistEngine(
        "wordlist", WordlistConfig(delete=("idiot",)))
    summary = await make_pipeline([source], [sink], engine=engine).run()
    assert summary.decided == 2
    by_id = {d.message.id: d for d in sink.decisions}
    assert by_id["s-1"].verdict == brought
    assert by_id["s-1"].action == "delete"
    assert by_id["s-2"].verdict.engine == engine.name
    if isinstance(engine, Streamer):
        assert engine.asked == ["s-2"]


class HeldStreamingEngine(Streamer):
    """Holds each answer until the test gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[ResultCallback] = []
        self.asked_once = trio.Event()

    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        self.asked.append(message.id)
        self.held.append(on_result)
        self.asked_once.set()


@pytest.mark.parametrize("fails", [False, True])
async def test_streaming_identical_messages_share_the_lead_request_through_the_cache(
        fails: bool) -> None:
    engine = HeldStreamingEngine()
    raid = [Message(id=f"r-{i}", text="RAID  line" if i % 2 else "raid line", source="irc")
            for i in range(50)]
    sink = RecordingSink()
    chain = EngineChain([engine], "flag", timeout=5, cache=VerdictCache(100, 60))
    pipeline = Pipeline([ListSource("irc", raid)], [engine], chain, Policy(PolicySection()),
                        [sink])
    summaries = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async def run() -> None:
                summaries.append(await pipeline.run())

            nursery.start_soon(run)
            await engine.asked_once.wait()
            await trio.testing.wait_all_tasks_blocked()  # every other copy waits on the lead
            assert engine.asked == ["r-0"]
            (answer,) = engine.held
            answer(EngineError("down") if fails else Verdict("delete", 0.9, engine.name, "ws"))
    assert summaries[0].decided == 50
    routes = Counter(d.verdict.route for d in sink.decisions)
    # A failed lead: each waiting copy falls back (here to the last resort) on its own.
    assert routes == ({"failclosed": 50} if fails else {"ws": 1, "cache": 49})
    assert chain.cache is not None
    assert (chain.cache.misses, chain.cache.shared) == (1, 49)
