"""The Chatsight engine's I/O-free rules: the HTTP circuit breaker and the websocket/HTTP race.

Plain synchronous tests: time is a number passed in, nothing is sent.
"""

from __future__ import annotations

import pytest

from chatmod.chatsight.engine import ROUTE_HTTP, ROUTE_WS, HttpBreaker, RouteRace
from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError

WS_VERDICT = Verdict("delete", 0.9, "chatsight", ROUTE_WS)
HTTP_VERDICT = Verdict("pass", 0.1, "chatsight", ROUTE_HTTP)


class FirstAnswer:
    """A settle that takes the first answer only, as the engine's does."""

    def __init__(self) -> None:
        self.answers: list[Verdict | EngineError] = []

    def __call__(self, result: Verdict | EngineError) -> bool:
        self.answers.append(result)
        return len(self.answers) == 1


def message(number: int = 1) -> Message:
    return Message(id=f"m-{number}", text="hello", source="test")


# -- the breaker --------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_counts_one_opening() -> None:
    breaker = HttpBreaker(failures_to_open=3, cooldown=5.0)
    assert [breaker.failed(now=t) for t in (1.0, 2.0)] == [False, False]
    assert breaker.state(2.0) == "closed"
    assert breaker.admit(2.5)
    assert breaker.failed(now=3.0)  # the third in a row opens it
    assert breaker.state(3.0) == "open"
    assert breaker.is_closed is False
    assert [breaker.admit(t) for t in (3.0, 7.99)] == [False, False]
    assert breaker.stats == {"http_skipped": 2, "http_breaker_opened": 1}


def test_a_success_between_failures_starts_the_count_again() -> None:
    breaker = HttpBreaker(failures_to_open=2, cooldown=5.0)
    assert not breaker.failed(now=1.0)
    assert not breaker.succeeded()  # it was closed: nothing came back
    assert not breaker.failed(now=2.0)
    assert breaker.failures == 1
    assert breaker.state(2.0) == "closed"


def test_half_open_admits_one_probe_at_a_time() -> None:
    breaker = HttpBreaker(failures_to_open=1, cooldown=5.0)
    assert breaker.failed(now=10.0)
    assert breaker.state(14.9) == "open"
    assert breaker.state(15.0) == "half_open"
    assert breaker.admit(15.0)  # the probe
    assert breaker.state(15.0) == "open"  # others are kept out while it runs
    assert not breaker.admit(19.9)
    assert breaker.admit(20.0)  # a probe that took a whole cooldown: another one may go
    assert breaker.stats["http_skipped"] == 1


def test_a_failed_probe_keeps_it_open_without_a_new_opening() -> None:
    breaker = HttpBreaker(failures_to_open=2, cooldown=5.0)
    breaker.failed(now=0.0)
    assert breaker.failed(now=1.0)
    assert breaker.admit(6.0)
    assert not breaker.failed(now=7.0)  # the probe failed: open again, from then
    assert breaker.state(11.9) == "open"
    assert breaker.state(12.0) == "half_open"
    assert breaker.stats["http_breaker_opened"] == 1


def test_a_successful_probe_closes_it() -> None:
    breaker = HttpBreaker(failures_to_open=1, cooldown=5.0)
    breaker.failed(now=0.0)
    assert breaker.admit(5.0)
    assert breaker.succeeded()  # it was open: HTTP answers again
    assert breaker.state(5.0) == "closed"
    assert breaker.failures == 0
    assert all(breaker.admit(t) for t in (5.0, 5.1, 5.2))


@pytest.mark.parametrize("failures", [1, 10, 1000])
def test_zero_failures_to_open_never_opens(failures: int) -> None:
    breaker = HttpBreaker(failures_to_open=0, cooldown=5.0)
    assert not any(breaker.failed(now=float(t)) for t in range(failures))
    assert breaker.state(float(failures)) == "closed"
    assert breaker.admit(float(failures))


# -- the race -----------------------------------------------------------------------------


def test_the_route_follows_the_socket() -> None:
    assert RouteRace.route(socket_open=True) == ROUTE_WS
    assert RouteRace.route(socket_open=False) == ROUTE_HTTP


