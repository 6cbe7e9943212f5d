"""Running the daemon: building the components from the config, signals, systemd
notifications, reloading, the exit status."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import trio

from chatmod.chatsight.webhook import KeywordAlert
from chatmod.config.load import Config, PluginConfig, load_config
from chatmod.config.state import state_directory
from chatmod.core.cache import VerdictCache
from chatmod.core.dead_letters import DeadLetters
from chatmod.core.engine_chain import EngineChain
from chatmod.core.pipeline import Pipeline
from chatmod.core.report import RunSummary
from chatmod.errors import ConfigError
from chatmod.http.api import StatusApi, server_limits
from chatmod.http.limits import raise_file_limit
from chatmod.http.server import serve_http
from chatmod.policy.escalation import Escalation
from chatmod.policy.live_control import LiveControl
from chatmod.policy.rules import Policy
from chatmod.review.service import ReviewQueue, ReviewSink
from chatmod.runtime.allocator import keep_freed_heap
from chatmod.runtime.collector import StartUpFreezer
from chatmod.runtime.logsetup import set_level
from chatmod.runtime.metrics import metrics_endpoint
from chatmod.runtime.stats_store import STATS_FILE, DecisionStats
from chatmod.runtime.systemd import STATUS_INTERVAL, Notifier
from chatmod.state.audit import AuditLog
from chatmod.state.control import SOCKET_NAME, serve_control
from chatmod.state.strikes import (
    STATE_FILE_NAME,
    MemoryStrikeStore,
    SqliteStrikeStore,
    StrikeStore,
)

log = logging.getLogger("chatmod")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def build_pipeline(config: Config) -> Pipeline:
    """Instantiate every configured plugin and join them into a pipeline."""
    engines = [config.engines[name].build() for name in config.engine_chain()]
    chain = EngineChain(engines, last_resort=last_resort(config), timeout=config.engine.timeout,
                        cache=build_cache(config))
    pipeline = Pipeline(
        sources=[spec.build() for spec in config.sources],
        engines=engines,
        chain=chain,
        policy=Policy(config.policy),
        sinks=[spec.build() for spec in config.sinks],
        concurrency=config.daemon.concurrency,
        queue_size=config.daemon.queue_size,
        stats_interval=config.daemon.stats_interval,
        dead_letters=DeadLetters(config.dead_letters),
        escalation=build_escalation(config),
    )
    return pipeline


def build_escalation(config: Config) -> Escalation | None:
    """The escalation stage and its store, when any ladder has steps or live control is on."""
    policy = config.policy
    if not config.state.control and not policy.ladder.steps and not any(
            c.ladder is not None and c.ladder.steps for c in policy.channels.values()):
        return None
    return Escalation(policy, build_strike_store(config), refresh=config.state.refresh)


def build_strike_store(config: Config) -> StrikeStore:
    """The store ``[state]`` names (``auto``: SQLite under the state directory, else memory)."""
    section = config.state
    state = state_directory(config.daemon.state_dir)
    if section.backend == "redis":
        # Imported here: the Redis client costs 17 MiB of memory, for deployments without it too.
        from chatmod.state.redis_store import RedisStrikeStore

        return RedisStrikeStore(section)
    if section.backend == "sqlite" or (section.backend == "auto" and state is not None):
        if state is None:
            raise ConfigError.at("state.backend", "sqlite needs [daemon] state_dir (or "
                                                  "$STATE_DIRECTORY)")
        return SqliteStrikeStore(state / STATE_FILE_NAME)
    return MemoryStrikeStore()


def build_review(config: Config, state_dir: Path | None, pipeline: Pipeline
                 ) -> ReviewQueue | None:
    """The review queue when ``[review]`` is enabled: its sink joins the pipeline's sinks and
    its allow-list is asked before any engine."""
    if not config.review.enabled:
        return None
    if config.review.backend == "sqlite" and state_dir is None:
        raise ConfigError.at("review.backend", "sqlite needs a state directory: set [daemon] "
                                               "state_dir (or $STATE_DIRECTORY), or use redis")
    review = ReviewQueue(config.review, state_dir, pipeline.deliver_record)
    pipeline.sinks.append(ReviewSink(review))
    pipeline.chain.prejudge = review.allow_list.verdict_for
    return review


def build_cache(config: Config) -> VerdictCache | None:
    if not config.cache.enabled or config.cache.ttl <= 0:
        return None
    return VerdictCache(config.cache.size, config.cache.ttl)


def last_resort(config: Config) -> str:
    """The chain's answer when every engine failed."""
    fallback = config.engine.fallback
    if fallback and fallback[-1] in ("pass", "flag"):
        return fallback[-1]
    # Fail closed when every engine failed and no final answer was configured.
    return "flag"


