from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from chatmod.core.model import Message
from chatmod.errors import EngineError
from chatmod.plugins.local import LocalConfig, LocalEngine

from .helpers import eventually
from .servers import missing

GATE_TIMEOUT = 10.0


class FakePredictor:
    """Scores by a marker word and records each batch and the thread it ran in."""

    def __init__(self, gate: threading.Event | None = None, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.threads: set[int] = set()
        self.gate = gate
        self.fail = fail
        self.done = 0

    def __call__(self, texts: Sequence[str]) -> list[float]:
        self.batches.append(len(texts))
        self.threads.add(threading.get_ident())
        if self.gate is not None and not self.gate.wait(timeout=GATE_TIMEOUT):
            raise RuntimeError("never released: the event loop was blocked")
        if self.fail:
            raise RuntimeError("model exploded")
        self.done += 1
        return [0.95 if "bad" in t else 0.6 if "meh" in t else 0.1 for t in texts]


def msg(i: int, text: str) -> Message:
    return Message(id=str(i), text=text, source="t")


async def moderate_all(engine: LocalEngine, texts: list[str]) -> list[str]:
    results: dict[int, str] = {}

    async def one(i: int, text: str) -> None:
        results[i] = (await engine.moderate(msg(i, text))).action

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        async with trio.open_nursery() as calls:
            for i, text in enumerate(texts):
                calls.start_soon(one, i, text)
        nursery.cancel_scope.cancel()
    return [results[i] for i in range(len(texts))]


async def test_thresholds_map_probability_to_verdicts() -> None:
    # rules = false: the model's probability alone is the score.
    engine = LocalEngine("local", LocalConfig(rules=False), predictor=FakePredictor())
    assert await moderate_all(engine, ["fine", "meh", "bad"]) == ["pass", "flag", "delete"]


async def test_concurrent_messages_are_predicted_in_few_batches_off_the_loop() -> None:
    predictor = FakePredictor()
    # A long window: a batch closes when full, not when this machine is slow to fill it.
    engine = LocalEngine("local", LocalConfig(batch_size=100, batch_window=1.0, rules=False),
                         predictor=predictor)
    verdicts = await moderate_all(engine, ["bad" if i % 2 else "ok" for i in range(1000)])
    assert verdicts.count("delete") == 500
    assert sum(predictor.batches) == 1000
    assert len(predictor.batches) <= 12
    assert max(predictor.batches) == 100
    assert threading.get_ident() not in predictor.threads


async def test_batch_window_gathers_messages_arriving_close_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    predictor = FakePredictor()
    engine = LocalEngine("local", LocalConfig(batch_window=0.010), predictor=predictor)

    async def trickle(nursery: trio.Nursery) -> None:
        for i in range(5):
            nursery.start_soon(engine.moderate, msg(i, f"x {i}"))
            await trio.sleep(0.001)

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        async with trio.open_nursery() as calls:
            await trickle(calls)
        nursery.cancel_scope.cancel()
    assert predictor.batches == [5]


async def test_event_loop_keeps_running_while_the_model_predicts() -> None:
    # The prediction waits for the event loop to release it: on the loop's thread it would
    # wait for good (its own timeout then fails it).
    release = threading.Event()
    predictor = FakePredictor(gate=release)
    engine = LocalEngine("local", LocalConfig(), predictor=predictor)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        nursery.start_soon(engine.moderate, msg(1, "x"))
        await eventually(lambda: predictor.batches == [1])  # predicting now
        release.set()
        await eventually(lambda: predictor.done == 1)
        nursery.cancel_scope.cancel()
    assert threading.get_ident() not in predictor.threads


async def test_model_failure_is_an_engine_error() -> None:
    engine = LocalEngine("local", LocalConfig(), predictor=FakePredictor(fail=True))
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with pytest.raises(EngineError, match="local model failed: RuntimeError: model exploded"):
            await engine.moderate(msg(1, "x"))
        nursery.cancel_scope.cancel()


async def test_real_model_tells_insults_from_greetings() -> None:
    if importlib.util.find_spec("profanity_check") is None:
        missing("the 'local' extra")
    engine = LocalEngine("local", LocalConfig())
    verdicts = await moderate_all(engine, ["hello friends", "you are a fucking idiot"])
    assert verdicts[0] == "pass"
    assert verdicts[1] != "pass"


class RecordingPredictor(FakePredictor):
    """Also records the texts the model was given."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def __call__(self, texts: Sequence[str]) -> list[float]:
        self.texts.extend(texts)
        return super().__call__(texts)


async def test_composed_engine_the_model_alone_flags_the_lexicon_deletes() -> None:
    predictor = RecordingPredictor()
    engine = LocalEngine("local", LocalConfig(), predictor=predictor)
    texts = ["bad words here", "fine", "k y s", "sick play!", "SH1T happens"]
    with trio.fail_after(10):
        verdicts = await moderate_all(engine, texts)
    # The model's 0.95 for "bad" scales to a flag; "k y s" is the lexicon's self-harm.
    assert verdicts == ["flag", "pass", "delete", "pass", "flag"]
    # Normalised text reaches the model; a line of harmless phrases does not reach it.
    assert sorted(predictor.texts) == ["bad words here", "fine", "kys", "shit happens"]


async def test_composed_verdicts_say_what_matched() -> None:
    engine = LocalEngine("local", LocalConfig(), predictor=FakePredictor())
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with trio.fail_after(10):
            verdict = await engine.moderate(msg(1, "I know where you live"))
        nursery.cancel_scope.cancel()
    assert (verdict.action, verdict.score) == ("delete", 0.97)
    assert verdict.scores == {"profanity": 0.1, "category": "threat",
                              "matched": "know where you live"}


async def test_real_composed_engine_on_abuse_the_model_cannot_see() -> None:
    if importlib.util.find_spec("profanity_check") is None:
        missing("the 'local' extra")
    engine = LocalEngine("local", LocalConfig())
    texts = ["we got destroyed that round", "fuck, died again", "I will find you and hurt you",
             "n 1 g g e r", "free robux at robux-free.xyz", "sick play!"]
    with trio.fail_after(60):
        verdicts = await moderate_all(engine, texts)
    assert verdicts == ["pass", "flag", "delete", "delete", "delete", "pass"]


async def test_real_composed_engine_on_lines_that_fooled_it() -> None:
    # Game violence, a farming hoe, self-deprecation and numbers in words passed the lexicon
    # but not the model; phonetic spellings, spaced links and @mentions slipped past both.
    if importlib.util.find_spec("profanity_check") is None:
        missing("the 'local' extra")
    engine = LocalEngine("local", LocalConfig())
    texts = ["we will murder this raid boss tonight", "got the copper hoe for my farm",
             "i suck at aiming", "1v1 me after the top10 video", "phuck this lag",
             "grab free robux at r o b u x - g i f t . x y z", "@dana ur a worthless bitch"]
    with trio.fail_after(60):
        verdicts = await moderate_all(engine, texts)
    assert verdicts == ["pass", "pass", "pass", "pass", "flag", "delete", "delete"]
