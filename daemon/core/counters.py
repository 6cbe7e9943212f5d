"""Counters that outlive the components holding them: what a plugin's ``statistics()`` says,
read safely, and the final counts of sources, sinks and engines a reload replaced (so that no
exported counter ever goes down before the process restarts)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from chatmod.core.interfaces import Plugin

log = logging.getLogger("chatmod.metrics")

#: statistics() keys that are levels, not counts (every other key is a counter).
GAUGE_KEYS = frozenset({"in_flight", "ws_open", "unacked", "largest_batch", "size"})
#: ``connection_up.<connection>`` keys (1 up, 0 down) become ``chatmod_engine_connection_up``.
CONNECTION_UP = "connection_up."


def is_gauge_key(key: str) -> bool:
    return key in GAUGE_KEYS or key.startswith(CONNECTION_UP)


def safe_statistics(plugin: Plugin[Any]) -> dict[str, float]:
    """A plugin's statistics as floats; a plugin whose statistics() fails or gives a value
    that is not a number costs those series, never the scrape."""
    try:
        raw = plugin.statistics()
    except Exception as exc:
        log.warning("%s %s: statistics() failed: %s", plugin.kind, plugin.name, exc)
        return {}
    stats: dict[str, float] = {}
    for key, value in raw.items():
        try:
            stats[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return stats


class RetiredCounters:
    """Counts of sources, sinks and engines that a reload replaced. While a replaced
    component is still finishing its work it is *retiring* and its live counts are added;
    once stopped, its final counts are kept in :attr:`totals` by (kind, name)."""

    def __init__(self) -> None:
        self.retiring: list[Plugin[Any]] = []
        self.totals: dict[tuple[str, str], dict[str, float]] = {}

    def begin(self, plugins: Iterable[Plugin[Any]]) -> None:
        """Call in the same step that takes ``plugins`` out of service."""
        self.retiring.extend(plugins)

    def finish(self, plugin: Plugin[Any]) -> None:
        """``plugin`` has stopped: keep its final counts (a no-op if it was not retiring)."""
        if not any(p is plugin for p in self.retiring):
            return
        self.retiring = [p for p in self.retiring if p is not plugin]
        totals = self.totals.setdefault((plugin.kind, plugin.name), {})
        for key, value in safe_statistics(plugin).items():
            if not is_gauge_key(key):
                totals[key] = totals.get(key, 0.0) + value
