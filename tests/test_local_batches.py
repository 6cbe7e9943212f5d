"""The local engine's ``moderate_many``: a list scored as one request (split past
``batch_size``, merged with other lists within ``batch_window``), the same verdicts as
``moderate`` gives, a model failure failing the texts of its batch only, and what a stopped
engine holds failing at once."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence

import pytest
import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError
from chatmod.plugins.local import LocalConfig, LocalEngine, Predictor, load_predictor

from .helpers import eventually
from .servers import missing

DEADLINE = 20
GATE_TIMEOUT = 10.0
# Lines the lexicon or the model has something to say about, and harmless ones.
PHRASES = ("hello friends", "you are a fucking idiot", "I know where you live", "k y s",
           "SH1T happens", "free robux at robux-free.xyz", "sick play!", "fuuuck", "gg",
           "@dana ur a worthless bitch", "n 1 g g e r", "what a great stream", "")


class Recorder:
    """Scores by marker words and records each batch; fails a batch holding ``boom``; waits
    for ``gate`` (when given) before scoring."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gate = gate

    def __call__(self, texts: Sequence[str]) -> list[float]:
        self.batches.append(list(texts))
        if self.gate is not None and not self.gate.wait(timeout=GATE_TIMEOUT):
            raise RuntimeError("never released")
        if any("boom" in t for t in texts):
            raise RuntimeError("model exploded")
        return [0.95 if "bad" in t else 0.1 for t in texts]

    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]


def msgs(*texts: str) -> list[Message]:
    return [Message(id=str(i), text=text, source="t") for i, text in enumerate(texts)]


async def start_stoppable(nursery: trio.Nursery, engine: LocalEngine) -> trio.CancelScope:
    """Start ``engine.run`` in ``nursery``; cancelling the scope returned stops the engine
    alone (as a reload retires it), the rest of the test going on."""
    running = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with running:
            await engine.run(task_status=task_status)

    await nursery.start(run)
    return running


def actions(results: Sequence[Verdict | Exception]) -> list[str]:
    return [r.action if isinstance(r, Verdict) else type(r).__name__ for r in results]


@pytest.fixture(scope="module")
def real_model() -> Predictor:
    if importlib.util.find_spec("profanity_check") is None:
        missing("the 'local' extra")
    return load_predictor()


@given(texts=st.lists(st.one_of(st.sampled_from(PHRASES), st.text(max_size=30)), min_size=1,
                      max_size=30),
       batch_size=st.integers(1, 8), chunk=st.integers(1, 10))
@example(texts=["gg", "gg", "fuuuck", "FUCK"], batch_size=3, chunk=1)
async def test_moderate_many_gives_the_verdicts_moderate_gives(
        real_model: Predictor, texts: list[str], batch_size: int, chunk: int) -> None:
    # Lists of ``chunk`` texts at once, split and merged into model batches of ``batch_size``,
    # against a moderate() call for each text: a verdict never depends on its batch.
    engine = LocalEngine("local", LocalConfig(batch_size=batch_size), predictor=real_model)
    messages = msgs(*texts)
    one_by_one: list[Verdict | None] = [None] * len(messages)
    in_lists: list[Verdict | Exception | None] = [None] * len(messages)

    async def one(index: int) -> None:
        one_by_one[index] = await engine.moderate(messages[index])

    async def many(start: int) -> None:
        part = messages[start:start + chunk]
        in_lists[start:start + chunk] = await engine.moderate_many(part)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            async with trio.open_nursery() as calls:
                for index in range(len(messages)):
                    calls.start_soon(one, index)
            async with trio.open_nursery() as calls:
                for start in range(0, len(messages), chunk):
                    calls.start_soon(many, start)
            nursery.cancel_scope.cancel()
    assert in_lists == one_by_one
    assert all(isinstance(v, Verdict) for v in in_lists)


async def test_a_list_larger_than_batch_size_is_split_in_order(
        autojump_clock: trio.testing.MockClock) -> None:
    predictor = Recorder()
    engine = LocalEngine("local", LocalConfig(batch_size=3, rules=False), predictor=predictor)
    texts = ["ok 0", "bad 1", "ok 2", "bad 3", "ok 4", "ok 5", "bad 6"]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        results = await engine.moderate_many(msgs(*texts))
        nursery.cancel_scope.cancel()
    assert predictor.batches == [texts[0:3], texts[3:6], texts[6:]]
    assert actions(results) == ["pass", "delete", "pass", "delete", "pass", "pass", "delete"]
    assert [r.scores for r in results if isinstance(r, Verdict)][1] == {"profanity": 0.95}
    assert engine.statistics() == {"batches": 3, "predicted": 7, "largest_batch": 3}


async def test_lists_arriving_within_the_window_share_a_model_call(
        autojump_clock: trio.testing.MockClock) -> None:
    predictor = Recorder()
    engine = LocalEngine("local", LocalConfig(batch_size=100, batch_window=0.010, rules=False),
                         predictor=predictor)
    results: dict[int, list[Verdict | Exception]] = {}

    async def ask(index: int, texts: list[str]) -> None:
        await trio.sleep(0.001 * index)  # within the first list's window
        results[index] = await engine.moderate_many(msgs(*texts))

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        async with trio.open_nursery() as calls:
            for index in range(3):
                calls.start_soon(ask, index, [f"ok {index}", f"bad {index}"])
        nursery.cancel_scope.cancel()
    assert predictor.sizes() == [6]
    assert [actions(results[i]) for i in range(3)] == [["pass", "delete"]] * 3


