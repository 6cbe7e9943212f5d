"""Generated requests against the HTTP server in-process, and generated search bodies against
the stats routes: never a 5xx, never an error escaping, the server always still answering.

``HYPOTHESIS_PROFILE=thorough`` runs 10,000 examples a test (see tests/http_requests.py).
"""

from __future__ import annotations

import logging
from functools import partial

import trio
from hypothesis import example, given

from chatmod.chatsight.stats import parse_search_request
from chatmod.config.schema import Secret
from chatmod.http.api import HttpSection, StatusApi
from chatmod.http.limits import ServerLimits
from chatmod.http.server import serve_http
from chatmod.runtime.stats_store import DecisionStats

from .http_requests import fuzz_settings, peer_bytes, search_body
from .raw_http import exchange, request, statuses

BOUND = 10.0
LIMITS = ServerLimits(header_timeout=2.0, body_timeout=2.0, keep_alive_timeout=2.0)
# 501 is the answer RFC 9112 (6.1) asks for a transfer coding the server does not know (h11's).
NOT_IMPLEMENTED = 501
REGRESSIONS = [  # each once made the server fail or answer 500
    b'{"timefrom":"0001-01-01 00:00:00","timeto":"9999-12-31 23:59:59"}',
    b'{"timefrom":"9999-12-31 23:30:00","timeto":"9999-12-31 23:59:59"}',
]


class ErrorsSeen(logging.Handler):
    """Keeps every error the server logs: each is a failure it did not expect."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def status_api() -> StatusApi:
    section = HttpSection(enabled=True, max_body=4096,
                          chatsight_webhook_secret=Secret("fuzz", "fuzz-secret-0123456789"))
    return StatusApi(lambda: True, lambda: b"chatmod_messages_received_total 1\n", section=section,
                     decision_stats=DecisionStats(None))


@fuzz_settings(300)
@given(data=peer_bytes)
@example(data=b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
@example(data=b"HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
@example(data=b"GET /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n Host: 0\r\n\r\n0\r\n\r\n")
@example(data=b"POST /stats/moderation/search HTTP/1.1\r\nHost: t\r\nContent-Length: 66\r\n\r\n"
         + REGRESSIONS[0])
async def test_whatever_a_peer_sends_the_server_answers_below_500_and_goes_on(
        data: bytes) -> None:
    errors = ErrorsSeen()
    logging.getLogger("chatmod.http").addHandler(errors)
    try:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(partial(
                    serve_http, status_api().handle, "127.0.0.1", 0, max_body=4096,
                    limits=LIMITS))
                reply = await exchange(port, data)
                after = await exchange(port, request("GET", "/healthz", close=True))
                nursery.cancel_scope.cancel()
    finally:
        logging.getLogger("chatmod.http").removeHandler(errors)
    assert all(s < 500 or s == NOT_IMPLEMENTED for s in statuses(reply)), reply[:500]
    assert statuses(after) == [200]
    assert errors.messages == []


@fuzz_settings(300)
@given(body=search_body())
@example(body=REGRESSIONS[0])
@example(body=REGRESSIONS[1])
def test_a_search_request_is_read_or_refused_with_value_error_only(body: bytes) -> None:
    try:
        start, end = parse_search_request(body)
    except ValueError:
        return
    assert start.tzinfo is not None
    assert end.tzinfo is not None


@fuzz_settings(300)
@given(body=search_body())
@example(body=REGRESSIONS[0])
@example(body=REGRESSIONS[1])
async def test_a_search_body_never_gets_a_5xx(body: bytes) -> None:
    from chatmod.http.server import HttpRequest

    api = status_api()
    answer = await api.handle(HttpRequest("POST", "/stats/moderation/search", "", {}, body))
    assert answer.status in (200, 400), (answer.status, answer.body)
