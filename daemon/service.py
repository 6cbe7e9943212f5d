"""Running the daemon: building the components from the config, signals, the exit status."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator
from typing import cast

import trio

from chatmod.cache import VerdictCache
from chatmod.config import Config
from chatmod.engine_chain import EngineChain
from chatmod.interfaces import Engine, Sink, Source
from chatmod.pipeline import Pipeline, RunSummary
from chatmod.policy import Policy

log = logging.getLogger("chatmod")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def build_pipeline(config: Config) -> Pipeline:
    """Instantiate every configured plugin and join them into a pipeline."""
    engines = [cast(Engine, config.engines[name].build()) for name in config.engine_chain()]
    cache = (VerdictCache(config.cache.size, config.cache.ttl)
             if config.cache.enabled and config.cache.ttl > 0 else None)
    chain = EngineChain(engines, last_resort=_last_resort(config), timeout=config.engine.timeout,
                        cache=cache)
    return Pipeline(
        sources=[cast(Source, spec.build()) for spec in config.sources],
        engines=engines,
        chain=chain,
        policy=Policy(config.policy),
        sinks=[cast(Sink, spec.build()) for spec in config.sinks],
        concurrency=config.daemon.concurrency,
        queue_size=config.daemon.queue_size,
        stats_interval=config.daemon.stats_interval,
    )


def _last_resort(config: Config) -> str:
    fallback = config.engine.fallback
    if fallback and fallback[-1] in ("pass", "flag"):
        return fallback[-1]
    # Fail closed when every engine failed and no final answer was configured.
    return "flag"


async def serve(config: Config) -> RunSummary:
    """Run until the sources end or a stop signal; SIGHUP reopens the sinks' files."""
    pipeline = build_pipeline(config)
    with trio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_handle_signals, signals, pipeline, config.daemon.drain_timeout)
            summary = await pipeline.run()
            nursery.cancel_scope.cancel()
    return summary


async def _handle_signals(
    signals: AsyncIterator[int], pipeline: Pipeline, drain_timeout: float
) -> None:
    stopping = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            log.info("%s: reopening output files", name)
            pipeline.reopen_sinks()
        elif not stopping:
            stopping = True
            log.info("%s: stopped reading; finishing messages in flight (at most %g s)",
                     name, drain_timeout)
            pipeline.stop_reading(drain_timeout)
        else:
            log.warning("%s again: stopping now", name)
            pipeline.abort()


def exit_status(summary: RunSummary) -> int:
    """0 when every message read was decided, else 1 (and say how many were not)."""
    if summary.undecided:
        log.error("%d message(s) were read but not decided before the daemon stopped",
                  summary.undecided)
        return 1
    return 0
