"""The Chatsight engine's rules, with no I/O: the HTTP circuit breaker, and the race between
the websocket and HTTP. Time is passed in as numbers (``now``); nothing here blocks, sleeps or
sends. The plugin (chatmod.plugins.chatsight) does the I/O and follows what these decide.

The race: a message goes over the websocket when it is open, else over HTTP. A websocket
request that is not answered by its deadline also goes over HTTP ("racing"): whichever answer
comes first decides, and a websocket reply that wins cancels the HTTP request. A websocket
request whose connection closes, or that gets an error reply, goes over HTTP at once. An answer
after the first is dropped and counted; a websocket reply after HTTP answered is ``late``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from chatmod.chatsight.inflight import (
    Answer,
    InFlight,
    InFlightTable,
    Settle,
    Stray,
    no_answer,
)
from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError

ROUTE_WS = "ws"
ROUTE_HTTP = "http"

BreakerState = Literal["closed", "open", "half_open"]


class HttpBreaker:
    """A circuit breaker on Chatsight's HTTP API.

    ``closed``: every request is sent. ``failures_to_open`` failures in a row open it (0:
    never): for ``cooldown`` seconds requests are skipped (the fallback answers at once rather
    than after retries). Then it is ``half_open``: the next request is a probe, and others are
    skipped for another cooldown while it runs; a success closes it, a failure opens it again
    (counted as one opening, not one per failure).
    """

    def __init__(self, failures_to_open: int, cooldown: float) -> None:
        self.failures_to_open = failures_to_open
        self.cooldown = cooldown
        self.failures = 0  # consecutive
        self._open_until = -math.inf  # -inf: closed
        self.stats: Counter[str] = Counter({"http_skipped": 0, "http_breaker_opened": 0})

    @property
    def is_closed(self) -> bool:
        return self._open_until == -math.inf

    def state(self, now: float) -> BreakerState:
        if self.is_closed:
            return "closed"
        return "open" if now < self._open_until else "half_open"

    def admit(self, now: float) -> bool:
        """Whether a request may be sent now. False (counted as skipped) while open; when
        half open, True for this one probe, which keeps others out for a cooldown."""
        if now < self._open_until:
            self.stats["http_skipped"] += 1
            return False
        if not self.is_closed:
            self._open_until = now + self.cooldown  # one probe at a time
        return True

    def succeeded(self) -> bool:
        """A request was answered: closes the breaker. True when it was open (HTTP is back)."""
        was_open = not self.is_closed
        self._open_until = -math.inf
        self.failures = 0
        return was_open

    def failed(self, now: float) -> bool:
        """A request failed (``now``: when). True when this failure opened the breaker."""
        self.failures += 1
        if not self.failures_to_open or self.failures < self.failures_to_open:
            return False
        opened = self.is_closed
        if opened:
            self.stats["http_breaker_opened"] += 1
        self._open_until = now + self.cooldown
        return opened


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """What a websocket reply means. ``answered``: settle ``entry`` with the reply's result
    (first cancelling its HTTP request when ``cancel_http``); ``failed``: an error reply, so
    ``entry`` goes over HTTP now; otherwise a stray reply (nothing to do; it is counted)."""

    status: Literal["answered", "failed"] | Stray
    entry: InFlight | None = None
    cancel_http: bool = False


class RouteRace:
    """The bookkeeping of messages between the websocket and HTTP (see the module's doc)."""

    def __init__(self, verdict_timeout: float) -> None:
        self.verdict_timeout = verdict_timeout
        self.table = InFlightTable()
        self.stats: Counter[str] = Counter(dict.fromkeys(
            ("ws_error_replies", "ws_won_race", "ws_timeouts", "http_answers_dropped"), 0))

    @staticmethod
    def route(socket_open: bool) -> str:
        """The route a new message takes."""
        return ROUTE_WS if socket_open else ROUTE_HTTP

    def sent_over_ws(self, message: Message, now: float, connection: int,
                     settle: Settle | None, answer: Answer = no_answer,
                     index: int = 0) -> InFlight:
        """``message`` is being sent on websocket ``connection``: its reply is awaited until
        ``now + verdict_timeout``. Its first answer goes to ``settle``, or (None) to
        ``answer(index, ...)`` through its owner (see :class:`InFlight`)."""
        return self.table.add(message, now + self.verdict_timeout, connection, settle,
                              answer, index)

    def not_sent(self, entry: InFlight) -> None:
        """The websocket closed before ``entry`` was sent: it goes over HTTP alone."""
        self.table.abandon(entry)

    def given_up(self, entry: InFlight) -> None:
        """``entry`` was answered otherwise (failed by the engine's safety net, or as the
        engine stopped): it leaves the table, and its websocket reply, should it ever come,
        is ``late``."""
        self.table.abandon(entry)

    def next_deadline(self) -> float | None:
        """When the next websocket request falls overdue (None: none is waiting)."""
        return self.table.next_deadline()

    def overdue(self, now: float) -> list[InFlight]:
        """Websocket requests past their deadline: each goes over HTTP too, racing; its
        websocket reply may still win."""
        late = self.table.overdue(now)
        self.stats["ws_timeouts"] += len(late)
        return late

    def connection_closed(self, connection: int) -> list[InFlight]:
        """Requests on ``connection`` that must go over HTTP now (those racing already are
        in HTTP's hands)."""
        return self.table.take_connection(connection)

    def ws_reply(self, reference: str | None, answered: bool) -> ReplyOutcome:
        """A websocket reply for ``reference``: with a result (``answered``) or an error."""
        found = self.table.take(reference)
        if isinstance(found, str):
            return ReplyOutcome(found)
        if not answered:
            self.stats["ws_error_replies"] += 1
            return ReplyOutcome("failed", found)
        if found.racing:
            self.stats["ws_won_race"] += 1
        return ReplyOutcome("answered", found, cancel_http=found.racing)

    def ws_answered_many(self, references: list[str]) -> list[InFlight | Stray]:
        """:meth:`ws_reply` for each reply with a result of one read, in order, without an
        outcome object (once per reply): the entry to settle (a racing one's HTTP request to
        be cancelled first), or what kind of stray the reply is."""
        found = self.table.take_many(references)
        won = 0
        for entry in found:
            if not isinstance(entry, str) and entry.racing:
                won += 1
        if won:
            self.stats["ws_won_race"] += won
        return found

    def http_answered(self, entry: InFlight | None, settle: Settle,
                      result: Verdict | EngineError) -> bool:
        """HTTP's answer (or failure) for a message (``entry``: its websocket request, if it
        had one, after which a websocket reply is late). False, and counted as dropped, when
        an answer came first."""
        if entry is not None:
            self.table.abandon(entry)
        if settle(result):
            return True
        self.stats["http_answers_dropped"] += 1
        return False
