"""What the pipeline reports: its counters for /metrics and its summary log lines."""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import trio

from chatmod.core.dead_letters import DeadLetters
from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import Engine
from chatmod.core.latency import LatencyHistograms

log = logging.getLogger("chatmod.pipeline")


@dataclass(frozen=True)
class RunSummary:
    received: int
    decided: int
    invalid: int
    #: Read and not decided: still in the pipeline at the stop, or read by a source and not
    #: yet handed over (the exit status is then 1).
    undecided: int
    stop_requested: bool
    #: Messages the pipeline could not decide (failed twice), written to the dead letters.
    dead_lettered: int = 0


class PipelineReport:
    """Statistics and log lines (a part of :class:`~chatmod.core.pipeline.Pipeline`)."""

    received: int
    decided: int
    invalid: int
    in_flight: int
    unacknowledged: int
    alerts: int
    dead_lettered: int
    message_failures: int
    observer_failures: int
    actions: Counter[str]
    routes: Counter[str]
    sink_failures: Counter[str]
    dead_letters: DeadLetters | None
    latency: LatencyHistograms
    chain: EngineChain
    engines: list[Engine[Any]]
    stats_interval: float

    def statistics(self) -> dict[str, float]:
        stats: dict[str, float] = {
            "received": self.received,
            "decided": self.decided,
            "invalid": self.invalid,
            "in_flight": self.in_flight,
            "unacknowledged": self.unacknowledged,
            "alerts": self.alerts,
        }
        stats.update({f"action.{k}": v for k, v in self.actions.items()})
        stats.update({f"route.{k}": v for k, v in self.routes.items()})
        stats.update({f"sink_failures.{k}": v for k, v in self.sink_failures.items()})
        stats["dead_lettered_messages"] = self.dead_lettered
        stats["message_failures"] = self.message_failures
        stats["observer_failures"] = self.observer_failures
        if self.dead_letters is not None:
            stats["dead_letters"] = self.dead_letters.written
            stats["dead_letters_failed"] = self.dead_letters.failed
        for route, (p50, p99) in self.latency.percentiles().items():
            stats[f"latency_ms.p50.{route}"] = p50
            stats[f"latency_ms.p99.{route}"] = p99
        stats.update(self.chain.statistics())
        for engine in self.engines:
            stats.update({f"{engine.name}.{k}": v for k, v in engine.statistics().items()})
        return stats

    def _log_statistics(self, when: str) -> None:
        actions = ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items())) or "none"
        routes = ", ".join(f"{k} {v}" for k, v in sorted(self.routes.items())) or "none"
        latency = ", ".join(f"{route} {p50:.1f}/{p99:.1f}" for route, (p50, p99)
                            in sorted(self.latency.percentiles().items())) or "none"
        log.info(
            "%s: %d received, %d decided (actions: %s; routes: %s), %d invalid input, "
            "%d in flight; latency p50/p99 ms: %s",
            when, self.received, self.decided, actions, routes, self.invalid, self.in_flight,
            latency,
        )
        for engine in self.engines:
            counters = " ".join(f"{k}={v:g}" for k, v in sorted(engine.statistics().items())
                                if v)
            if counters:
                log.info("%s: engine %s: %s", when, engine.name, counters)

    async def _log_statistics_periodically(self) -> None:
        while not math.isinf(self.stats_interval):
            await trio.sleep(self.stats_interval)
            self._log_statistics("so far")
