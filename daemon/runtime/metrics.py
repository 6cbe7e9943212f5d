"""``GET /metrics``: the components' ``statistics()`` as typed Prometheus families.

A custom collector (:class:`MetricsCollector`) reads the running daemon at each scrape and
yields counters (``_total``), gauges and the decision-latency histogram, rendered by
``prometheus_client`` from a private registry. Rules it keeps:

- Labels, not names, carry the action, route, engine, sink, source and component.
- Series for label values known from the configuration exist from the start, at zero.
- Counters never go down within one process. Components a reload replaces hand their counts
  on (:class:`RetiredCounters`), and a guard (:class:`CounterGuard`) carries any other reset
  (a third-party plugin that restarts its counts) over, so only a process restart resets them.
- Plugin statistics keys are counters unless listed in :data:`GAUGE_KEYS`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from chatmod.config.sections import DEFAULT_ACTIONS, PolicySection
from chatmod.core.cache import ROUTE_CACHE
from chatmod.core.counters import (
    CONNECTION_UP,
    RetiredCounters,
    is_gauge_key,
    safe_statistics,
)
from chatmod.core.engine_chain import NO_ENGINE, ROUTE_FALLBACK
from chatmod.core.interfaces import Plugin
from chatmod.core.latency import LATENCY_BOUNDS_MS
from chatmod.policy.rules import NO_ACTION
from chatmod.review.model import OUTCOMES

if TYPE_CHECKING:
    from chatmod.runtime.service import Service

log = logging.getLogger("chatmod.metrics")

# statistics() keys that hold a label value: (pattern, family suffix, label name).
_LABELLED_KEYS = (
    (re.compile(r"route\.(?P<value>[\w-]+)$"), "verdicts", "route"),
    (re.compile(r"http\.status_(?P<value>\d+)$"), "http_responses", "status"),
)
_NOT_NAME = re.compile(r"[^a-z0-9_]+")


def family_name(*parts: str) -> str:
    """``chatmod_`` and the parts in snake case (Prometheus' metric name rules)."""
    name = "_".join(_NOT_NAME.sub("_", part.lower()) for part in parts if part)
    return "chatmod_" + re.sub("_+", "_", name).strip("_")


@dataclass
class _Family:
    name: str
    kind: str  # counter or gauge
    help: str
    labels: tuple[str, ...]
    from_plugin: bool = False
    samples: dict[tuple[str, ...], float] = field(default_factory=dict)


class CounterGuard:
    """Keeps every exported counter from going down: a value below the last one seen is a
    reset, and the last value becomes an offset added from then on. A series once exported
    stays exported (at its last value) even if its source is gone."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, tuple[str, ...]], list[float]] = {}  # [last raw, offset]
        self._families: dict[str, tuple[str, tuple[str, ...]]] = {}  # name -> (help, labels)

    def apply(self, families: dict[str, _Family]) -> None:
        for family in families.values():
            if family.kind != "counter":
                continue
            self._families.setdefault(family.name, (family.help, family.labels))
            for labels, raw in family.samples.items():
                state = self._series.get((family.name, labels))
                if state is None:
                    state = self._series[(family.name, labels)] = [raw, 0.0]
                elif raw < state[0]:
                    state[1] += state[0]
                state[0] = raw
                family.samples[labels] = state[0] + state[1]
        for (name, labels), (last, offset) in self._series.items():
            gone = families.get(name)
            if gone is None:
                help_text, label_names = self._families[name]
                gone = families[name] = _Family(name, "counter", help_text, label_names)
            gone.samples.setdefault(labels, last + offset)


class _Scrape:
    """The families of one scrape, before they become prometheus_client metrics."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def add(self, kind: str, name: str, help_text: str, value: float,
            labels: Mapping[str, str] | None = None, *, from_plugin: bool = False) -> None:
        labels = labels or {}
        names = tuple(labels)
        family = self.families.get(name)
        if family is not None and (family.kind, family.labels, family.from_plugin) != (
                kind, names, from_plugin):
            if from_plugin and not family.from_plugin:
                # A plugin's key must not add to (or take) a built-in family.
                renamed = name.replace("chatmod_", "chatmod_plugin_", 1)
                self.add(kind, renamed, help_text, value, labels, from_plugin=True)
                return
            if from_plugin:  # two plugins use one key differently: the first one keeps it
                log.debug("plugin statistic %s clashes in type or labels; left out", name)
                return
            raise ValueError(f"metric family {name} declared twice differently")
        if family is None:
            family = self.families[name] = _Family(name, kind, help_text, names, from_plugin)
        key = tuple(labels.values())
        family.samples[key] = family.samples.get(key, 0.0) + value

    def counter(self, name: str, help_text: str, value: float, **labels: str) -> None:
        self.add("counter", family_name(name), help_text, value, labels)

    def gauge(self, name: str, help_text: str, value: float, **labels: str) -> None:
        self.add("gauge", family_name(name), help_text, value, labels)

    def metrics(self) -> Iterator[Metric]:
        for family in self.families.values():
            metric: CounterMetricFamily | GaugeMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
            for values, value in family.samples.items():
                metric.add_metric(list(values), value)
            yield metric