class Service:
    """The running daemon: its pipeline, its config, and what signals do to them."""

    def __init__(self, config: Config, config_path: str | Path,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.config_path = Path(config_path)
        self.pipeline = build_pipeline(config)
        self.notifier = notifier or Notifier()
        self.reloads = 0
        self.ready = False
        self.http_port: int | None = None
        state = state_directory(config.daemon.state_dir)
        self.decision_stats = DecisionStats(state / STATS_FILE if state else None)
        self.pipeline.observers.append(self.decision_stats.count)
        self.api: StatusApi | None = None
        self.review = build_review(config, state, self.pipeline)
        self.freezer = StartUpFreezer()

    async def serve(self) -> RunSummary:
        """Run until the sources end or a stop signal."""
        pipeline, notifier = self.pipeline, self.notifier
        # Connections (HTTP, IRC, Redis, Chatsight) must not run out of descriptors at 1024:
        # nothing here uses select(), so the hard limit is safe (systemd's advice, Go's habit).
        log.debug("open file limit: %d", raise_file_limit())
        log.debug("C heap: %s", keep_freed_heap())
        with trio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._handle_signals, signals)
                nursery.start_soon(notifier.keep_watchdog_fed)
                await nursery.start(self.decision_stats.run)
                if self.review is not None:
                    await nursery.start(partial(
                        pipeline.supervisor.supervise, "review", "queue", self.review.run))
                http = self.config.http
                if http.enabled:
                    self.api = StatusApi(self.is_ready, metrics_endpoint(self),
                                               alerts=self._alert, section=http,
                                               decision_stats=self.decision_stats)
                    self.http_port = await nursery.start(partial(
                        pipeline.supervisor.supervise, "http", "server", self._serve_http))
                    log.info("serving /healthz, /readyz, /metrics and /stats on %s:%d",
                             http.host, self.http_port)
                done = trio.Event()
                summary: list[RunSummary] = []

                async def run_pipeline(*, task_status: trio.TaskStatus[None]) -> None:
                    summary.append(await pipeline.run(task_status=task_status))
                    done.set()

                await nursery.start(run_pipeline)
                await self._start_control(nursery)
                # Everything is built: out of the cyclic collector's sight from now on.
                await nursery.start(self.freezer.run)
                self.ready = True
                notifier.ready(self.status())
                nursery.start_soon(self._report_status)
                await done.wait()
                nursery.cancel_scope.cancel()  # the stats are flushed as they stop
        notifier.close()
        return summary[0]

    async def _start_control(self, nursery: trio.Nursery) -> None:
        """Live control on ``<state_dir>/control.sock`` when ``[state] control`` is on."""
        state = state_directory(self.config.daemon.state_dir)
        escalation = self.pipeline.escalation
        if not self.config.state.control or escalation is None:
            return
        if state is None:
            log.error("[state] control needs [daemon] state_dir: live control is off")
            return
        control = LiveControl(escalation, AuditLog(state))
        await nursery.start(partial(self.pipeline.supervisor.supervise, "control", "socket",
                                    partial(serve_control, state, control.handle)))
        log.info("live control on %s", state / SOCKET_NAME)

    async def _serve_http(self, *, task_status: trio.TaskStatus[int]) -> None:
        assert self.api is not None
        http = self.config.http
        # A restart binds the port the first start got (it may have been asked as 0).
        await serve_http(self.api.handle, http.host, self.http_port or http.port,
                         max_body=http.max_body, limits=server_limits(http),
                         counters=self.api.server_counters, task_status=task_status)

    def is_ready(self) -> bool:
        """Started, and no supervised component is down (it is being restarted)."""
        return self.ready and not self.pipeline.supervisor.down()

    async def _alert(self, alert: KeywordAlert) -> None:
        await self.pipeline.deliver_alert(alert.to_record())

    def status(self) -> str:
        p = self.pipeline
        return (f"{p.decided} decided of {p.received} read, {p.in_flight} in flight, "
                f"{p.invalid} invalid input")

    async def _report_status(self) -> None:
        while True:
            await trio.sleep(STATUS_INTERVAL)
            self.notifier.status(self.status())

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        drain_timeout = self.config.daemon.drain_timeout
        stopping = False
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if not stopping:
                    self.reload()
            elif not stopping:
                stopping = True
                log.info("%s: stopped reading; finishing messages in flight (at most %g s)",
                         name, drain_timeout)
                self.notifier.stopping(f"draining: {self.status()}")
                self.pipeline.stop_reading(drain_timeout)
            else:
                log.warning("%s again: stopping now", name)
                self.pipeline.abort()

    def reload(self) -> None:
        """SIGHUP: reopen output files, re-read the config and apply what changed without
        dropping engine connections or messages in flight. A config that does not load is
        refused, and the running one stays."""
        self.notifier.reloading()
        self.pipeline.reopen_sinks()
        try:
            new = load_config(self.config_path, log_level=self.config.log_level_override)
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            self.notifier.ready(f"reload refused: {exc}; {self.status()}")
            return
        applied = apply_config(self.pipeline, self.config, new, self.api)
        if applied:  # what was replaced must be collectable
            self.freezer.thaw()
        self.config = new
        self.reloads += 1
        log.info("SIGHUP: reopened output files; config reloaded (%s)",
                 ", ".join(applied) or "no change")
        self.notifier.ready(self.status())


