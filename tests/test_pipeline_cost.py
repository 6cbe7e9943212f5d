"""The pipeline's own cost: work it skips where that work costs more than it saves."""

from __future__ import annotations

import trio

from chatmod.config.sections import PolicySection
from chatmod.core.cache import VerdictCache
from chatmod.core.engine_chain import EngineChain
from chatmod.core.pipeline import Pipeline
from chatmod.core.policy import Policy
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine

from .helpers import ListSource, RecordingSink, messages


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
