"""The in-flight table: requests sent over the websocket and not yet answered, by reference.

A reference is unique per request, so a reply is matched to exactly one message, and a reply
for a reference that was already answered, given up on, or never sent is recognised and
counted instead of producing a second decision.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import trio

from chatmod.chatsight_protocol import ChatsightResult
from chatmod.model import Message

# References remembered after they settle, to tell late and duplicate replies from strays.
REMEMBERED_REFERENCES = 65536

ReplyOutcome = Literal["answered", "failed", "duplicate", "late", "unknown"]


@dataclass(slots=True, eq=False)
class InFlight:
    reference: str
    message: Message
    deadline: float
    connection: int
    done: trio.Event = field(default_factory=trio.Event)
    result: ChatsightResult | None = None
    failure: str | None = None


class InFlightTable:
    """reference -> :class:`InFlight`. Sync: never blocks; the caller waits on ``entry.done``."""

    def __init__(self) -> None:
        self._entries: dict[str, InFlight] = {}
        self._settled: OrderedDict[str, Literal["answered", "abandoned"]] = OrderedDict()
        self._prefix = os.urandom(3).hex()
        self._counter = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, message: Message, deadline: float, connection: int) -> InFlight:
        reference = f"{self._prefix}-{next(self._counter)}"
        entry = InFlight(reference, message, deadline, connection)
        self._entries[reference] = entry
        return entry

    def resolve(
        self, reference: str | None, result: ChatsightResult | None, failure: str | None = None
    ) -> ReplyOutcome:
        """Record a reply. Only the first reply for a live reference settles it."""
        if reference is None:
            return "unknown"
        entry = self._entries.pop(reference, None)
        if entry is None:
            earlier = self._settled.get(reference)
            if earlier is None:
                return "unknown"
            return "duplicate" if earlier == "answered" else "late"
        self._remember(reference, "answered")
        entry.result = result
        entry.failure = failure if result is None else None
        entry.done.set()
        return "answered" if result is not None else "failed"

    def abandon(self, entry: InFlight) -> None:
        """Stop waiting on the websocket for ``entry``; a reply after this counts as late."""
        if self._entries.pop(entry.reference, None) is not None:
            self._remember(entry.reference, "abandoned")

    def lose_connection(self, connection: int) -> int:
        """Fail every entry sent on ``connection`` (it closed); returns how many."""
        lost = [e for e in self._entries.values() if e.connection == connection]
        for entry in lost:
            self.abandon(entry)
            entry.failure = "websocket closed"
            entry.done.set()
        return len(lost)

    def expire_overdue(self, now: float) -> list[InFlight]:
        """Abandon and return the entries whose deadline has passed."""
        overdue = [e for e in self._entries.values() if e.deadline <= now]
        for entry in overdue:
            self.abandon(entry)
        return overdue

    def _remember(self, reference: str, how: Literal["answered", "abandoned"]) -> None:
        self._settled[reference] = how
        if len(self._settled) > REMEMBERED_REFERENCES:
            self._settled.popitem(last=False)
