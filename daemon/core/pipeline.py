"""The pipeline: sources -> intake -> engine chain -> policy -> sinks -> acknowledgement.

Stages are joined by bounded memory channels, so a slow engine or sink makes the sources
wait instead of letting anything grow. Shutdown order when every source has ended (or was
told to stop reading): the intake closes, the moderation workers finish what they hold, the
sink stage writes every decision, sinks are flushed and closed, then background tasks stop.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from chatmod.core.counters import RetiredCounters
from chatmod.core.dead_letters import DeadLetters
from chatmod.core.delivery import SinkStage
from chatmod.core.engine_chain import EngineChain
from chatmod.core.intake import Room, SourceIntake
from chatmod.core.interfaces import Engine, SharedConnections, Sink, Source, StreamingEngine
from chatmod.core.latency import LatencyHistograms
from chatmod.core.model import Decision, Message
from chatmod.core.report import PipelineReport, RunSummary
from chatmod.core.stages.streaming import StreamingStages
from chatmod.core.supervisor import ReportedStatus, Supervisor
from chatmod.policy.rules import Policy

if TYPE_CHECKING:
    from chatmod.policy.escalation import Escalation

log = logging.getLogger("chatmod.pipeline")

# Seconds a replaced engine may keep answering the messages it holds.
ENGINE_RETIRE_GRACE = 60.0


class Pipeline(SinkStage, StreamingStages, PipelineReport):
    """Runs the sources, the engines, the policy and the sinks until the sources end."""

    def __init__(
        self,
        sources: Sequence[Source[Any]],
        engines: Sequence[Engine[Any]],
        chain: EngineChain,
        policy: Policy,
        sinks: Sequence[Sink[Any]],
        *,
        concurrency: int = 256,
        queue_size: int = 256,
        stats_interval: float = 0.0,
        dead_letters: DeadLetters | None = None,
        escalation: Escalation | None = None,
    ) -> None:
        self.dead_letters = dead_letters
        # Strikes and ladder steps between the policy and the sinks (None: no ladder).
        self.escalation = escalation
        self.sources = {source.name: source for source in sources}
        self.engines = list(engines)
        self.chain = chain
        self.policy = policy
        self.sinks = list(sinks)
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.stats_interval = stats_interval
        self.received = 0
        self.invalid = 0
        self.decided = 0
        self.in_flight = 0
        self.unacknowledged = 0
        self.alerts = 0
        self.actions: Counter[str] = Counter()
        self.routes: Counter[str] = Counter()
        self.sink_failures: Counter[str] = Counter()
        self.latency = LatencyHistograms()
        # Counts of the components a reload replaced, so that /metrics counters go on.
        self.retired = RetiredCounters()
        # Told of every batch of decisions the sinks took (e.g. the per-minute stats).
        self.observers: list[Callable[[Sequence[Decision]], None]] = []
        # Streaming mode (the primary engine streams): slots bound the messages between the
        # intake and the sink stage, which frees one per decision it takes.
        self.streaming = isinstance(chain.primary, StreamingEngine)
        self._slots = Room(concurrency)
        self._drained: trio.Event | None = None
        self._services: trio.Nursery | None = None
        self._engine_scopes: dict[int, trio.CancelScope] = {}
        self._engines_stopped: dict[int, trio.Event] = {}
        self._reading_scopes: set[trio.CancelScope] = set()
        self._intakes: dict[str, SourceIntake] = {}
        self._work_scope = trio.CancelScope()
        self._stop_requested = False
        self.supervisor = Supervisor()
        self.dead_lettered = 0
        self.message_failures = 0
        self.observer_failures = 0
        # This pipeline's own shared connections (an IRC source's, for its sink), sources first.
        self.connections = SharedConnections()
        for plugin in [*self.sources.values(), *self.engines, *self.sinks]:
            plugin.bind(self.connections)

    def stop_reading(self, drain_timeout: float) -> None:
        """Stop the sources; whatever was read gets decided within ``drain_timeout`` s."""
        self._stop_requested = True
        for scope in self._reading_scopes:
            scope.cancel()
        deadline = trio.current_time() + drain_timeout
        self._work_scope.deadline = min(self._work_scope.deadline, deadline)

    def abort(self) -> None:
        """Stop now: what is still in flight is reported as undecided."""
        self._stop_requested = True
        for scope in self._reading_scopes:
            scope.cancel()
        self._work_scope.cancel()

    def replace_policy(self, policy: Policy) -> None:
        """Decide with ``policy`` from the next message on (reload)."""
        self.policy = policy

    def replace_dead_letters(self, dead_letters: DeadLetters) -> bool:
        """Write dead letters to ``dead_letters`` from now on (reload); False, and nothing
        changed, when this pipeline runs without dead letters."""
        if self.dead_letters is None:
            return False
        self.dead_letters = dead_letters
        return True

    def reconfigure_cache(self, size: int, ttl: float) -> None:
        """New verdict cache limits (reload); ``ttl`` 0 turns reuse off."""
        self.chain.reconfigure_cache(size, ttl)

    async def _run_engine(
        self, engine: Engine[Any], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        stopped = self._engines_stopped[id(engine)] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._engine_scopes[id(engine)] = scope
                await self.supervisor.supervise("engine", engine.name, engine.run,
                                                task_status=task_status)
        finally:
            stopped.set()

    def replace_engine(self, old: Engine[Any], new: Engine[Any]) -> bool:
        """Swap in ``new`` for ``old`` (reload): started first; ``old`` is stopped once no
        message is waiting on it (at most :data:`ENGINE_RETIRE_GRACE` seconds). False, and
        ``old`` kept, when the streaming stage (chosen at start) would get a primary that
        does not stream."""
        if self._services is None:
            raise RuntimeError("the pipeline is not running")
        if self.streaming and old is self.chain.primary and not isinstance(new, StreamingEngine):
            return False
        new.bind(self.connections)
        self._services.start_soon(self._swap_engine, old, new)
        return True

    async def _swap_engine(self, old: Engine[Any], new: Engine[Any]) -> None:
        assert self._services is not None
        try:
            await self._services.start(self._run_engine, new)
        except Exception as exc:
            log.error("reload: engine %s failed to start (%s); keeping the running one",
                      new.name, exc)
            return
        chain = self.chain
        chain.replace(old, new)
        self.engines = [new if e is old else e for e in self.engines]
        self.retired.begin([old])
        log.info("reload: engine %s restarted with its new settings", new.name)
        with trio.move_on_after(ENGINE_RETIRE_GRACE):
            await chain.wait_unused(old)
        # Whatever it still holds, it fails (to the fallback) as it stops.
        self._engine_scopes.pop(id(old)).cancel()
        chain.forget(old)
        await self._engines_stopped.pop(id(old)).wait()
        self.retired.finish(old)  # its final counts, once it stopped

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> RunSummary:
        async with trio.open_nursery() as services:
            self._services = services
            for engine in self.engines:
                await services.start(self._run_engine, engine)
            if self.escalation is not None:  # the strike store, before the sinks need it
                await services.start(self._run_strike_store, self.escalation)
            for sink in self.sinks:
                await services.start(self._run_sink, sink)
            if self.stats_interval > 0:
                services.start_soon(self._log_statistics_periodically)
            # Lists between the stages; their rooms bound them in messages (intake.py).
            intake_send, intake_recv = trio.open_memory_channel[list[Message]](math.inf)
            self._intake_room = Room(self.queue_size)
            # Streaming mode puts decisions without waiting: room for every slot.
            decisions_room = Room(max(self.queue_size,
                                      self.concurrency if self.streaming else 0))
            decisions_send, decisions_recv = trio.open_memory_channel[list[Decision]](math.inf)
            moderation = self._streaming_stage if self.streaming else self._moderation_stage
            with self._work_scope:
                async with trio.open_nursery() as work:
                    work.start_soon(self._sink_stage, decisions_recv, decisions_room)
                    work.start_soon(moderation, intake_recv, decisions_send, decisions_room)
                    async with intake_send, trio.open_nursery() as readers:
                        for source in self.sources.values():
                            await readers.start(self._run_source, source, intake_send.clone())
                        task_status.started()
            await self._close_sinks()
            services.cancel_scope.cancel()
        held = sum(len(i.held) for i in self._intakes.values()) + sum(
            s.unsubmitted() for s in self.sources.values())
        if held:
            log.error("%d message(s) were read by the sources but not handed over before "
                      "the stop", held)
        summary = RunSummary(
            received=self.received,
            decided=self.decided,
            invalid=self.invalid,
            undecided=self.received - self.decided - self.dead_lettered + held,
            stop_requested=self._stop_requested,
            dead_lettered=self.dead_lettered,
        )
        self._log_statistics("done")
        return summary

    async def _run_source(
        self,
        source: Source[Any],
        send: trio.MemorySendChannel[list[Message]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Read until the source ends or the stop; then hand over what it had read."""
        async with send:
            intake = self._intakes[source.name] = SourceIntake(self, send, self._intake_room)
            reading = trio.CancelScope()
            self._reading_scopes.add(reading)
            if self._stop_requested:
                reading.cancel()
            status = ReportedStatus(task_status)
            try:
                with reading:
                    await self.supervisor.supervise(
                        "source", source.name, partial(source.run, intake), task_status=status)
            finally:
                self._reading_scopes.discard(reading)
            # Stopped before the source was ready (a signal during start-up): it read nothing.
            status.started()
            # Within the drain deadline (the work scope): what was read gets decided.
            await intake.submit_held()
            await source.hand_over(intake)
        log.debug("source %s ended", source.name)