def test_a_websocket_reply_in_time_answers_and_nothing_races() -> None:
    race = RouteRace(verdict_timeout=2.0)
    settle = FirstAnswer()
    entry = race.sent_over_ws(message(), now=10.0, connection=1, settle=settle)
    assert race.next_deadline() == 12.0
    assert race.overdue(11.99) == []
    outcome = race.ws_reply(entry.reference, answered=True)
    assert (outcome.status, outcome.entry, outcome.cancel_http) == ("answered", entry, False)
    assert race.next_deadline() is None
    assert race.ws_reply(entry.reference, answered=True).status == "duplicate"
    assert race.stats == {"ws_error_replies": 0, "ws_won_race": 0, "ws_timeouts": 0,
                          "http_answers_dropped": 0}


def test_an_overdue_request_races_and_a_late_websocket_reply_still_wins() -> None:
    race = RouteRace(verdict_timeout=2.0)
    settle = FirstAnswer()
    entry = race.sent_over_ws(message(), now=0.0, connection=1, settle=settle)
    assert race.overdue(2.0) == [entry]  # goes over HTTP too
    assert race.overdue(5.0) == []  # once
    assert race.next_deadline() is None  # racing: no deadline to watch
    outcome = race.ws_reply(entry.reference, answered=True)
    assert (outcome.status, outcome.cancel_http) == ("answered", True)
    assert settle(WS_VERDICT)
    # HTTP's answer arrives anyway (it was not cancelled in time): dropped and counted.
    assert not race.http_answered(entry, settle, HTTP_VERDICT)
    assert settle.answers == [WS_VERDICT, HTTP_VERDICT]
    assert (race.stats["ws_timeouts"], race.stats["ws_won_race"],
            race.stats["http_answers_dropped"]) == (1, 1, 1)


def test_http_answering_first_makes_the_websocket_reply_late() -> None:
    race = RouteRace(verdict_timeout=2.0)
    settle = FirstAnswer()
    entry = race.sent_over_ws(message(), now=0.0, connection=1, settle=settle)
    race.overdue(3.0)
    assert race.http_answered(entry, settle, HTTP_VERDICT)
    assert race.ws_reply(entry.reference, answered=True).status == "late"
    assert len(race.table) == 0
    assert race.stats["http_answers_dropped"] == 0


def test_an_error_reply_sends_the_message_over_http_now() -> None:
    race = RouteRace(verdict_timeout=2.0)
    entry = race.sent_over_ws(message(), now=0.0, connection=1, settle=FirstAnswer())
    outcome = race.ws_reply(entry.reference, answered=False)
    assert (outcome.status, outcome.entry) == ("failed", entry)
    assert race.stats["ws_error_replies"] == 1
    assert race.next_deadline() is None  # it is HTTP's now, not overdue later


def test_a_closed_connection_moves_its_requests_not_those_racing_already() -> None:
    race = RouteRace(verdict_timeout=2.0)
    first = race.sent_over_ws(message(1), now=0.0, connection=1, settle=FirstAnswer())
    racing = race.sent_over_ws(message(2), now=0.5, connection=1, settle=FirstAnswer())
    other = race.sent_over_ws(message(3), now=5.0, connection=2, settle=FirstAnswer())
    assert race.overdue(2.1) == [first]
    assert race.connection_closed(1) == [racing]  # first is over HTTP already
    assert race.ws_reply(first.reference, answered=True).status == "late"
    assert race.ws_reply(other.reference, answered=True).status == "answered"


def test_a_request_the_socket_could_not_send_goes_over_http_alone() -> None:
    race = RouteRace(verdict_timeout=2.0)
    settle = FirstAnswer()
    entry = race.sent_over_ws(message(), now=0.0, connection=1, settle=settle)
    race.not_sent(entry)
    assert race.overdue(10.0) == []
    assert race.http_answered(None, settle, EngineError("HTTP failed too"))
    assert race.ws_reply(entry.reference, answered=True).status == "late"


@pytest.mark.parametrize("reference", [None, "never-sent"])
def test_a_reply_for_no_request_of_ours_is_unknown(reference: str | None) -> None:
    race = RouteRace(verdict_timeout=2.0)
    outcome = race.ws_reply(reference, answered=True)
    assert (outcome.status, outcome.entry) == ("unknown", None)

