"""Escalation ladders: the pure ladder, the strike stores' contract (memory, SQLite, a real
redis-server), and the escalation stage in a running pipeline on virtual time."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatmod.config.schema import parse_table
from chatmod.config.sections import ChannelPolicy, LadderSection, PolicySection, StateSection
from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import Intake, Source
from chatmod.core.model import Decision, Message, Verdict
from chatmod.core.pipeline import Pipeline
from chatmod.errors import ConfigError
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.escalation import STORE_RETRY_AFTER, STORE_TIMEOUT, Escalation
from chatmod.policy.ladder import Ladder, Step, parse_duration, parse_step
from chatmod.policy.rules import Policy
from chatmod.state.redis_store import RedisStrikeStore
from chatmod.state.strikes import MemoryStrikeStore, SqliteStrikeStore, StrikeStore

from .helpers import WORDLIST_CONFIG, RecordingSink, eventually, run_chatmod, write_config
from .servers import RedisServer

FUZZ_EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300
LADDER = ("warn", "timeout 10m", "ban")
HOUR = 3600.0


def test_steps_parse_and_print_back() -> None:
    assert parse_step("warn") == Step("warn")
    assert parse_step("timeout 10m") == Step("timeout", 600.0)
    assert str(parse_step("timeout  90m")) == "timeout 90m"
    assert str(parse_step("timeout 120m")) == "timeout 2h"
    assert parse_duration("1d") == 86400.0
    assert parse_step("timeout 365d") == Step("timeout", 365 * 86400.0)
    for wrong in ("", "mute", "timeout", "timeout 0m", "timeout 10", "ban 1h", "timeout 5x",
                  "timeout 366d", "timeout 999999999d"):
        with pytest.raises(ValueError, match=r"expected|needs|takes no|at most 365d"):
            parse_step(wrong)


def test_the_ladder_steps_up_and_stays_on_its_last_rung() -> None:
    ladder = Ladder.parse("default", LADDER, HOUR, {"delete": 1, "flag": 2})
    assert [str(ladder.step_for(n)) for n in range(1, 6)] == [
        "warn", "timeout 10m", "ban", "ban", "ban"]
    assert (ladder.weight("delete"), ladder.weight("flag"), ladder.weight("pass")) == (1, 2, 0)
    assert ladder.reason(2, ladder.step_for(2)) == "ladder default: strike 2 within 1h -> timeout 10m"


def test_a_bad_step_in_the_config_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_table(PolicySection, {"ladder": {"steps": ["warn", "timeout forever"]}}, "policy")
    assert "policy.ladder.steps[1]" in str(caught.value)
    with pytest.raises(ConfigError, match=r"policy\.ladder\.strikes\.delete"):
        parse_table(PolicySection, {"ladder": {"strikes": {"delete": -1}}}, "policy")


def test_every_bad_step_of_a_ladder_is_reported_at_once() -> None:
    # A new user's trial: one run named steps[1], the next run steps[2].
    with pytest.raises(ConfigError) as caught:
        parse_table(PolicySection, {"ladder": {
            "steps": ["warn", "timeout 10 minutes", "jail"], "strikes": {"delete": -1}}},
            "policy")
    lines = str(caught.value).splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("policy.ladder.steps[1]: timeout needs a duration"), lines
    assert "'timeout 10 minutes'" in lines[0]
    assert lines[1].startswith("policy.ladder.steps[2]: expected one of"), lines
    assert "found 'jail'" in lines[1]
    assert lines[2] == "policy.ladder.strikes.delete: expected 0 to 1000 strikes, found -1"


@pytest.mark.parametrize("command", ["run", "check-config"])
def test_every_bad_ladder_step_in_one_run_of_the_cli(tmp_path: Path, command: str) -> None:
    config = write_config(
        tmp_path / "c.toml",
        '[policy.ladder]\nsteps = ["warn", "timeout 10 minutes", "jail"]\n'
        + WORDLIST_CONFIG.format(format="text", path="-"))
    result = run_chatmod(command, "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 2, lines
    for line, key in zip(lines, ["steps[1]", "steps[2]"], strict=True):
        assert line.startswith(f"chatmod: config error: {config}: policy.ladder.{key}: "), line
    assert "Traceback" not in result.stderr.decode()


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(
    ["warn", "timeout 1s", "timeout 999999999d", "kick", "ban"])), max_size=5),
    st.dictionaries(st.text(max_size=8), st.integers(-5, 5), max_size=3))
@example(["timeout ٣m"], {})  # a non-ASCII digit: \d matches it, int() would too
def test_ladder_config_fuzz_only_config_errors(steps: list[str], weights: dict[str, int]) -> None:
    try:
        section = parse_table(LadderSection, {"steps": steps, "strikes": weights}, "ladder")
    except ConfigError:
        return
    ladder = Ladder.parse("x", section.steps, section.window, section.strikes)
    assert ladder.enabled == bool(steps)
    for n in range(1, len(steps) + 2) if ladder.enabled else ():
        str(ladder.step_for(n))


# The stores' contract, the same for each backend.

@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StrikeStore]:
    if request.param == "memory":
        yield MemoryStrikeStore()
    elif request.param == "sqlite":
        sqlite = SqliteStrikeStore(tmp_path / "state.sqlite3")
        yield sqlite
        sqlite.close()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        redis = RedisStrikeStore(StateSection(backend="redis", port=server.port))
        async with trio.open_nursery() as nursery:
            await nursery.start(redis.run)
            yield redis
            nursery.cancel_scope.cancel()


async def test_store_counts_within_the_window_once_per_message(store: StrikeStore) -> None:
    with trio.fail_after(10):
        add = store.add_strike
        assert (await add("#a", "bob", "m1", 1, 1000.0, HOUR)).strikes == 1
        assert (await add("#a", "bob", "m2", 2, 1001.0, HOUR)).strikes == 3
        again = await add("#a", "bob", "m1", 1, 1002.0, HOUR)
        assert (again.strikes, again.new, again.applied) == (1, False, False)
        await store.mark_applied(["m1"], 1003.0, HOUR)
        assert (await add("#a", "bob", "m1", 1, 1004.0, HOUR)).applied
        # Another channel, another author: counted apart.
        assert (await add("#b", "bob", "m3", 1, 1005.0, HOUR)).strikes == 1
        assert (await add("#a", "eve", "m4", 1, 1005.0, HOUR)).strikes == 1
        assert await store.count("#a", "bob", 1006.0, HOUR) == 3
        assert await store.channels_of("bob") == ["#a", "#b"]
        # m1 and m2 have expired by m5; m3 is in its own channel.
        assert (await add("#a", "bob", "m5", 1, 1002.0 + HOUR, HOUR)).strikes == 1
        assert await store.clear("bob", "#b") == 1
        assert await store.count("#b", "bob", 1006.0, HOUR) == 0
        assert await store.clear("bob") == 1
        assert await store.count("#a", "bob", 1003.0 + HOUR, HOUR) == 0


async def test_sqlite_store_keeps_strikes_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    first = SqliteStrikeStore(path)
    await first.add_strike("#a", "bob", "m1", 1, 1000.0, HOUR)
    await first.mark_applied(["m1"], 1000.0, HOUR)
    first.close()
    assert path.stat().st_mode & 0o777 == 0o600
    second = SqliteStrikeStore(path)
    repeat = await second.add_strike("#a", "bob", "m1", 1, 1001.0, HOUR)
    assert (repeat.strikes, repeat.new, repeat.applied) == (1, False, True)
    assert (await second.add_strike("#a", "bob", "m2", 1, 1001.0, HOUR)).strikes == 2
    second.close()


# The stage in a running pipeline.

class ChannelSource(Source):
    """Submits what the test sends on ``send``; ends when it is closed."""

    def __init__(self) -> None:
        super().__init__("chat", None)
        self.send, self._receive = trio.open_memory_channel[Message](0)
        self.acknowledged: list[str] = []

    async def run(self, intake: Intake, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with self._receive:
            async for message in self._receive:
                await intake.submit(message)

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        self.acknowledged.extend(m.id for m in messages)


def abusive(n: int, author: str = "bob", channel: str = "#lobby") -> Message:
    return Message(id=f"m{n}", text=f"you idiot {n}", source="chat", author=author,
                   channel=channel)


def ladder_pipeline(source: Source, sink: RecordingSink, policy: PolicySection,
                    store: StrikeStore) -> Pipeline:
    engine = WordlistEngine("wordlist", WordlistConfig(delete=("idiot",), flag=("pizza",)))
    return Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                    Policy(policy), [sink],
                    escalation=Escalation(policy, store, clock=trio.current_time))


async def decide(source: ChannelSource, sink: RecordingSink, message: Message) -> Decision:
    before = len(sink.decisions)
    await source.send.send(message)
    await eventually(lambda: len(sink.decisions) > before)
    return sink.decisions[-1]


async def test_three_offences_warn_timeout_ban_then_warn_after_the_window(
        autojump_clock: trio.testing.MockClock) -> None:
    policy = PolicySection(ladder=LadderSection(steps=LADDER, window=HOUR))
    source, sink = ChannelSource(), RecordingSink()
    pipeline = ladder_pipeline(source, sink, policy, MemoryStrikeStore())
    with trio.fail_after(2 * HOUR):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            steps = [await decide(source, sink, abusive(n)) for n in (1, 2, 3)]
            assert [(d.action, d.strikes, d.step) for d in steps] == [
                ("delete", 1, "warn"), ("delete", 2, "timeout 10m"), ("delete", 3, "ban")]
            assert steps[1].duration == 600.0
            assert steps[2].reason == "ladder default: strike 3 within 1h -> ban"
            record = steps[1].to_record()
            assert (record["strikes"], record["step"], record["duration"]) == (
                2, "timeout 10m", 600.0)
            # A clean message and one from someone else: no strike, no step.
            clean = await decide(source, sink, Message(id="ok", text="hello", source="chat",
                                                       author="bob", channel="#lobby"))
            assert (clean.step, "strikes" in clean.to_record()) == (None, False)
            assert (await decide(source, sink, abusive(4, author="eve"))).step == "warn"
            started = trio.current_time()
            await trio.sleep(HOUR + 1)
            after = await decide(source, sink, abusive(5))
            assert (after.strikes, after.step) == (1, "warn")
            assert trio.current_time() - started == pytest.approx(HOUR + 1, abs=0.1)
            await source.send.aclose()
    assert source.acknowledged == ["m1", "m2", "m3", "ok", "m4", "m5"]


async def test_a_redelivered_message_adds_no_strike_and_is_not_acted_on_again() -> None:
    policy = PolicySection(ladder=LadderSection(steps=LADDER, window=HOUR))
    source, sink = ChannelSource(), RecordingSink()
    pipeline = ladder_pipeline(source, sink, policy, MemoryStrikeStore())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            first = await decide(source, sink, abusive(1))
            again = await decide(source, sink, abusive(1))
            second = await decide(source, sink, abusive(2))
            await source.send.aclose()
    assert (first.strikes, first.step, first.repeated) == (1, "warn", False)
    assert (again.strikes, again.step, again.repeated) == (1, "warn", True)
    assert again.to_record()["repeated"] is True
    assert (second.strikes, second.step) == (2, "timeout 10m")


async def test_channel_ladder_exemptions_and_weights() -> None:
    policy = PolicySection(
        ladder=LadderSection(steps=LADDER, window=HOUR, strikes={"delete": 1, "flag": 1}),
        channels={"#kids": ChannelPolicy(ladder=LadderSection(steps=("ban",), window=HOUR)),
                  "#calm": ChannelPolicy(exempt_authors=("bob",))})
    source, sink = ChannelSource(), RecordingSink()
    pipeline = ladder_pipeline(source, sink, policy, MemoryStrikeStore())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            kids = await decide(source, sink, abusive(1, channel="#kids"))
            calm = await decide(source, sink, abusive(2, channel="#calm"))
            flagged = await decide(source, sink, Message(
                id="f", text="pizza", source="chat", author="bob", channel="#lobby"))
            await source.send.aclose()
    assert (kids.step, kids.reason) == ("ban", "ladder #kids: strike 1 within 1h -> ban")
    assert (calm.exempt, calm.step) == (True, None)
    assert (flagged.action, flagged.step) == ("flag", "warn")


class BrokenStore(MemoryStrikeStore):
    async def add_strike(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise ConnectionError("store down")


async def test_a_failing_store_costs_the_step_not_the_decision() -> None:
    policy = PolicySection(ladder=LadderSection(steps=LADDER))
    source, sink = ChannelSource(), RecordingSink()
    pipeline = ladder_pipeline(source, sink, policy, BrokenStore())
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipeline.run)
            decision = await decide(source, sink, abusive(1))
            await source.send.aclose()
    assert (decision.action, decision.step) == ("delete", None)
    assert decision.reason == "ladder default: strike store unavailable"
    assert source.acknowledged == ["m1"]
    assert pipeline.escalation is not None
    assert pipeline.escalation.statistics()["store_failures"] == 1


class HeldReadStore(MemoryStrikeStore):
    """Its next read of the channel switches takes what is stored, then waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = True
        self.holding = trio.Event()
        self.gate = trio.Event()

    async def channel_switches(self) -> dict[str, dict[str, object]]:
        snapshot = await super().channel_switches()
        if self.hold:
            self.hold = False
            self.holding.set()
            await self.gate.wait()
        return snapshot


