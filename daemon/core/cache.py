"""The verdict cache: identical (normalised) texts within a TTL reuse the last verdict, and
concurrent identical texts share one engine request. Raids repeat one line thousands of times;
this is what keeps them from costing thousands of API calls."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from chatmod.core.model import Verdict
from chatmod.textnorm import canonical

ROUTE_CACHE = "cache"


def normalise(text: str) -> str:
    """The cache key: case, whitespace, Unicode styling, look-alike letters, invisible and
    combining characters, leetspeak, spaced-out and repeated letters do not change a verdict,
    so obfuscated variants of one raid line share one (:func:`chatmod.textnorm.canonical`)."""
    return canonical(text)


@dataclass(slots=True, eq=False)
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    verdict: Verdict | None = None


class VerdictCache:
    """A bounded LRU of verdicts by normalised text, each valid for ``ttl`` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[float, Verdict]] = OrderedDict()
        self._flights: dict[str, _Flight] = {}
        self._waiting: dict[str, list[Any]] = {}  # streaming: key -> messages waiting on it
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

    async def get_or_ask(
        self,
        text: str,
        ask: Callable[[], Awaitable[Verdict]],
        cacheable: Callable[[Verdict], bool],
    ) -> Verdict:
        """A cached verdict (route ``cache``), the verdict of an identical request already
        under way, or ``await ask()`` (stored when ``cacheable``)."""
        key = normalise(text)
        verdict = self.lookup(key)
        if verdict is not None:
            self.hits += 1
            return replace(verdict, route=ROUTE_CACHE)
        flight = self._flights.get(key)
        if flight is not None:
            await flight.done.wait()
            if flight.verdict is not None:
                self.shared += 1
                return replace(flight.verdict, route=ROUTE_CACHE)
            return await ask()  # the shared request failed: ask on our own
        self.misses += 1
        flight = self._flights[key] = _Flight()
        try:
            verdict = await ask()
            if cacheable(verdict):
                self.store(key, verdict)
                flight.verdict = verdict
            return verdict
        finally:
            del self._flights[key]
            flight.done.set()

    def reconfigure(self, size: int, ttl: float) -> None:
        """New limits; ``ttl`` 0 stops reusing verdicts (identical texts moderated at the
        same time still share one request)."""
        self.size, self.ttl = size, ttl
        if ttl <= 0:
            self._entries.clear()
        while len(self._entries) > size:
            self._entries.popitem(last=False)

    def hit(self, key: str) -> Verdict | None:
        """A cached verdict for ``key`` as a ``cache`` route verdict, counted as a hit."""
        verdict = self.lookup(key)
        if verdict is None:
            return None
        self.hits += 1
        return replace(verdict, route=ROUTE_CACHE)

    def join(self, key: str, waiter: Any) -> bool:
        """Streaming single-flight: True when a request for ``key`` is already under way
        (``waiter`` then waits for it); False when the caller leads and must ask."""
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = []
            self.misses += 1
            return False
        waiting.append(waiter)
        self.shared += 1
        return True

    def finish(self, key: str, verdict: Verdict | None) -> list[Any]:
        """The leader's answer for ``key`` (None: none worth keeping); returns the waiters."""
        if verdict is not None:
            self.store(key, verdict)
        return self._waiting.pop(key, [])

    def statistics(self) -> dict[str, float]:
        return {"cache.hits": self.hits, "cache.shared": self.shared, "cache.misses": self.misses,
                "cache.size": len(self._entries)}
