"""The daemon's own HTTP endpoints: ``GET /healthz`` (alive), ``GET /readyz`` (sources,
engine and sinks started), ``GET /metrics`` (Prometheus text format, from every
component's ``statistics()``), ``GET /stats/moderation`` and ``POST /stats/moderation/search``
(its decision counts in Chatsight's shapes) and, with a webhook secret configured,
``POST /webhooks/chatsight`` (keyword alerts)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from chatmod.chatsight_webhook import (
    DEFAULT_WINDOW,
    KeywordAlert,
    ReplayGuard,
    WebhookRejected,
    verify,
)
from chatmod.http_server import HttpRequest, HttpResponse
from chatmod.schema import Secret, setting
from chatmod.stats_protocol import (
    LIFETIME_PATH,
    SEARCH_PATH,
    envelope,
    lifetime_reply,
    parse_search_request,
    search_reply,
)
from chatmod.stats_store import DecisionStats

log = logging.getLogger("chatmod.http")

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class HttpSection:
    enabled: bool = setting(False, help="serve /healthz, /readyz and /metrics")
    host: str = setting("127.0.0.1", nonempty=True, help="address to listen on (loopback "
                                                          "unless you mean otherwise)")
    port: int = setting(9177, min=0, max=65535)
    max_body: int = setting(65536, min=0, help="largest request body accepted (bytes)")
    chatsight_webhook_secret: Secret | None = None
    webhook_window: float = setting(DEFAULT_WINDOW, min=1.0, help="seconds a keyword alert's "
                                                                 "timestamp may be off")


def _verification(section: HttpSection) -> tuple[bytes | None, ReplayGuard]:
    """The webhook secret (None: no receiver) and a fresh replay guard for its window."""
    secret = section.chatsight_webhook_secret
    return (secret.reveal().encode() if secret else None), ReplayGuard(section.webhook_window)


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

    def reconfigure(self, section: HttpSection) -> bool:
        """A reload: the webhook secret and window apply at once (after ``chatmod secret
        rotate``); False when the listening address or limits changed (that takes a restart)."""
        old = self.section
        if (section.enabled, section.host, section.port, section.max_body) != (
                old.enabled, old.host, old.port, old.max_body):
            return False
        self.section = section
        self._secret, self._guard = _verification(section)
        return True

    async def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path == WEBHOOK_PATH and self._secret is not None:
            return await self._keyword_alert(request)
        if request.path == SEARCH_PATH and self.decision_stats is not None:
            return await self._search(request, self.decision_stats)
        if request.method != "GET":
            return HttpResponse(405, b'{"error": "method not allowed"}',
                                headers=(("allow", "GET"),))
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
