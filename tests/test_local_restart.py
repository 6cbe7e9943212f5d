"""The local engine under its supervisor: a run that fails after it started is started again
(the pipeline supervises every engine's ``run``, core/supervisor.py), and the new run must
serve. Every request taken gets exactly one answer: a verdict, or an EngineError (the engine
chain's fallback then decides it), also the ones made while the engine is down.

Real time (the model runs in a worker thread), bounded; the supervisor's restart delay is
short.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from chatmod.core.model import Message, Verdict
from chatmod.core.supervisor import Supervisor
from chatmod.errors import EngineError
from chatmod.plugins import local
from chatmod.plugins.local import LocalConfig, LocalEngine

from .helpers import eventually

DEADLINE = 20
GATE_TIMEOUT = 10.0
# The supervisor's first restart waits between half this and this: long enough for a request
# made while the engine is down to be seen failing at once.
RESTART_DELAY = 1.0


class GatedModel:
    """Scores by marker words (``bad``: 0.95), after ``gate`` is set; records each batch."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> list[float]:
        self.batches.append(list(texts))
        if not self.gate.wait(timeout=GATE_TIMEOUT):
            raise RuntimeError("never released")
        return [0.95 if "bad" in t else 0.1 for t in texts]


def msgs(*texts: str) -> list[Message]:
    return [Message(id=str(i), text=text, source="t") for i, text in enumerate(texts)]


def answers(results: Sequence[Verdict | Exception]) -> list[str]:
    return [r.action if isinstance(r, Verdict) else f"{type(r).__name__}: {r}" for r in results]


@pytest.mark.time_limit(DEADLINE + 5)
async def test_a_run_that_failed_is_restarted_and_serves_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = GatedModel()
    # A batch is full at three texts, and gathers them without a race (a long window).
    engine = LocalEngine("local", LocalConfig(batch_size=3, batch_window=1.0, rules=False),
                         predictor=model)
    # The run fails once, while it settles a batch: after the first request's texts have
    # their verdicts, before the second's (an internal that raises once).
    settle = local._settle
    calls = 0

    def settle_failing_once(*args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("injected failure")
        settle(*args)

    monkeypatch.setattr(local, "_settle", settle_failing_once)
    supervisor = Supervisor(initial_delay=RESTART_DELAY, max_delay=RESTART_DELAY)
    health = supervisor.health("engine", engine.name)
    run_ended = trio.Event()

    async def run_engine(*, task_status: trio.TaskStatus[None]) -> None:
        try:
            await engine.run(task_status=task_status)
        finally:
            run_ended.set()

    outcomes: dict[str, list[str]] = {}

    async def ask(key: str, *texts: str) -> None:
        outcomes[key] = answers(await engine.moderate_many(msgs(*texts)))

    stopped = "EngineError: local model failed: the local engine stopped"
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.supervise, "engine", engine.name, run_engine)
            nursery.start_soon(ask, "settled", "ok", "bad")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, "failed", "bad")  # fills the batch: scored with the first
            await eventually(lambda: len(model.batches) == 1)  # in the model now
            nursery.start_soon(ask, "queued", "bad", "ok")  # waits in the channel
            await trio.testing.wait_all_tasks_blocked()
            model.gate.set()
            await run_ended.wait()
            # Down until the supervisor starts it again: a request fails at once.
            with pytest.raises(EngineError, match="the local engine is not running"):
                await engine.moderate(msgs("bad")[0])
            await eventually(lambda: health.failures == 1 and not health.up)
            await eventually(lambda: health.restarts == 1 and health.up, within=DEADLINE)
            after = await engine.moderate_many(msgs("bad", "ok", "bad"))
            assert answers(after) == ["delete", "pass", "delete"]
            assert health.failures == 1  # and it keeps running
            nursery.cancel_scope.cancel()
    assert outcomes == {"settled": ["pass", "delete"], "failed": [stopped],
                        "queued": [stopped, stopped]}
    assert health.last_error == "RuntimeError: injected failure"
    assert [len(batch) for batch in model.batches] == [3, 3]


class Unprintable(Exception):
    """A model's error whose text cannot be had."""

    def __str__(self) -> str:
        raise ValueError("no text")


@pytest.mark.time_limit(DEADLINE + 5)
async def test_a_model_error_whose_text_fails_fails_its_batch_only() -> None:
    # Formatting the model's error for the answer raised in the run's except clause: the run
    # failed (and, supervised, restarted) for what is only a failing model call.
    def model(texts: Sequence[str]) -> list[float]:
        if any("boom" in t for t in texts):
            raise Unprintable
        return [0.95 if "bad" in t else 0.1 for t in texts]

    engine = LocalEngine("local", LocalConfig(rules=False), predictor=model)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            failed = await engine.moderate_many(msgs("boom", "bad"))
            after = await engine.moderate_many(msgs("bad", "ok"))
            nursery.cancel_scope.cancel()
    assert answers(failed) == ["EngineError: local model failed: Unprintable"] * 2
    assert answers(after) == ["delete", "pass"]