async def test_a_periodic_read_of_the_live_rules_never_undoes_a_later_change() -> None:
    store = HeldReadStore()
    escalation = Escalation(PolicySection(), store)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(escalation.reload_rules)  # the periodic read, before the change
            await store.holding.wait()
            await store.set_switches("#a", {"shadow": True})
            nursery.start_soon(escalation.reload_rules)  # the read after the change
            await trio.testing.wait_all_tasks_blocked()
            store.gate.set()
    assert escalation.rules.switch("#a", "shadow") is True


class HangingStore(MemoryStrikeStore):
    """A store that never answers (Redis gone without a FIN)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def add_strike(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        self.calls += 1
        await trio.sleep_forever()


async def test_a_store_that_failed_is_not_asked_again_for_a_while(
        autojump_clock: trio.testing.MockClock) -> None:
    store = HangingStore()
    escalation = Escalation(PolicySection(ladder=LadderSection(steps=LADDER)), store)
    policy = Policy(PolicySection())
    batch = [policy.decide(abusive(n), Verdict("delete", 1.0, "e", "local"), 1.0)
             for n in range(50)]
    started = trio.current_time()
    with trio.fail_after(STORE_TIMEOUT * 2):  # was 50 x STORE_TIMEOUT: the sinks waited
        decided = await escalation.apply(batch)
    assert trio.current_time() - started == pytest.approx(STORE_TIMEOUT)
    assert store.calls == 1
    assert {d.reason for d in decided} == {"ladder default: strike store unavailable"}
    assert escalation.statistics()["store_skips"] == 49
    await trio.sleep(STORE_RETRY_AFTER)
    with trio.move_on_after(1):
        await escalation.apply(batch[:1])
    assert store.calls == 2  # asked again once the pause is over
