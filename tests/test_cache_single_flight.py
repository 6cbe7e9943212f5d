"""The verdict cache's one single-flight API (claim, then settle), as both stages use it."""

from __future__ import annotations

import trio
import trio.testing

from chatmod.core.cache import ROUTE_CACHE, Lead, VerdictCache
from chatmod.core.model import Verdict
from chatmod.errors import EngineError


def verdict(route: str = "ws") -> Verdict:
    return Verdict("delete", 0.9, "chatsight", route)


class Told:
    """A waiter that remembers what it was told."""

    def __init__(self) -> None:
        self.outcomes: list[Verdict | EngineError] = []

    def __call__(self, outcome: Verdict | EngineError) -> None:
        self.outcomes.append(outcome)


async def test_identical_texts_wait_for_the_lead_and_get_its_verdict() -> None:
    cache = VerdictCache(size=10, ttl=60)
    first, second, third = Told(), Told(), Told()
    lead = cache.claim("Raid  LINE", first)
    assert lead == Lead("raid line")
    assert cache.claim("raid line", second) is None
    assert cache.claim("RAID line", third) is None
    assert first.outcomes == second.outcomes == third.outcomes == []  # nobody told yet
    assert isinstance(lead, Lead)
    cache.settle(lead, verdict(), keep=True)
    assert second.outcomes == third.outcomes == [verdict(ROUTE_CACHE)]
    assert first.outcomes == []  # the lead has its own verdict
    assert cache.claim("raid line", Told()) == verdict(ROUTE_CACHE)  # kept: a hit
    assert cache.statistics() == {"cache.hits": 1, "cache.shared": 2, "cache.misses": 1,
                                  "cache.size": 1}


async def test_a_failed_lead_tells_its_waiters_the_error_and_keeps_nothing() -> None:
    cache = VerdictCache(size=10, ttl=60)
    waiter = Told()
    lead = cache.claim("t", Told())
    assert isinstance(lead, Lead)
    assert cache.claim("t", waiter) is None
    error = EngineError("chatsight is down")
    cache.settle(lead, error, keep=True)  # keep applies to verdicts only
    assert waiter.outcomes == [error]
    assert isinstance(cache.claim("t", Told()), Lead)  # nothing kept: the next one leads


async def test_a_verdict_not_kept_is_still_shared_with_those_waiting() -> None:
    cache = VerdictCache(size=10, ttl=60)
    waiter = Told()
    lead = cache.claim("t", Told())
    assert isinstance(lead, Lead)
    assert cache.claim("t", waiter) is None
    cache.settle(lead, verdict(), keep=False)
    assert waiter.outcomes == [verdict(ROUTE_CACHE)]
    assert cache.lookup("t") is None


async def test_a_lead_settled_twice_or_unknown_tells_no_one_twice() -> None:
    cache = VerdictCache(size=10, ttl=0)
    waiter = Told()
    lead = cache.claim("t", Told())
    assert isinstance(lead, Lead)
    assert cache.claim("t", waiter) is None
    cache.settle(lead, verdict(), keep=True)
    cache.settle(lead, verdict(), keep=True)  # e.g. a late second answer: no one left
    cache.settle(Lead("never claimed"), verdict(), keep=True)
    assert waiter.outcomes == [verdict(ROUTE_CACHE)]
    assert cache.lookup("t") is None  # ttl 0 keeps nothing, still single flight


async def test_get_or_ask_waiters_ask_on_their_own_after_an_uncacheable_verdict() -> None:
    cache = VerdictCache(size=10, ttl=60)
    release = trio.Event()
    asked = 0

    async def ask() -> Verdict:
        nonlocal asked
        asked += 1
        if asked == 1:
            await release.wait()
            return verdict("failclosed")  # a degraded answer: not kept, not shared
        return verdict()

    routes: list[str] = []

    async def one() -> None:
        routes.append((await cache.get_or_ask("t", ask, lambda v: v.route == "ws")).route)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            assert asked == 1  # the second waits on the first
            release.set()
    assert sorted(routes) == ["failclosed", "ws"]
    assert asked == 2
