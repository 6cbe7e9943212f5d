"""What the embedded HTTP server allows a peer and how it reports: its limits (connections,
timeouts), its counters for /metrics, the rate-limited log of refusals, and the process's
file-descriptor limit."""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

from chatmod.config.sections import (
    HTTP_BODY_TIMEOUT,
    HTTP_HEADER_TIMEOUT,
    HTTP_KEEP_ALIVE_TIMEOUT,
    HTTP_MAX_CONNECTIONS,
)

log = logging.getLogger("chatmod.http")

# The defaults of what [http] can set live with the section (one number for both).
DEFAULT_MAX_CONNECTIONS = HTTP_MAX_CONNECTIONS
HEADER_TIMEOUT = HTTP_HEADER_TIMEOUT
BODY_TIMEOUT = HTTP_BODY_TIMEOUT
KEEP_ALIVE_TIMEOUT = HTTP_KEEP_ALIVE_TIMEOUT
SEND_TIMEOUT = 10.0
SHUTDOWN_GRACE = 3.0
ACCEPT_RETRY_DELAY = 0.1  # after accept failed for want of file descriptors or memory
LOG_INTERVAL = 10.0


@dataclass(frozen=True)
class ServerLimits:
    """What one peer may hold: connections, and seconds for each stage of a request."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT
    send_timeout: float = SEND_TIMEOUT
    shutdown_grace: float = SHUTDOWN_GRACE


class RateLimitedLog:
    """At most one line per ``key`` every ``interval`` seconds; the next line says how many
    were left out, so a flood is visible without flooding the log."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: object,
            exc_info: BaseException | None = None) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return
        self._last[key] = now
        left_out = self._left_out.pop(key, 0)
        if left_out:
            message += " (and %d more like this since)"
            args = (*args, left_out)
        self.logger.log(level, message, *args, exc_info=exc_info)


class ServerCounters:
    """What the server did, for /metrics: counts that only grow, and ``open`` connections."""

    KEYS = ("accepted", "requests", "evicted", "refused_busy", "refused_requests",
            "idle_closed", "accept_errors", "connection_failures", "handler_failures")

    def __init__(self) -> None:
        self.counts = dict.fromkeys(self.KEYS, 0)
        self.open = 0

    def add(self, key: str) -> None:
        self.counts[key] += 1

    def statistics(self) -> dict[str, float]:
        return {**self.counts, "open": self.open}


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit (as Go does at
    start), so connections do not run out of descriptors at 1024; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.debug("could not raise the open file limit from %d", soft)
    return soft
