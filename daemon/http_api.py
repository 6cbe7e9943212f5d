"""The daemon's own HTTP endpoints: ``GET /healthz`` (alive), ``GET /readyz`` (sources,
engine and sinks started) and ``GET /metrics`` (Prometheus text format, from every
component's ``statistics()``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from chatmod.http_server import HttpRequest, HttpResponse
from chatmod.schema import setting

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class HttpSection:
    enabled: bool = setting(False, help="serve /healthz, /readyz and /metrics")
    host: str = setting("127.0.0.1", nonempty=True, help="address to listen on (loopback "
                                                          "unless you mean otherwise)")
    port: int = setting(9177, min=0, max=65535)
    max_body: int = setting(65536, min=0, help="largest request body accepted (bytes)")


def metric_name(*parts: str) -> str:
    name = "_".join(_NOT_NAME.sub("_", part) for part in parts if part)
    return "chatmod_" + re.sub("_+", "_", name).strip("_")


def prometheus_text(groups: Mapping[str, Mapping[str, float]]) -> str:
    """``{"pipeline": {"received": 3, ...}, "sink_jsonl": {...}}`` as exposition text."""
    lines: list[str] = []
    for group, stats in groups.items():
        for key, value in sorted(stats.items()):
            name = metric_name(group, key)
            lines.append(f"# TYPE {name} untyped")
            lines.append(f"{name} {float(value):g}")
    return "\n".join(lines) + "\n"


class StatusApi:
    def __init__(self, ready: Callable[[], bool],
                 statistics: Callable[[], Mapping[str, Mapping[str, float]]]) -> None:
        self.ready = ready
        self.statistics = statistics

    async def handle(self, request: HttpRequest) -> HttpResponse:
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
            return HttpResponse(200, prometheus_text(self.statistics()).encode(),
                                content_type=PROMETHEUS_TYPE)
        return HttpResponse(404, b'{"error": "not found"}')
