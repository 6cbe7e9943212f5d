"""Asking an engine for the verdict of every labelled line (the trio edge of ``chatmod eval``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import trio

from chatmod.core.interfaces import Engine
from chatmod.core.model import Message
from chatmod.errors import EngineError
from chatmod.evaluation.metrics import ERROR

# Lines asked at once: enough to fill a micro-batching or pipelining engine, few enough for
# an API's rate limits.
EVAL_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the engine said of one line: its action and score, or ``error`` and why."""

    action: str
    score: float | None
    reason: str = ""


async def _ask(engine: Engine[Any], index: int, text: str, line_deadline: float) -> Outcome:
    message = Message(id=f"eval-{index}", text=text, source="eval")
    try:
        with trio.fail_after(line_deadline):
            verdict = await engine.moderate(message)
    except EngineError as exc:
        return Outcome(ERROR, None, str(exc))
    except trio.TooSlowError:
        return Outcome(ERROR, None, f"no verdict within {line_deadline:g}s")
    score = verdict.score
    if score is not None and not math.isfinite(score):
        score = None
    return Outcome(verdict.action, score)


async def ask_engine(engine: Engine[Any], texts: Sequence[str], *, line_deadline: float,
                     concurrency: int = EVAL_CONCURRENCY) -> list[Outcome]:
    """Start ``engine``, get an outcome for each text (in order), stop it. An engine that
    fails or is silent for ``line_deadline`` seconds on a line gives that line an ``error``
    outcome; an engine that cannot start raises."""
    outcomes: list[Outcome | None] = [None] * len(texts)
    send, receive = trio.open_memory_channel[int](concurrency)

    async def feed() -> None:
        async with send:
            for index in range(len(texts)):
                await send.send(index)

    async def work(indices: trio.MemoryReceiveChannel[int]) -> None:
        async with indices:
            async for index in indices:
                outcomes[index] = await _ask(engine, index, texts[index], line_deadline)

    async with trio.open_nursery() as engine_nursery:
        await engine_nursery.start(engine.run)
        async with trio.open_nursery() as workers:
            workers.start_soon(feed)
            async with receive:
                for _ in range(concurrency):
                    workers.start_soon(work, receive.clone())
        engine_nursery.cancel_scope.cancel()
    return [o if o is not None else Outcome(ERROR, None, "not asked") for o in outcomes]
