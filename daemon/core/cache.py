"""The verdict cache: identical (normalised) texts within a TTL reuse the last verdict, and
concurrent identical texts share one engine request. Raids repeat one line thousands of times;
this is what keeps them from costing thousands of API calls."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from chatmod.core.model import Verdict
from chatmod.errors import EngineError
from chatmod.textnorm import canonical

ROUTE_CACHE = "cache"

# Told the outcome of the identical text's request it waited on: a verdict (route ``cache``)
# to reuse, or the error the request ended with (the waiter then finds its own answer).
Waiter = Callable[[Verdict | EngineError], None]


def normalise(text: str) -> str:
    """The cache key: case, whitespace, Unicode styling, look-alike letters, invisible and
    combining characters, leetspeak, spaced-out and repeated letters do not change a verdict,
    so obfuscated variants of one raid line share one (:func:`chatmod.textnorm.canonical`)."""
    return canonical(text)


@dataclass(frozen=True, slots=True)
class Lead:
    """The caller asks the engines for this text: identical texts wait for its outcome, which
    it hands to :meth:`VerdictCache.settle` (always, whether it got a verdict or not)."""

    key: str


class VerdictCache:
    """A bounded LRU of verdicts by normalised text, each valid for ``ttl`` seconds, and
    single flight: while a text is being asked about, identical texts wait for that answer.

    One API serves both pipeline stages: :meth:`claim` then :meth:`settle` (the streaming
    stage, with callbacks), and :meth:`get_or_ask` built on them (the awaited stage).
    """

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()
        self._waiting: dict[str, list[Waiter]] = {}  # key being asked about -> who waits
        self.hits = 0
        self.shared = 0
        self.misses = 0

    def lookup(self, key: str) -> Verdict | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, verdict = found
        if expires <= trio.current_time():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return verdict

    def store(self, key: str, verdict: Verdict) -> None:
        if self.ttl <= 0:
            return
        self._entries[key] = (trio.current_time() + self.ttl, verdict)
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def claim(self, text: str, waiter: Waiter) -> Verdict | Lead | None:
        """A cached verdict for ``text`` (route ``cache``; a hit); ``None`` when an identical
        text is being asked about already: ``waiter`` gets that outcome (shared); else a
        :class:`Lead`: the caller asks and must :meth:`settle` it (a miss)."""
        key = normalise(text)
        verdict = self.lookup(key)
        if verdict is not None:
            self.hits += 1
            return replace(verdict, route=ROUTE_CACHE)
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(waiter)
            self.shared += 1
            return None
        self._waiting[key] = []
        self.misses += 1
        return Lead(key)

    def settle(self, lead: Lead, outcome: Verdict | EngineError, *, keep: bool) -> None:
        """The outcome of ``lead``'s request: kept for ``ttl`` when it is a verdict and
        ``keep``; every waiter is told it (a verdict as a ``cache`` route one)."""
        if keep and isinstance(outcome, Verdict):
            self.store(lead.key, outcome)
        shared = replace(outcome, route=ROUTE_CACHE) if isinstance(outcome, Verdict) else outcome
        for waiter in self._waiting.pop(lead.key, []):
            waiter(shared)

    async def get_or_ask(
        self,
        text: str,
        ask: Callable[[], Awaitable[Verdict]],
        cacheable: Callable[[Verdict], bool],
    ) -> Verdict:
        """A cached verdict (route ``cache``), the verdict of an identical request already
        under way, or ``await ask()`` (kept and shared when ``cacheable``; when it is not,
        or ``ask`` raised, each waiter asks on its own)."""
        told: list[Verdict | EngineError] = []
        answered = trio.Event()

        def wait(outcome: Verdict | EngineError) -> None:
            told.append(outcome)
            answered.set()

        claim = self.claim(text, wait)
        if isinstance(claim, Verdict):
            return claim
        if claim is None:
            await answered.wait()
            if isinstance(told[0], Verdict):
                return told[0]
            return await ask()  # the shared request gave nothing to reuse: ask on our own
        try:
            verdict = await ask()
        except BaseException:
            self.settle(claim, EngineError("the shared request failed"), keep=False)
            raise
        keep = cacheable(verdict)
        self.settle(claim, verdict if keep else EngineError("no verdict worth sharing"),
                    keep=keep)
        return verdict

    def reconfigure(self, size: int, ttl: float) -> None:
        """New limits; ``ttl`` 0 stops reusing verdicts (identical texts moderated at the
        same time still share one request)."""
        self.size, self.ttl = size, ttl
        if ttl <= 0:
            self._entries.clear()
        while len(self._entries) > size:
            self._entries.popitem(last=False)

    def statistics(self) -> dict[str, float]:
        return {"cache.hits": self.hits, "cache.shared": self.shared, "cache.misses": self.misses,
                "cache.size": len(self._entries)}
