"""The pipeline's own cost: work it skips where that work costs more than it saves."""

from __future__ import annotations

import trio

from chatmod.config.sections import PolicySection
from chatmod.core.cache import VerdictCache
from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import Sink
from chatmod.core.pipeline import Pipeline
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.rules import Policy

from .helpers import ListSource, RecordingSink, messages


class TaskSteps(trio.abc.Instrument):
    """Counts the scheduler's task steps: each is a task switch."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1


def no_op_pipeline(source: ListSource, sink: Sink[None]) -> Pipeline:
    engine = WordlistEngine("wordlist", WordlistConfig())
    return Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                    Policy(PolicySection()), [sink])


async def test_an_engine_that_answers_at_once_costs_no_task_switch_per_message() -> None:
    # The moderation workers take from the intake and pass decisions on without a
    # checkpoint while there is work and room: a switch per message on each side of the
    # stage cost more than deciding the message (2.1 steps a message before, 0.75 after).
    count = 5000
    sink = RecordingSink()
    pipeline = no_op_pipeline(ListSource("a", messages(count, source="a")), sink)
    steps = TaskSteps()
    trio.lowlevel.add_instrument(steps)
    try:
        with trio.fail_after(20):
            summary = await pipeline.run()
    finally:
        trio.lowlevel.remove_instrument(steps)
    assert summary.decided == count
    assert sorted(d.message.id for d in sink.decisions) == sorted(f"m-{i}" for i in range(count))
    assert steps.steps < count


async def test_a_word_list_primary_is_asked_every_time_instead_of_cached() -> None:
    # Normalising a text for the cache key costs more than the word list's regex search:
    # the word list answers every message itself, the cache is never consulted.
    engine = WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))
    cache = VerdictCache(100, 60.0)
    chain = EngineChain([engine], "flag", timeout=5, cache=cache)
    sink = RecordingSink()
    source = ListSource("a", messages(50, text="you idiot", source="a"))
    pipeline = Pipeline([source], [engine], chain, Policy(PolicySection()), [sink])
    with trio.fail_after(10):
        summary = await pipeline.run()
    assert summary.decided == 50
    assert [d.verdict.route for d in sink.decisions] == ["local"] * 50
    assert [d.action for d in sink.decisions] == ["delete"] * 50
    assert cache.statistics() == {"cache.hits": 0, "cache.shared": 0, "cache.misses": 0,
                                  "cache.size": 0}