async def test_merged_lists_split_where_the_batch_is_full(
        autojump_clock: trio.testing.MockClock) -> None:
    predictor = Recorder()
    engine = LocalEngine("local", LocalConfig(batch_size=4, batch_window=0.010, rules=False),
                         predictor=predictor)
    lists = [["ok a", "bad a", "ok a"], ["bad b", "ok b", "bad b"], ["ok c", "ok c", "bad c"]]
    results: dict[int, list[Verdict | Exception]] = {}

    async def ask(index: int) -> None:
        await trio.sleep(0.001 * index)
        results[index] = await engine.moderate_many(msgs(*lists[index]))

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        async with trio.open_nursery() as calls:
            for index in range(3):
                calls.start_soon(ask, index)
        nursery.cancel_scope.cancel()
    # The second list is split over the first two batches, the third over the last two.
    assert predictor.batches == [["ok a", "bad a", "ok a", "bad b"],
                                 ["ok b", "bad b", "ok c", "ok c"], ["bad c"]]
    assert [actions(results[i]) for i in range(3)] == [["pass", "delete", "pass"],
                                                       ["delete", "pass", "delete"],
                                                       ["pass", "pass", "delete"]]


async def test_a_model_failure_fails_the_texts_of_its_batch_only(
        autojump_clock: trio.testing.MockClock) -> None:
    predictor = Recorder()
    engine = LocalEngine("local", LocalConfig(batch_size=2, rules=False), predictor=predictor)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        results = await engine.moderate_many(msgs("ok", "bad", "boom", "ok", "bad"))
        with pytest.raises(EngineError, match="local model failed: RuntimeError: model"):
            await engine.moderate(msgs("boom")[0])
        after = await engine.moderate_many(msgs("bad", "ok"))  # it goes on scoring
        nursery.cancel_scope.cancel()
    assert predictor.sizes() == [2, 2, 1, 1, 2]
    assert actions(results) == ["pass", "delete", "EngineError", "EngineError", "delete"]
    error = results[2]
    assert isinstance(error, EngineError)
    assert str(error) == "local model failed: RuntimeError: model exploded"
    assert actions(after) == ["delete", "pass"]


async def test_an_empty_list_asks_nothing() -> None:
    predictor = Recorder()
    engine = LocalEngine("local", LocalConfig(), predictor=predictor)
    with trio.fail_after(DEADLINE):
        assert await engine.moderate_many([]) == []  # not even running: nothing to wait for
    assert predictor.batches == []


async def test_what_a_stopped_engine_holds_fails_at_once() -> None:
    # A reload retires the engine once nothing waits on it, or after a grace period: what it
    # still holds then must fail (to the fallback), not wait for the chain's timeout.
    release = threading.Event()
    predictor = Recorder(gate=release)
    engine = LocalEngine("local", LocalConfig(batch_size=2, rules=False), predictor=predictor)
    outcomes: dict[str, object] = {}

    async def ask_many(key: str, texts: list[str]) -> None:
        outcomes[key] = actions(await engine.moderate_many(msgs(*texts)))

    async def ask_one(key: str, text: str) -> None:
        try:
            outcomes[key] = (await engine.moderate(msgs(text)[0])).action
        except EngineError as exc:
            outcomes[key] = str(exc)

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            running = await start_stoppable(nursery, engine)
            nursery.start_soon(ask_many, "scoring", ["ok", "bad"])
            await eventually(lambda: len(predictor.batches) == 1)  # in the model now
            nursery.start_soon(ask_many, "queued", ["bad", "ok", "bad"])
            nursery.start_soon(ask_one, "one", "bad")
            await trio.testing.wait_all_tasks_blocked()
            running.cancel()
            release.set()  # the batch being scored finishes; the rest fails
        await ask_one("after", "bad")
    assert outcomes == {"scoring": ["pass", "delete"],
                        "queued": ["EngineError"] * 3,
                        "one": "local model failed: the local engine stopped",
                        "after": "the local engine is not running"}
    assert predictor.sizes() == [2]


def test_the_lexicon_reuses_the_normalisation_made_for_the_cache_key() -> None:
    # The daemon normalises a line for the verdict cache's key, then the engine's lexicon
    # does again in its worker thread: the second is a lookup.
    from chatmod import textnorm
    from chatmod.abuse.detect import Lexicon
    from chatmod.core.cache import normalise

    memo = textnorm._fold_and_deobfuscate_memo
    lexicon = Lexicon.shipped()
    text = "y o u  are a fuuuucking 1d10t, said test_local_batches"
    before = memo.cache_info()
    key = normalise(text)
    lexicon.assess(text)
    after = memo.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert key == textnorm.squeeze_repeats(textnorm._fold_and_deobfuscate(text)[1])
    # A line longer than chat's is not kept: what the memo holds stays small.
    long_line = "x" * (textnorm.FOLD_MEMO_MAX_CHARS + 1)
    assert textnorm.fold_and_deobfuscate(long_line) == textnorm._fold_and_deobfuscate(long_line)
    assert memo.cache_info().misses == after.misses
