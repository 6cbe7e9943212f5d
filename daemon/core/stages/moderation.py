"""The moderation stages: messages from the intake to decisions, in batches.

Each stage takes everything the intake holds at each wake-up (a list). With a primary engine
that answers a list at once (:func:`~chatmod.core.interfaces.takes_batches`) the list is
asked about in one call and decided in one loop: no task and no channel operation per
message. Any other engine keeps a task per message (a slow message must not hold the
others). A streaming primary is handed each list with one ``submit_many``
(:mod:`chatmod.core.stages.streaming`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from chatmod.core.engine_chain import EngineChain
from chatmod.core.intake import Room, next_item, receive_batch, send_batch
from chatmod.core.interfaces import takes_batches
from chatmod.core.latency import LatencyHistograms
from chatmod.core.model import Decision, Message
from chatmod.core.supervisor import describe
from chatmod.policy.rules import Policy

log = logging.getLogger("chatmod.pipeline")

# Attempts at one message before it goes to the dead letters: a message that makes the
# pipeline's own code fail twice would fail forever.
MESSAGE_ATTEMPTS = 2

DecisionChannel = trio.MemorySendChannel[list[Decision]]


class ModerationStages:
    """The pipeline's middle stages (a part of :class:`~chatmod.core.pipeline.Pipeline`)."""

    chain: EngineChain
    policy: Policy
    concurrency: int
    queue_size: int
    latency: LatencyHistograms
    in_flight: int
    message_failures: int
    _slots: Room
    _drained: trio.Event | None
    #: The intake's room (messages between the sources and a moderation stage).
    _intake_room: Room

    if TYPE_CHECKING:  # the sink stage's (chatmod.core.delivery)
        async def _dead_letter_message(self, message: Message, component: str,
                                       error: str) -> None: ...

    async def _moderation_stage(
        self,
        intake: trio.MemoryReceiveChannel[list[Message]],
        decisions: DecisionChannel,
        decisions_room: Room,
    ) -> None:
        """Batches to an engine that takes them; a message at a time to the others."""
        in_flight = Room(self.concurrency)  # messages being decided, at most concurrency
        intake_room = self._intake_room
        one_send, one_receive = trio.open_memory_channel[Message](0)
        async with intake, decisions, trio.open_nursery() as tasks:
            async with one_send:
                workers = False
                while True:
                    try:
                        batch = await receive_batch(intake, self.concurrency)
                    except trio.EndOfChannel:
                        break
                    if takes_batches(self.chain.primary):
                        start, count = 0, len(batch)
                        while start < count:
                            taken = await in_flight.take(count - start)
                            intake_room.give_back(taken)
                            part = batch if taken == count else batch[start:start + taken]
                            tasks.start_soon(self._decide_batch, part, decisions,
                                             decisions_room, in_flight)
                            start += taken
                        continue
                    if not workers:  # the concurrency, as tasks that wait on the engine
                        workers = True
                        for _ in range(self.concurrency):
                            tasks.start_soon(self._moderate_worker, one_receive.clone(),
                                             decisions, decisions_room)
                    for message in batch:
                        try:
                            one_send.send_nowait(message)  # a worker was waiting
                        except trio.WouldBlock:
                            await one_send.send(message)
                        intake_room.give_back(1)
            await one_receive.aclose()

    async def _moderate_worker(
        self,
        messages: trio.MemoryReceiveChannel[Message],
        decisions: DecisionChannel,
        decisions_room: Room,
    ) -> None:
        async with messages:
            while True:
                try:
                    message = await next_item(messages)
                except trio.EndOfChannel:
                    return
                decision = await self._decide(message)
                if decision is not None:
                    await send_batch(decisions, decisions_room, [decision])

    async def _decide_batch(self, batch: list[Message], decisions: DecisionChannel,
                            decisions_room: Room, in_flight: Room) -> None:
        try:
            decided = await self._decide_many(batch)
            if decided:
                await send_batch(decisions, decisions_room, decided)
        finally:
            in_flight.give_back(len(batch))

    async def _decide_many(self, batch: list[Message]) -> list[Decision]:
        """The decisions for ``batch`` (asked about in one call); a message whose decision
        failed is tried once more on its own (:meth:`_decide`), then dead-lettered."""
        clock = trio.current_time
        started = clock()
        count = len(batch)
        self.in_flight += count
        try:
            asked = [message for message in batch if message.verdict is None]
            try:
                answers = await self.chain.moderate_many(asked) if asked else []
            except Exception as exc:  # a bug must cost one attempt, not the daemon
                self.message_failures += count
                log.error("a batch of %d message(s) failed (attempt 1 of %d): %s", count,
                          MESSAGE_ATTEMPTS, describe(exc),
                          exc_info=log.isEnabledFor(logging.DEBUG))
                return await self._decide_each(batch)
            latency_ms = (clock() - started) * 1000.0
            if len(asked) == count:  # the usual: no source brought a verdict
                verdicts = answers
            else:  # a verdict the source brought is used as is (no engine was asked)
                answered = iter(answers)
                verdicts = [message.verdict or next(answered) for message in batch]
            self.latency.record_batch(verdicts, latency_ms)
            raised: list[tuple[Message, Exception]] = []
            # A bug must cost one message, not the batch: those it raised for are left out.
            decided = self.policy.decide_many(batch, verdicts, latency_ms, raised)
            for message, error in raised:
                self.message_failures += 1
                log.error("message %s failed (attempt 1 of %d): %s", message.id,
                          MESSAGE_ATTEMPTS, describe(error),
                          exc_info=error if log.isEnabledFor(logging.DEBUG) else False)
        finally:
            self.in_flight -= count
        if raised:
            decided.extend(await self._decide_each([message for message, _ in raised]))
        return decided

    async def _decide_each(self, messages: list[Message]) -> list[Decision]:
        """The second and last attempt at each of ``messages``, on its own."""
        decided = []
        for message in messages:
            decision = await self._decide(message, failed_before=1)
            if decision is not None:
                decided.append(decision)
        return decided

    async def _decide(self, message: Message, failed_before: int = 0) -> Decision | None:
        """The decision for ``message``; None when it failed :data:`MESSAGE_ATTEMPTS` times
        (``failed_before`` of them elsewhere) and went to the dead letters instead."""
        clock = trio.current_time
        error = "no attempt left"
        for attempt in range(failed_before + 1, MESSAGE_ATTEMPTS + 1):
            self.in_flight += 1
            started = clock()
            try:
                verdict = message.verdict or await self.chain.moderate(message)
                latency_ms = (clock() - started) * 1000.0
                self.latency.record(verdict.engine, verdict.route, latency_ms)
                return self.policy.decide(message, verdict, latency_ms)
            except Exception as exc:  # a bug must cost one message, not the daemon
                error = describe(exc)
                self.message_failures += 1
                log.error("message %s failed (attempt %d of %d): %s", message.id, attempt,
                          MESSAGE_ATTEMPTS, error, exc_info=log.isEnabledFor(logging.DEBUG))
            finally:
                self.in_flight -= 1
        await self._dead_letter_message(message, "pipeline", error)
        return None
