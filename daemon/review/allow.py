"""The allow-list: texts a reviewer overturned, answered ``pass`` before any engine is asked.

Keys are texts normalised as the verdict cache normalises them
(:func:`chatmod.core.cache.normalise`), so the copies of a raid line share one entry.
Expiries are wall-clock times: they are shared with other daemons through the review store.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chatmod.core.cache import normalise
from chatmod.core.model import PASS, Message, Verdict

ROUTE_ALLOW = "allow"
ENGINE_ALLOW_LIST = "allow-list"
# Entries kept at most; the ones expiring first are dropped beyond it.
MAX_ALLOW_ENTRIES = 100_000


class AllowList:
    """Normalised text -> expiry (seconds since the epoch)."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 max_entries: int = MAX_ALLOW_ENTRIES) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._until: dict[str, float] = {}
        self.hits = 0

    def allow(self, text: str, until: float) -> None:
        """Allow ``text`` until ``until``; a later expiry already held is kept."""
        key = normalise(text)
        if not key or until <= self._clock():
            return
        self._until[key] = max(until, self._until.get(key, 0.0))
        if len(self._until) > self._max_entries:
            self.expire()
            while len(self._until) > self._max_entries:
                del self._until[min(self._until, key=self._until.__getitem__)]

    def expire(self) -> None:
        """Forget the entries whose time is up."""
        now = self._clock()
        for key in [key for key, until in self._until.items() if until <= now]:
            del self._until[key]

    def verdict_for(self, message: Message) -> Verdict | None:
        """``pass`` from the allow-list when the message's text is on it, else None."""
        if not self._until:
            return None
        key = normalise(message.text)
        until = self._until.get(key)
        if until is None:
            return None
        if until <= self._clock():
            del self._until[key]
            return None
        self.hits += 1
        return Verdict(PASS, None, ENGINE_ALLOW_LIST, ROUTE_ALLOW, {"allowed_until": until})

    def __len__(self) -> int:
        return len(self._until)
