from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from chatmod.chatsight.inflight import InFlightTable
from chatmod.core.backoff import Backoff
from chatmod.core.cache import VerdictCache, normalise
from chatmod.core.model import Message, Verdict

MESSAGE = Message(id="m", text="t", source="s")


def test_backoff_grows_to_the_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=0.5, cap=30.0, jitter=0.5, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    bases = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    expected_rng = random.Random(1)
    assert delays == [b * (1 - 0.5 * expected_rng.random()) for b in bases]
    assert all(b / 2 <= d <= b for d, b in zip(delays, bases, strict=True))
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    assert Backoff(initial=1, cap=8, jitter=0).next_delay() == 1


def no_settle(result: object) -> bool:
    return True


def test_replies_are_matched_once_and_strays_are_classified() -> None:
    table = InFlightTable()
    first = table.add(MESSAGE, 10, 1, no_settle)
    second = table.add(MESSAGE, 10, 1, no_settle)
    assert first.reference != second.reference
    assert len(table) == 2
    assert table.take(second.reference) is second
    assert table.take(second.reference) == "duplicate"
    table.abandon(first)
    assert table.take(first.reference) == "late"
    assert table.take("never-sent") == "unknown"
    assert table.take(None) == "unknown"
    assert len(table) == 0


def test_closing_a_connection_takes_its_entries_only() -> None:
    table = InFlightTable()
    old = [table.add(MESSAGE, 10, 1, no_settle) for _ in range(3)]
    new = table.add(MESSAGE, 10, 2, no_settle)
    old[0].racing = True  # already going over HTTP: not handed back a second time
    assert table.take_connection(1) == old[1:]
    assert len(table) == 1
    assert table.take(old[1].reference) == "late"
    assert table.take(new.reference) is new


def test_overdue_entries_are_marked_racing_once_and_stay_answerable() -> None:
    table = InFlightTable()
    early = table.add(MESSAGE, 1.0, 1, no_settle)
    late = table.add(MESSAGE, 5.0, 1, no_settle)
    assert table.overdue(2.0) == [early]
    assert early.racing
    assert table.overdue(2.0) == []
    assert table.overdue(5.0) == [late]
    assert table.take(early.reference) is early  # its websocket reply can still win


def verdict(route: str = "ws") -> Verdict:
    return Verdict("delete", 0.9, "chatsight", route)


async def test_cache_reuses_verdicts_within_ttl(autojump_clock: trio.testing.MockClock) -> None:
    cache = VerdictCache(size=10, ttl=60)
    asked = 0

    async def ask() -> Verdict:
        nonlocal asked
        asked += 1
        return verdict()

    first = await cache.get_or_ask("You  IDIOT", ask, lambda v: True)
    second = await cache.get_or_ask("you idiot", ask, lambda v: True)
    assert (first.route, second.route, asked) == ("ws", "cache", 1)
    await trio.sleep(61)
    third = await cache.get_or_ask("you idiot", ask, lambda v: True)
    assert (third.route, asked) == ("ws", 2)
    assert normalise("  A\tb  ") == "a b"


async def test_concurrent_identical_texts_share_one_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache = VerdictCache(size=10, ttl=60)
    asked = 0
    routes: list[str] = []

    async def ask() -> Verdict:
        nonlocal asked
        asked += 1
        await trio.sleep(1)
        return verdict()

    async def one() -> None:
        routes.append((await cache.get_or_ask("raid line", ask, lambda v: True)).route)

    async with trio.open_nursery() as nursery:
        for _ in range(1000):
            nursery.start_soon(one)
    assert asked == 1
    assert sorted(routes) == ["cache"] * 999 + ["ws"]
    assert cache.shared == 999


async def test_uncacheable_verdicts_are_not_kept_and_size_is_bounded() -> None:
    cache = VerdictCache(size=2, ttl=60)

    async def degraded() -> Verdict:
        return verdict("failclosed")

    await cache.get_or_ask("x", degraded, lambda v: v.route == "ws")
    assert cache.lookup("x") is None
    for text in ("a", "b", "c"):
        cache.store(text, verdict())
    assert cache.lookup("a") is None
    assert cache.lookup("c") is not None


async def test_failed_shared_request_lets_waiters_ask_themselves() -> None:
    cache = VerdictCache(size=10, ttl=60)
    calls = 0
    break_now = trio.Event()

    async def ask() -> Verdict:
        nonlocal calls
        calls += 1
        if calls == 1:
            await break_now.wait()
            raise RuntimeError("engine broke")
        return verdict()

    results: list[str] = []

    async def one() -> None:
        try:
            results.append((await cache.get_or_ask("t", ask, lambda v: True)).route)
        except RuntimeError:
            results.append("error")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()  # the first is asking
        nursery.start_soon(one)
        await trio.testing.wait_all_tasks_blocked()
        assert calls == 1  # the second waits for the first's answer
        break_now.set()
    assert sorted(results) == ["error", "ws"]
    assert calls == 2


@pytest.mark.parametrize("ttl", [0.5])
async def test_cache_entries_expire_by_virtual_time(
    ttl: float, autojump_clock: trio.testing.MockClock
) -> None:
    cache = VerdictCache(size=10, ttl=ttl)
    cache.store("k", verdict())
    await trio.sleep(ttl - 0.01)
    assert cache.lookup("k") is not None
    await trio.sleep(0.02)
    assert cache.lookup("k") is None
