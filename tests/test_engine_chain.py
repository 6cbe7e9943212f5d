from __future__ import annotations

import pytest
import trio

from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import Engine
from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError

MESSAGE = Message(id="m", text="t", source="s")


class ScriptedEngine(Engine):
    def __init__(self, name: str, behaviour: str, delay: float = 0.0) -> None:
        super().__init__(name, None)
        self.behaviour = behaviour
        self.delay = delay
        self.calls = 0

    async def moderate(self, message: Message) -> Verdict:
        self.calls += 1
        await trio.sleep(self.delay)
        if self.behaviour == "error":
            raise EngineError("service unavailable")
        if self.behaviour == "bug":
            raise ZeroDivisionError("oops")
        return Verdict("delete", 1.0, self.name, "ws")


async def test_primary_answers() -> None:
    chain = EngineChain([ScriptedEngine("a", "ok")], "flag", timeout=1)
    verdict = await chain.moderate(MESSAGE)
    assert (verdict.engine, verdict.route) == ("a", "ws")


async def test_fallback_engine_answers_with_route_fallback() -> None:
    primary, backup = ScriptedEngine("a", "error"), ScriptedEngine("b", "ok")
    chain = EngineChain([primary, backup], "flag", timeout=1)
    verdict = await chain.moderate(MESSAGE)
    assert (verdict.engine, verdict.route) == ("b", "fallback")
    assert chain.statistics() == {"engine_failures.a": 1.0}


@pytest.mark.parametrize(("last_resort", "route"), [("pass", "failopen"), ("flag", "failclosed")])
async def test_every_engine_failing_gives_the_last_resort(last_resort: str, route: str) -> None:
    chain = EngineChain([ScriptedEngine("a", "error"), ScriptedEngine("b", "bug")],
                        last_resort, timeout=1)
    verdict = await chain.moderate(MESSAGE)
    assert (verdict.action, verdict.route, verdict.engine) == (last_resort, route, "none")


async def test_slow_engine_times_out_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    slow = ScriptedEngine("slow", "ok", delay=60)
    chain = EngineChain([slow, ScriptedEngine("b", "ok")], "flag", timeout=2.5)
    start = trio.current_time()
    verdict = await chain.moderate(MESSAGE)
    assert trio.current_time() - start == pytest.approx(2.5)
    assert verdict.engine == "b"


async def test_engine_that_enforces_its_own_timeout_is_not_cut_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    patient = ScriptedEngine("patient", "ok", delay=60)
    patient.enforces_own_timeout = True  # type: ignore[misc]
    chain = EngineChain([patient], "flag", timeout=2.5)
    verdict = await chain.moderate(MESSAGE)
    assert verdict.engine == "patient"
    assert trio.current_time() == pytest.approx(60)
