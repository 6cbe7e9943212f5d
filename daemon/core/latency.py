"""Decision latency as histograms per engine and route: what /metrics exports (Prometheus
``histogram_quantile`` works on it) and what the periodic log line estimates p50 / p99 from.

Recording is on the decision path for every message, so it is O(1) and allocates nothing
once a series exists: two dict lookups, one binary search over the fixed bounds, two adds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chatmod.core.model import Verdict

# Bucket upper bounds in milliseconds (the pipeline measures in ms): 0.1 ms to 10 s, about
# three per decade. Exported in seconds, Prometheus' base unit.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
    1000.0, 2500.0, 5000.0, 10000.0,
)


class LatencyHistogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and the sum in ms."""

    __slots__ = ("counts", "sum_ms")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        self.sum_ms = 0.0

    def observe(self, latency_ms: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (``le``).
        self.counts[bisect_left(LATENCY_BOUNDS_MS, latency_ms)] += 1
        self.sum_ms += latency_ms

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[int]:
        """Observations at or below each bound, then the total (the ``+Inf`` bucket)."""
        running, result = 0, []
        for n in self.counts:
            running += n
            result.append(running)
        return result

    def merge(self, other: LatencyHistogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum_ms += other.sum_ms

    def quantile(self, q: float) -> float:
        """An estimate in ms, interpolated within the bucket like Prometheus'
        ``histogram_quantile`` (the highest finite bound when it falls in +Inf); 0 if empty."""
        total = self.count
        if not total:
            return 0.0
        rank = q * total
        below, lower = 0, 0.0
        for i, n in enumerate(self.counts):
            if below + n >= rank and n:
                if i == len(LATENCY_BOUNDS_MS):
                    return LATENCY_BOUNDS_MS[-1]
                upper = LATENCY_BOUNDS_MS[i]
                return lower + (upper - lower) * (rank - below) / n
            below += n
            if i < len(LATENCY_BOUNDS_MS):
                lower = LATENCY_BOUNDS_MS[i]
        return LATENCY_BOUNDS_MS[-1]


_NO_SERIES = LatencyHistogram()  # a placeholder, never counted in


class LatencyHistograms:
    """One :class:`LatencyHistogram` per (engine, route) the pipeline has seen or was told
    of. Label values come from configured engine names and the code's route constants, so
    the number of series is bounded by the configuration."""

    def __init__(self) -> None:
        self._by_engine: dict[str, dict[str, LatencyHistogram]] = {}

    def record(self, engine: str, route: str, latency_ms: float) -> None:
        """One decision's latency (hot path: inlined :meth:`LatencyHistogram.observe`)."""
        try:
            histogram = self._by_engine[engine][route]
        except KeyError:
            histogram = self._by_engine.setdefault(engine, {}).setdefault(
                route, LatencyHistogram())
        histogram.counts[bisect_left(LATENCY_BOUNDS_MS, latency_ms)] += 1
        histogram.sum_ms += latency_ms

    def record_batch(self, verdicts: Iterable[Verdict], latency_ms: float) -> None:
        """The same latency for each verdict's decision (a batch decided at once)."""
        bucket = bisect_left(LATENCY_BOUNDS_MS, latency_ms)
        # Most of a batch's verdicts are one object (an engine's shared pass) or of one
        # series: a series is looked up only when the verdict's differs from the last one's.
        last: Verdict | None = None
        histogram = _NO_SERIES  # replaced at the first verdict
        for verdict in verdicts:
            if verdict is not last:
                if last is None or verdict.engine != last.engine or verdict.route != last.route:
                    try:
                        histogram = self._by_engine[verdict.engine][verdict.route]
                    except KeyError:
                        histogram = self._by_engine.setdefault(verdict.engine, {}).setdefault(
                            verdict.route, LatencyHistogram())
                last = verdict
            histogram.counts[bucket] += 1
            histogram.sum_ms += latency_ms

    def ensure(self, engine: str, route: str) -> None:
        """Create the series now (it is exported from the start, at zero)."""
        self._by_engine.setdefault(engine, {}).setdefault(route, LatencyHistogram())

    def items(self) -> Iterator[tuple[str, str, LatencyHistogram]]:
        for engine, routes in self._by_engine.items():
            for route, histogram in routes.items():
                yield engine, route, histogram

    def percentiles(self) -> dict[str, tuple[float, float]]:
        """route -> estimated (p50, p99) in milliseconds, over every engine, for the log
        line; routes with no observation yet are left out."""
        by_route: dict[str, LatencyHistogram] = {}
        for _, route, histogram in self.items():
            by_route.setdefault(route, LatencyHistogram()).merge(histogram)
        return {route: (h.quantile(0.5), h.quantile(0.99))
                for route, h in by_route.items() if h.count}