def policy_actions(section: PolicySection) -> set[str]:
    """Every action the policy can decide: the action label's values known from the start."""
    actions = {NO_ACTION, section.unknown_verdict_action, *DEFAULT_ACTIONS.values(),
               *section.actions.values()}
    for override in section.channels.values():
        actions.update(override.actions.values())
    return actions


_LE = [repr(bound / 1000.0) for bound in LATENCY_BOUNDS_MS] + ["+Inf"]


class MetricsCollector:
    """Reads the running :class:`~chatmod.runtime.service.Service` at each scrape."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.guard = CounterGuard()

    def collect(self) -> Iterator[Metric]:
        scrape = _Scrape()
        self._pipeline(scrape)
        self._engines(scrape)
        self._components(scrape)
        self._daemon(scrape)
        self.guard.apply(scrape.families)
        yield from scrape.metrics()
        yield self._latency()

    def _known_series(self) -> None:
        """Latency (and so route) series every configured engine can produce, at zero."""
        chain, latency = self.service.pipeline.chain, self.service.pipeline.latency
        for position, engine in enumerate(chain.engines):
            for route in (engine.verdict_routes if position == 0 else (ROUTE_FALLBACK,)):
                latency.ensure(engine.name, route)
        if chain.cache is not None:
            latency.ensure(chain.engines[0].name, ROUTE_CACHE)
        latency.ensure(NO_ENGINE, chain.last_resort_route)

    def _pipeline(self, s: _Scrape) -> None:
        self._known_series()
        p = self.service.pipeline
        s.counter("messages_received", "Messages the sources handed over.", p.received)
        s.counter("messages_decided", "Messages decided and handed to the sinks.", p.decided)
        s.counter("messages_invalid", "Input the sources could not read as a message.",
                  p.invalid)
        s.gauge("messages_in_flight", "Messages read and not yet decided.", p.in_flight)
        s.counter("messages_unacknowledged", "Decisions no sink nor the dead letters took "
                  "(left unacknowledged for a durable source).", p.unacknowledged)
        s.counter("messages_dead_lettered", "Messages that failed twice in the pipeline and "
                  "went to the dead letters.", p.dead_lettered)
        s.counter("message_failures", "Attempts at a message that failed in the pipeline.",
                  p.message_failures)
        s.counter("observer_failures", "Decision batches a counting observer failed on.",
                  p.observer_failures)
        s.counter("alerts", "Keyword alerts handed to the sinks.", p.alerts)
        if p.dead_letters is not None:
            s.counter("dead_letters_written", "Records written to the dead letters.",
                      p.dead_letters.written)
            s.counter("dead_letters_failed", "Records the dead letters could not take.",
                      p.dead_letters.failed)
        actions = policy_actions(self.service.config.policy) | set(p.actions)
        for action in sorted(actions):
            s.counter("decisions", "Decisions by the policy's action.", p.actions[action],
                      action=action)
        routes = {route for _, route, _ in p.latency.items()} | set(p.routes)
        for route in sorted(routes):
            s.counter("decision_routes", "Decisions by how the verdict was obtained.",
                      p.routes[route], route=route)
        for sink in sorted({sink.name for sink in p.sinks} | set(p.sink_failures)):
            s.counter("sink_failed_decisions", "Decisions a sink could not take.",
                      p.sink_failures[sink], sink=sink)
        cache = p.chain.cache
        if cache is not None:
            s.counter("cache_hits", "Verdicts answered from the cache.", cache.hits)
            s.counter("cache_shared", "Messages that waited on an identical text's request.",
                      cache.shared)
            s.counter("cache_misses", "Messages the cache could not answer.", cache.misses)
            s.gauge("cache_entries", "Verdicts held in the cache.", cache.statistics().get(
                "cache.size", 0.0))

    def _engines(self, s: _Scrape) -> None:
        p = self.service.pipeline
        chain, supervisor = p.chain, p.supervisor
        names = [engine.name for engine in chain.engines]
        for name in sorted(set(names) | set(chain.failures)):
            s.counter("engine_fallbacks", "Messages an engine failed on (the next engine or "
                      "the last resort answered).", chain.failures[name], engine=name)
        stats = _by_name("engine", chain.engines, p.retired)
        for name in names:
            _, gauges = stats.get(name, ({}, {}))
            connections = {key[len(CONNECTION_UP):]: up for key, up in gauges.items()
                           if key.startswith(CONNECTION_UP)}
            for connection, up in sorted(connections.items()):
                s.gauge("engine_connection_up", "1 while an engine's connection is usable "
                        "(Chatsight: websocket open; HTTP circuit breaker closed).", up,
                        engine=name, connection=connection)
            # components.get, not health(): a scrape must not register a component.
            health = supervisor.components.get(("engine", name))
            running = health is not None and health.up
            usable = not connections or any(connections.values())
            s.gauge("engine_up", "1 while an engine runs and one of its connections is "
                    "usable; 0 while its messages go to the fallback.",
                    1.0 if running and usable else 0.0, engine=name)

    def _components(self, s: _Scrape) -> None:
        p = self.service.pipeline
        for c in sorted(p.supervisor.components.values(), key=lambda c: (c.kind, c.name)):
            labels = {"kind": c.kind, "component": c.name}
            s.add("gauge", "chatmod_component_up", "1 while a supervised component runs; 0 "
                  "while it is being restarted.", 1.0 if c.up else 0.0, labels)
            s.add("counter", "chatmod_component_failures", "Failures of a supervised "
                  "component after it started.", c.failures, labels)
            s.add("counter", "chatmod_component_restarts", "Restarts of a supervised "
                  "component.", c.restarts, labels)
        # Last: a plugin's key that matches a built-in family's name is renamed, not merged.
        for kind, plugins in (("source", list(p.sources.values())), ("sink", p.sinks),
                              ("engine", p.chain.engines)):
            for name, (counts, gauges) in _by_name(kind, plugins, p.retired).items():
                for key, value in sorted(counts.items()):
                    _plugin_sample(s, "counter", kind, name, key, value)
                for key, value in sorted(gauges.items()):
                    if not key.startswith(CONNECTION_UP):
                        _plugin_sample(s, "gauge", kind, name, key, value)

    def _daemon(self, s: _Scrape) -> None:
        service = self.service
        s.counter("reloads", "Configuration reloads applied (SIGHUP).", service.reloads)
        s.gauge("ready", "1 when /readyz answers 200.", 1.0 if service.is_ready() else 0.0)
        lifetime = service.decision_stats.lifetime()
        for outcome, value in (("passed", lifetime.passed), ("flagged", lifetime.flagged),
                               ("deleted", lifetime.deleted)):
            s.gauge("stats_lifetime_decisions", "Decisions in the stats store since it was "
                    "created (kept across restarts; what /stats/moderation reports).", value,
                    outcome=outcome)
        s.counter("stats_flush_failures", "Times the stats store could not be written.",
                  service.decision_stats.flush_failures)
        review = service.review
        if review is not None:
            s.gauge("review_queue_size", "Decisions waiting in the review queue (the whole "
                    "group's with the redis backend).", review.backlog_size)
            s.gauge("review_oldest_age_seconds", "Seconds the oldest item in the review queue "
                    "has waited; 0 when none waits.", review.oldest_age())
            s.counter("review_queued", "Decisions this daemon put in the review queue.",
                      review.queued)
            for outcome in sorted({*OUTCOMES, *review.reviews}):
                s.counter("reviews", "Reviews seen by this daemon, by outcome.",
                          review.reviews[outcome], outcome=outcome)
            s.counter("review_records", "Review records this daemon handed to its sinks.",
                      review.records_delivered)
            s.counter("review_record_failures", "Hand-overs of review records a sink refused "
                      "(tried again after a backoff).", review.delivery_failures)
            s.counter("allow_list_hits", "Messages passed by the review allow-list (no engine "
                      "asked).", review.allow_list.hits)
            s.gauge("allow_list_entries", "Texts on the review allow-list.",
                    len(review.allow_list))
        if service.api is not None:
            s.counter("keyword_alerts_rejected", "Keyword alert webhooks refused.",
                      service.api.rejected)
            for key, count in sorted(service.api.server_counters.statistics().items()):
                if key == "open":
                    s.gauge("http_connections_open", "Connections the daemon's HTTP server "
                            "holds now.", count)
                else:
                    s.counter("http_server_events", "What the daemon's HTTP server did: "
                              "connections accepted, evicted, refused, closed idle or failed, "
                              "requests answered.", count, event=key)

    def _latency(self) -> HistogramMetricFamily:
        histogram = HistogramMetricFamily(
            "chatmod_decision_latency_seconds", "Seconds from a message's intake by the "
            "moderation stage to its verdict, by engine and route.", labels=("engine", "route"))
        for engine, route, h in sorted(self.service.pipeline.latency.items(),
                                       key=lambda item: item[:2]):
            histogram.add_metric([engine, route], list(zip(_LE, h.cumulative(), strict=True)),
                                 h.sum_ms / 1000.0)
        return histogram


def _by_name(kind: str, live: Iterable[Plugin[Any]], retired: RetiredCounters
             ) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """name -> (counters, gauges) of every component of ``kind``: the running ones, plus the
    counts of the ones a reload replaced under the same name."""
    result: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for (retired_kind, name), totals in retired.totals.items():
        if retired_kind == kind:
            result[name] = (dict(totals), {})
    for plugin, running in [*((p, True) for p in live),
                            *((p, False) for p in retired.retiring if p.kind == kind)]:
        counts, gauges = result.setdefault(plugin.name, ({}, {}))
        for key, value in safe_statistics(plugin).items():
            if is_gauge_key(key):
                if running:
                    gauges[key] = value
            else:
                counts[key] = counts.get(key, 0.0) + value
    return result


def _plugin_sample(s: _Scrape, kind: str, component: str, name: str, key: str,
                   value: float) -> None:
    labels = {component: name}
    for pattern, suffix, label in _LABELLED_KEYS:
        match = pattern.match(key)
        if match:
            key, labels[label] = suffix, match["value"]
            break
    help_text = (f"{key} of {component} plugins (their statistics(); see the plugin's "
                 "documentation).")
    s.add(kind, family_name(component, key), help_text, value, labels, from_plugin=True)


def metrics_endpoint(service: Service) -> Callable[[], bytes]:
    """The body of ``GET /metrics`` for ``service``, from a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(service))
    return lambda: generate_latest(registry)
