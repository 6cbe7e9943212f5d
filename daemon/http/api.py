"""The daemon's own HTTP endpoints: ``GET /healthz`` (alive), ``GET /readyz`` (sources,
engine and sinks started), ``GET /metrics`` (Prometheus text format, from every
component's ``statistics()``), ``GET /stats/moderation`` and ``POST /stats/moderation/search``
(its decision counts in Chatsight's shapes) and, with a webhook secret configured,
``POST /webhooks/chatsight`` (keyword alerts)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from chatmod.chatsight.stats import (
    LIFETIME_PATH,
    SEARCH_PATH,
    envelope,
    lifetime_reply,
    parse_search_request,
    search_reply,
)
from chatmod.chatsight.webhook import (
    KeywordAlert,
    ReplayGuard,
    verify,
)
from chatmod.config.sections import HttpSection
from chatmod.errors import WebhookRejected
from chatmod.http.limits import ServerCounters, ServerLimits
from chatmod.http.server import HttpRequest, HttpResponse

if TYPE_CHECKING:  # handed in by the runtime, which owns it
    from chatmod.runtime.stats_store import DecisionStats

log = logging.getLogger("chatmod.http")

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def server_limits(section: HttpSection) -> ServerLimits:
    """The server's limits from ``[http]`` (the rest keep their defaults)."""
    return ServerLimits(max_connections=section.max_connections,
                        header_timeout=section.header_timeout, body_timeout=section.body_timeout,
                        keep_alive_timeout=section.keep_alive_timeout)


def _verification(section: HttpSection, guard: ReplayGuard | None = None
                  ) -> tuple[bytes | None, ReplayGuard]:
    """The webhook secret (None: no receiver) and the replay guard for its window: ``guard``
    (on a reload) with the window set, so a reload does not forget the bodies accepted."""
    secret = section.chatsight_webhook_secret
    if guard is None:
        guard = ReplayGuard(section.webhook_window)
    else:
        guard.set_window(section.webhook_window)
    return (secret.reveal().encode() if secret else None), guard


WEBHOOK_PATH = "/webhooks/chatsight"


class StatusApi:
    def __init__(
        self, ready: Callable[[], bool],
        metrics: Callable[[], bytes],
        alerts: Callable[[KeywordAlert], Awaitable[None]] | None = None,
        section: HttpSection | None = None,
        decision_stats: DecisionStats | None = None,
    ) -> None:
        self.ready = ready
        self.metrics = metrics  # the body of /metrics
        self.alerts = alerts
        self.decision_stats = decision_stats
        self.section = section or HttpSection()
        self._secret, self._guard = _verification(self.section)
        self.rejected = 0
        self.server_counters = ServerCounters()  # for serve_http's ``counters``

    def reconfigure(self, section: HttpSection) -> bool:
        """A reload: the webhook secret and window apply at once (after ``chatmod secret
        rotate``); False when the listening address or limits changed (that takes a restart)."""
        old = self.section
        if (section.enabled, section.host, section.port, section.max_body,
                server_limits(section)) != (
                old.enabled, old.host, old.port, old.max_body, server_limits(old)):
            return False
        self.section = section
        self._secret, self._guard = _verification(section, self._guard)
        return True

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == WEBHOOK_PATH and self._secret is not None:
            return await self._keyword_alert(request)
        if request.path == SEARCH_PATH and self.decision_stats is not None:
            return await self._search(request, self.decision_stats)
        if request.method != "GET":  # the server answers HEAD as GET
            return HttpResponse(405, b'{"error": "method not allowed"}',
                                headers=(("allow", "GET, HEAD"),))
        if request.path == "/healthz":
            return HttpResponse(200, b'{"status": "alive"}')
        if request.path == "/readyz":
            if self.ready():
                return HttpResponse(200, b'{"status": "ready"}')
            return HttpResponse(503, b'{"status": "starting"}')
        if request.path == "/metrics":
            return HttpResponse(200, self.metrics(), content_type=PROMETHEUS_TYPE)
        if request.path == LIFETIME_PATH and self.decision_stats is not None:
            return HttpResponse(200, lifetime_reply(self.decision_stats.lifetime()))
        return HttpResponse(404, b'{"error": "not found"}')

    async def _search(self, request: HttpRequest, stats: DecisionStats) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(405, b'{"error": "method not allowed"}',
                                headers=(("allow", "POST"),))
        try:
            start, end = parse_search_request(request.body)
        except ValueError as exc:
            return HttpResponse(400, envelope(str(exc), success=False))
        return HttpResponse(200, search_reply(await stats.search(start, end)))

    async def _keyword_alert(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(405, b'{"error": "method not allowed"}',
                                headers=(("allow", "POST"),))
        assert self._secret is not None
        try:
            alert = verify(request.body, self._secret, time.time(), self._guard)
        except WebhookRejected as exc:
            self.rejected += 1
            log.warning("keyword alert refused (%d): %s", exc.status, exc.reason)
            return HttpResponse(exc.status, orjson.dumps({"error": exc.reason}))
        if self.alerts is not None:
            await self.alerts(alert)
        return HttpResponse(200, b'{"status": "accepted"}')
