"""The in-flight table: requests sent over the websocket and not yet answered, by reference.

A reference is unique per request, so a reply is matched to exactly one message, and a reply
for a reference that was already answered, given up on, or never sent is recognised and
counted instead of producing a second decision. Sync throughout: it never blocks.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import trio

from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError

# Delivers the first answer for a message; False (and nothing done) for any later one.
Settle = Callable[[Verdict | EngineError], bool]
# Told a message's answer with the message's index in its batch (an engine's batch callback).
Answer = Callable[[int, Verdict | EngineError], None]


def no_answer(index: int, result: Verdict | EngineError) -> None:
    """The :data:`Answer` of an entry that has a ``settle``: never told."""

# How many of the latest references sent are told apart when a stray reply names one: a
# second reply for one answered (duplicate), or a reply after it was given up on (late).
# Older ones are unknown, as are references never sent.
REMEMBERED_REFERENCES = 65536

Stray = Literal["duplicate", "late", "unknown"]


@dataclass(slots=True, eq=False)
class InFlight:
    """One request. ``racing``: it is overdue and HTTP was asked too; ``settle`` takes the
    first answer. Without ``settle``, its owner delivers the first answer itself, to
    ``answer(index, ...)``, and marks it ``settled``: no callable made per message."""

    reference: str
    message: Message
    deadline: float
    connection: int
    settle: Settle | None
    answer: Answer = no_answer
    index: int = 0
    #: Told this entry's verdict with others of one read, as ``answers([(index, verdict)])``
    #: (the owner's batch form of ``answer``), when set.
    answers: Callable[[list[tuple[int, Verdict]]], None] | None = None
    racing: bool = False
    http_scope: trio.CancelScope | None = None
    settled: bool = False


class InFlightTable:
    """reference -> :class:`InFlight`, in the order they were sent."""

    def __init__(self) -> None:
        self._entries: dict[str, InFlight] = {}
        # Those given up on, latest last. One answered is not written down: a reference of
        # ours among the latest sent that is neither in flight nor here was answered.
        self._abandoned: OrderedDict[str, None] = OrderedDict()
        self._prefix = os.urandom(3).hex()
        self._sent = 0  # references made; the latest is f"{prefix}-{sent}"

    def __len__(self) -> int:
        return len(self._entries)

    def add(
        self, message: Message, deadline: float, connection: int,
        settle: Settle | None, answer: Answer = no_answer, index: int = 0,
    ) -> InFlight:
        self._sent = sent = self._sent + 1
        reference = f"{self._prefix}-{sent}"
        entry = InFlight(reference, message, deadline, connection, settle, answer, index)
        self._entries[reference] = entry
        return entry

    def take(self, reference: str | None) -> InFlight | Stray:
        """The live entry a reply answers (removed from the table), or what kind of stray the
        reply is: a second reply (``duplicate``), one after we gave up (``late``), or one for a
        reference we never sent (``unknown``)."""
        if reference is None:
            return "unknown"
        entry = self._entries.pop(reference, None)
        if entry is not None:  # the usual reply: nothing more to write down
            return entry
        return self._stray(reference)

    def take_many(self, references: list[str]) -> list[InFlight | Stray]:
        """:meth:`take` for each of ``references`` (one read's replies), in order."""
        pop = self._entries.pop
        found: list[InFlight | Stray] = []
        add = found.append
        for reference in references:
            entry = pop(reference, None)
            add(entry if entry is not None else self._stray(reference))
        return found

    def _stray(self, reference: str) -> Stray:
        """What a reply for a reference not in flight is (see :meth:`take`)."""
        prefix, _, digits = reference.rpartition("-")
        if prefix != self._prefix or not (digits.isascii() and digits.isdigit()):
            return "unknown"
        number = int(digits)
        if (str(number) != digits or not 0 < number <= self._sent
                or number <= self._sent - REMEMBERED_REFERENCES):
            return "unknown"  # never sent (not as we spell them), or too old to tell
        return "late" if reference in self._abandoned else "duplicate"

    def abandon(self, entry: InFlight) -> None:
        """Stop waiting on the websocket for ``entry``; a reply after this counts as late."""
        if self._entries.pop(entry.reference, None) is not None:
            abandoned = self._abandoned
            abandoned[entry.reference] = None
            if len(abandoned) > REMEMBERED_REFERENCES:
                abandoned.popitem(last=False)

    def take_connection(self, connection: int) -> list[InFlight]:
        """Remove every entry sent on ``connection`` (it closed). Returns those not already
        racing over HTTP: they must go over HTTP now."""
        lost = [e for e in self._entries.values() if e.connection == connection]
        for entry in lost:
            self.abandon(entry)
        return [e for e in lost if not e.racing]

    def next_deadline(self) -> float | None:
        """The earliest deadline of an entry not racing yet, or None."""
        for entry in self._entries.values():
            if not entry.racing:
                return entry.deadline
        return None

    def overdue(self, now: float) -> list[InFlight]:
        """Entries past their deadline that are not racing yet; they are marked racing and
        stay in the table, so their websocket reply can still win."""
        found = []
        for entry in self._entries.values():
            if entry.deadline > now:
                break  # entries were added in deadline order
            if not entry.racing:
                entry.racing = True
                found.append(entry)
        return found
