"""Supervision of the daemon's long-running components (sources, sinks, engines, the HTTP
server), after Erlang/OTP's one-for-one supervisors.

A component that fails after it started is logged once with its name and error (the
traceback at debug), counted, shown down (``/readyz``, ``/metrics``) and started again after
a jittered backoff. Its failure never ends the daemon. A component that fails *before* it
reported ready is a start-up error: that is raised to the caller, because at start it is
almost always the configuration (a port in use, a file that cannot be opened).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from chatmod.core.backoff import Backoff

log = logging.getLogger("chatmod.supervisor")

# Seconds before the first restart, and the most a restart waits.
RESTART_INITIAL_DELAY = 0.5
RESTART_MAX_DELAY = 30.0
# A component that ran this long before failing starts its backoff afresh.
STABLE_AFTER = 60.0

Runnable = Callable[..., Awaitable[Any]]


@dataclass
class ComponentHealth:
    """What the supervisor knows of one component."""

    kind: str  # source, sink, engine, http
    name: str
    up: bool = False
    failures: int = 0
    restarts: int = 0
    last_error: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


def describe(exc: BaseException) -> str:
    """``Type: text`` of the innermost error, never an empty string (a bare ``ssl`` or
    ``OSError`` can have no text)."""
    while isinstance(exc, BaseExceptionGroup):
        # The first error that is not a cancellation: what the others reacted to.
        real = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        exc = (real or list(exc.exceptions))[0]
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ReportedStatus:
    """A ``task_status`` that remembers whether ``started()`` was called, so that a task
    stopped before its component was ready can still report (and its starter not fail)."""

    def __init__(self, status: trio.TaskStatus[Any]) -> None:
        self._status = status
        self.reported = False

    def started(self, value: Any = None) -> None:
        if not self.reported:
            self.reported = True
            self._status.started(value)


class Supervisor:
    """Runs components, restarts the ones that fail, and keeps their health."""

    def __init__(self, *, initial_delay: float = RESTART_INITIAL_DELAY,
                 max_delay: float = RESTART_MAX_DELAY) -> None:
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.components: dict[tuple[str, str], ComponentHealth] = {}

    def health(self, kind: str, name: str) -> ComponentHealth:
        key = (kind, name)
        found = self.components.get(key)
        if found is None:
            found = self.components[key] = ComponentHealth(kind, name)
        return found

    def down(self) -> list[ComponentHealth]:
        """Components that are registered and not up."""
        return [c for c in self.components.values() if not c.up]

    def forget(self, kind: str, name: str) -> None:
        """A component was removed (reload): its health no longer counts."""
        self.components.pop((kind, name), None)

    async def supervise(
        self, kind: str, name: str, run: Runnable, *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``run(task_status=...)`` and start it again each time it fails after it was
        ready. Returns when ``run`` returns (a source whose chat ended). ``task_status``
        gets what the first start reported."""
        health = self.health(kind, name)
        backoff = Backoff(self.initial_delay, self.max_delay)
        ready = False
        while True:
            began = trio.current_time()
            try:
                async with trio.open_nursery() as nursery:
                    value = await nursery.start(run)
                    health.up = True
                    if not ready:
                        ready = True
                        task_status.started(value)
                    else:
                        log.warning("%s is running again", health.label)
            except Exception as exc:
                health.up = False
                if not ready:
                    raise
                health.failures += 1
                health.last_error = describe(exc)
                if trio.current_time() - began >= STABLE_AFTER:
                    backoff.reset()
                delay = backoff.next_delay()
                log.error("%s failed: %s; restarting in %.1f s", health.label,
                          health.last_error, delay)
                log.debug("%s failed", health.label, exc_info=exc)
                await trio.sleep(delay)
                health.restarts += 1
                continue
            return

    def statistics(self) -> dict[str, float]:
        stats: dict[str, float] = {}
        for c in self.components.values():
            key = f"{c.kind}.{c.name}"
            stats[f"{key}.up"] = 1.0 if c.up else 0.0
            stats[f"{key}.failures"] = c.failures
            stats[f"{key}.restarts"] = c.restarts
        return stats
