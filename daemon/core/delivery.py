"""The sink stage: decisions to every sink in batches, failures to the dead letters, the
sources acknowledged once their decisions are safe."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from chatmod.core.counters import RetiredCounters
from chatmod.core.dead_letters import DeadLetters
from chatmod.core.intake import Room, receive_batch
from chatmod.core.interfaces import SharedConnections, Sink, Source
from chatmod.core.model import Decision, Message
from chatmod.core.supervisor import Supervisor, describe
from chatmod.errors import SinkError

if TYPE_CHECKING:
    from chatmod.policy.escalation import Escalation

log = logging.getLogger("chatmod.pipeline")

# Most decisions handed to the sinks in one write; larger batches amortise file and
# network writes, smaller ones bound the latency a long batch adds.
MAX_SINK_BATCH = 512
# Seconds a sink may take to flush and close once the work is over.
SINK_CLOSE_GRACE = 5.0


class SinkStage:
    """The pipeline's last stage (a part of :class:`~chatmod.core.pipeline.Pipeline`)."""

    sinks: list[Sink[Any]]
    sources: dict[str, Source[Any]]
    connections: SharedConnections
    retired: RetiredCounters
    supervisor: Supervisor
    _services: trio.Nursery | None
    dead_letters: DeadLetters | None
    streaming: bool
    _slots: Room
    decided: int
    alerts: int
    unacknowledged: int
    dead_lettered: int
    observer_failures: int
    actions: Counter[str]
    routes: Counter[str]
    sink_failures: Counter[str]
    observers: list[Callable[[Sequence[Decision]], None]]
    #: Strikes and ladder steps between the policy and the sinks (set by the service when a
    #: ladder is configured).
    escalation: Escalation | None = None

    async def _run_strike_store(
        self, escalation: Escalation, *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await self.supervisor.supervise("store", escalation.store.name, escalation.run,
                                        task_status=task_status)

    def reopen_sinks(self) -> None:
        """Reopen the sinks' files (SIGHUP, after logrotate moved them)."""
        for sink in self.sinks:
            sink.reopen()

    def replace_sinks(self, sinks: Sequence[Sink[Any]]) -> None:
        """Swap in new sinks (reload): started first, the old ones closed after."""
        if self._services is None:
            raise RuntimeError("the pipeline is not running")
        for sink in sinks:
            sink.bind(self.connections)
        self._services.start_soon(self._swap_sinks, list(sinks))

    async def _swap_sinks(self, sinks: list[Sink[Any]]) -> None:
        assert self._services is not None
        try:
            for sink in sinks:
                await self._services.start(self._run_sink, sink)
        except Exception as exc:
            log.error("reload: new sinks failed to start (%s); keeping the running ones", exc)
            return
        old, self.sinks = self.sinks, sinks
        self.retired.begin(old)
        log.info("reload: new sinks are taking decisions (%s)", ", ".join(s.name for s in sinks))
        for sink in old:
            with trio.move_on_after(SINK_CLOSE_GRACE):
                await sink.aclose()
            self.retired.finish(sink)

    async def _run_sink(
        self, sink: Sink[Any], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.supervisor.supervise("sink", sink.name, sink.run, task_status=task_status)

    async def _sink_stage(self, decisions: trio.MemoryReceiveChannel[list[Decision]],
                          room: Room) -> None:
        async with decisions:
            while True:
                try:
                    batch = await receive_batch(decisions, MAX_SINK_BATCH)
                except trio.EndOfChannel:
                    return
                room.give_back(len(batch))
                if self.streaming:
                    self._slots.give_back(len(batch))
                await self._deliver(batch)

    async def _deliver(self, batch: list[Decision]) -> None:
        escalation = self.escalation
        if escalation is not None:  # strikes and ladder steps, before any sink sees them
            batch = await escalation.apply(batch)
        unsafe: set[int] = set()  # decisions neither a sink nor the dead letters took
        for sink in self.sinks:
            try:
                await sink.write(batch)
            except Exception as exc:  # a failing sink must not stop the others
                failed = batch if not isinstance(exc, SinkError) or exc.failed is None \
                    else list(exc.failed)
                self.sink_failures[sink.name] += len(failed)
                log.error("sink %s could not take %d decision(s): %s",
                          sink.name, len(failed), exc, exc_info=log.isEnabledFor(logging.DEBUG))
                reasons = exc.reasons if isinstance(exc, SinkError) and exc.reasons else None
                by_reason: defaultdict[str, list[Decision]] = defaultdict(list)
                for i, decision in enumerate(failed):
                    by_reason[reasons[i] if reasons else str(exc)].append(decision)
                for reason, decisions in by_reason.items():
                    if not await self._dead_letter(decisions, sink.name, reason):
                        unsafe.update(id(d) for d in decisions)
        self.decided += len(batch)
        self.actions.update([decision.action for decision in batch])
        self.routes.update([decision.verdict.route for decision in batch])
        for observer in self.observers:
            try:
                observer(batch)
            except Exception as exc:  # counting is not worth a decision
                self.observer_failures += 1
                log.error("decision observer %s failed: %s", observer, describe(exc),
                          exc_info=log.isEnabledFor(logging.DEBUG))
        if escalation is not None:
            await escalation.delivered([d for d in batch if id(d) not in unsafe])
        if unsafe:
            # Not acknowledged: a durable source delivers these again.
            self.unacknowledged += len(unsafe)
        by_source: defaultdict[str, list[Message]] = defaultdict(list)
        names = {decision.message.source for decision in batch}
        if not unsafe and len(names) == 1:  # the common case: one source, all safe
            by_source[names.pop()] = [decision.message for decision in batch]
        else:
            for decision in batch:
                if id(decision) not in unsafe:
                    by_source[decision.message.source].append(decision.message)
        for name, messages in by_source.items():
            source = self.sources.get(name)
            if source is not None:
                await source.acknowledge(messages)

    async def deliver_alert(self, record: Mapping[str, Any]) -> None:
        """Hand an alert to every sink; one that fails is logged, the others still get it."""
        self.alerts += 1
        await self.deliver_record(record)

    async def deliver_record(self, record: Mapping[str, Any]) -> bool:
        """Hand a record that is not a decision (an alert, a review) to every sink through
        ``write_alert``; one that fails is logged, the others still get it. True when every
        sink took it."""
        taken = True
        for sink in self.sinks:
            try:
                await sink.write_alert(record)
            except Exception as exc:
                taken = False
                log.error("sink %s could not take a %s record: %s", sink.name,
                          record.get("type", "alert"), exc)
        return taken

    async def _dead_letter(self, decisions: list[Decision], sink: str, error: str) -> bool:
        if self.dead_letters is None:
            return False
        return await self.dead_letters.put(decisions, sink, error)

    async def _close_sinks(self) -> None:
        for sink in self.sinks:
            with trio.move_on_after(SINK_CLOSE_GRACE) as scope:
                scope.shield = True
                try:
                    await sink.aclose()
                except Exception as exc:
                    log.error("sink %s failed to close: %s", sink.name, exc)
            if scope.cancelled_caught:
                log.error("sink %s did not close within %g s", sink.name, SINK_CLOSE_GRACE)

    async def _dead_letter_message(self, message: Message, component: str, error: str) -> None:
        """A message that could not be decided: to the dead letters, then acknowledged (it
        is recorded); if even that fails, left unacknowledged for a durable source."""
        self.dead_lettered += 1
        if self.dead_letters is not None and await self.dead_letters.put_message(
                message, component, error):
            source = self.sources.get(message.source)
            if source is not None:
                await source.acknowledge([message])
            return
        self.unacknowledged += 1