def apply_config(pipeline: Pipeline, old: Config, new: Config,
                 api: StatusApi | None = None) -> list[str]:
    """Apply ``new`` to a running pipeline built from ``old``; returns what changed."""
    applied: list[str] = []
    if new.policy != old.policy:
        pipeline.replace_policy(Policy(new.policy))
        applied.append("policy")
        if pipeline.escalation is not None:
            pipeline.escalation.reconfigure(new.policy)
        elif build_escalation(new) is not None:
            log.warning("reload: a ladder was added; counting strikes starts on restart")
    if new.dead_letters != old.dead_letters and pipeline.replace_dead_letters(
            DeadLetters(new.dead_letters)):
        applied.append("dead letters")
    if new.cache != old.cache:
        enabled = new.cache.enabled and new.cache.ttl > 0
        pipeline.reconfigure_cache(new.cache.size, new.cache.ttl if enabled else 0.0)
        applied.append("cache")
    if new.daemon.log_level != old.daemon.log_level:
        set_level(new.daemon.log_level)
        applied.append(f"log level {new.daemon.log_level}")
    if new.http != old.http:
        if api is not None and api.reconfigure(new.http):
            applied.append("keyword alert verification")
        else:
            log.warning("reload: [http] changed; the HTTP server changes on restart")
    if new.review != old.review:
        log.warning("reload: [review] changed; the review queue changes on restart")
    if new.engine != old.engine or new.engine_chain() != old.engine_chain():
        log.warning("reload: [engine] changed; the engine chain changes on restart")
    for engine in pipeline.chain.engines:
        before, after = old.engines[engine.name], new.engines.get(engine.name)
        if after is None or _same(before, after):
            continue
        if after.plugin_type == before.plugin_type and engine.reconfigure(after.options):
            applied.append(f"engine {engine.name}")
        elif pipeline.replace_engine(engine, after.build()):
            applied.append(f"engine {engine.name} restarted")
        else:
            log.warning("reload: engine %s, the primary, would no longer stream; that takes "
                        "a restart", engine.name)
    old_sources = {s.name: s for s in old.sources}
    if [(s.name, s.plugin_type) for s in new.sources] != [
            (s.name, s.plugin_type) for s in old.sources]:
        log.warning("reload: sources were added, removed or renamed; that takes a restart")
    else:
        for spec in new.sources:
            if _same(spec, old_sources[spec.name]):
                continue
            if pipeline.sources[spec.name].reconfigure(spec.options):
                applied.append(f"source {spec.name}")
            else:
                log.warning("reload: source %s changed in ways that need a restart", spec.name)
    if [_key(s) for s in new.sinks] != [_key(s) for s in old.sinks]:
        # The review queue's sink is the daemon's own, not the config's: it stays.
        kept = [sink for sink in pipeline.sinks if isinstance(sink, ReviewSink)]
        pipeline.replace_sinks([*(spec.build() for spec in new.sinks), *kept])
        applied.append("sinks")
    return applied


def _same(a: PluginConfig[Any], b: PluginConfig[Any]) -> bool:
    return _key(a) == _key(b)


def _key(spec: PluginConfig[Any]) -> tuple[str, str, object]:
    return (spec.name, spec.plugin_type, spec.options)


async def serve(config: Config, config_path: str | Path = "") -> RunSummary:
    """Run the daemon for ``config`` (read from ``config_path``, re-read on SIGHUP)."""
    return await Service(config, config_path or config.origin).serve()


def exit_status(summary: RunSummary) -> int:
    """0 when every message read was decided, else 1 (and say how many were not)."""
    if summary.undecided:
        log.error("%d message(s) were read but not decided before the daemon stopped",
                  summary.undecided)
        return 1
    return 0
