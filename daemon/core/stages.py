"""The moderation stages: messages from the intake to decisions, in batches.

Each stage takes everything the intake holds at each wake-up (a list). With a primary engine
that answers a list at once (:func:`~chatmod.core.interfaces.takes_batches`) the list is
asked about in one call and decided in one loop: no task and no channel operation per
message. Any other engine keeps a task per message (a slow message must not hold the
others). A streaming primary is handed each list with one ``submit_many``.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from chatmod.core.cache import Lead
from chatmod.core.engine_chain import UNSHARED, EngineChain
from chatmod.core.intake import Room, next_item, receive_batch, send_batch
from chatmod.core.interfaces import Engine, StreamingEngine, takes_batches
from chatmod.core.latency import LatencyHistograms
from chatmod.core.model import Decision, Message, Verdict
from chatmod.core.supervisor import describe
from chatmod.errors import EngineError
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

    async def _streaming_stage(
        self,
        intake: trio.MemoryReceiveChannel[list[Message]],
        decisions: DecisionChannel,
        decisions_room: Room,
    ) -> None:
        """Feed the streaming primary engine a list at a time; its callbacks finish each
        message. Only a failed message gets a task (for the fallback chain).

        The callbacks collect decisions; one task hands them to the sink stage as one list
        per wake-up (all the replies one read of the engine settled): one channel operation
        per read, not per reply."""
        # The run's clock read directly: trio.current_time is the same reading, two calls
        # deeper, and the stage reads it for each answer.
        chain, slots, clock, intake_room = self.chain, self._slots, \
            trio.lowlevel.current_clock().current_time, self._intake_room
        pending: list[Decision] = []  # decided, not yet handed to the sink stage
        wanted = trio.Event()  # set when ``pending`` gains its first decision

        def hand_over() -> None:
            nonlocal pending
            if pending:
                ready, pending = pending, []
                try:
                    # The slots bound what is in flight: the room is always there.
                    decisions.send_nowait(ready)
                    decisions_room.force(len(ready))
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    # Answers after the drain timeout stopped the stage: counted undecided.
                    return
            if self.in_flight == 0 and self._drained is not None:
                self._drained.set()

        async def deliver() -> None:
            nonlocal wanted
            while True:
                await wanted.wait()
                wanted = trio.Event()
                hand_over()

        async with intake, decisions, trio.open_nursery() as fallbacks:
            delivery = trio.CancelScope()

            async def deliver_until_drained() -> None:
                with delivery:
                    await deliver()

            fallbacks.start_soon(deliver_until_drained)

            stamp = 0.0  # the ts of the decisions in ``pending``: handed on together

            def finish(message: Message, verdict: Verdict, started: float) -> None:
                nonlocal stamp
                latency_ms = (clock() - started) * 1000.0
                self.latency.record(verdict.engine, verdict.route, latency_ms)
                self.in_flight -= 1
                if not pending:
                    stamp = time.time()
                try:
                    decision = self.policy.decide_at(message, verdict, latency_ms, stamp)
                except Exception as exc:  # runs in an engine's callback: never raise there
                    undecided(message, exc)
                    return
                pending.append(decision)
                if len(pending) == 1:
                    wanted.set()

            def finish_many(decided: list[Message], verdicts: list[Verdict],
                            started: float) -> None:
                """:meth:`finish` for each message and its verdict (one engine call's
                answers: one latency)."""
                nonlocal stamp
                latency_ms = (clock() - started) * 1000.0
                self.latency.record_batch(verdicts, latency_ms)
                self.in_flight -= len(decided)
                waiting = bool(pending)
                if not waiting:
                    stamp = time.time()
                decide, add = self.policy.decide_at, pending.append
                for message, verdict in zip(decided, verdicts, strict=True):
                    try:
                        add(decide(message, verdict, latency_ms, stamp))
                    except Exception as exc:  # runs in an engine's callback: never raise
                        undecided(message, exc)
                if not waiting and pending:
                    wanted.set()

            def undecided(message: Message, exc: Exception) -> None:
                """The policy failed on ``message`` (a bug): it is tried once more."""
                self.message_failures += 1
                log.error("message %s failed: %s", message.id, describe(exc),
                          exc_info=log.isEnabledFor(logging.DEBUG))
                self.in_flight += 1  # until the retry below has decided it
                try:
                    fallbacks.start_soon(retry, message)
                except RuntimeError:  # the stage is gone (drain timeout): undecided
                    return

            async def retry(message: Message) -> None:
                # The second and last attempt, through the awaited path; its slot is freed
                # here if it goes to the dead letters (no decision reaches the sink stage).
                self.in_flight -= 1
                decision = await self._decide(message, failed_before=1)
                if decision is None:
                    slots.give_back(1)
                else:
                    await send_batch(decisions, decisions_room, [decision])
                if self.in_flight == 0 and self._drained is not None:
                    self._drained.set()

            async def fall_back(message: Message, started: float, error: EngineError) -> None:
                finish(message, await chain.fall_back(message, error), started)

            def settled(message: Message, started: float, result: Verdict | EngineError) -> None:
                if isinstance(result, Verdict):  # its own verdict, or an identical message's
                    finish(message, result, started)
                    return
                try:
                    fallbacks.start_soon(fall_back, message, started, result)
                except RuntimeError:  # the stage is gone (drain timeout): undecided
                    return

            async def submit(engine: Engine[Any], messages: list[Message], leads: list[Lead],
                             started: float) -> None:
                """``engine.submit_many`` (the messages held by it until answered): each
                message's first answer finishes it; a bug in the engine (it raised) is each
                message's engine failure (the fallback decides)."""
                chain.hold(engine, len(messages))
                answered = bytearray(len(messages))

                def on_result(index: int, result: Verdict | EngineError) -> None:
                    if answered[index]:  # told twice (a bug in the engine): the first stands
                        return
                    answered[index] = 1
                    chain.release(engine)
                    if isinstance(result, Verdict):  # the usual answer: finished here
                        finish(messages[index], result, started)
                        chain.primary_answered(leads[index], result)
                    else:
                        settled(messages[index], started, result)
                        chain.primary_failed(leads[index], result)

                def on_verdicts(told: list[tuple[int, Verdict]]) -> None:
                    """``on_result`` for each index and verdict, as one batch."""
                    decided, verdicts, decided_leads = [], [], []
                    for index, verdict in told:
                        if answered[index]:
                            continue
                        answered[index] = 1
                        decided.append(messages[index])
                        verdicts.append(verdict)
                        decided_leads.append(leads[index])
                    if decided:
                        chain.release(engine, len(decided))
                        finish_many(decided, verdicts, started)
                        chain.primary_answered_many(decided_leads, verdicts)

                if not isinstance(engine, StreamingEngine):  # replace_engine refuses
                    for index in range(len(messages)):
                        on_result(index, EngineError(f"engine {engine.name} does not stream"))
                    return
                try:
                    if engine.settles_in_lists:
                        await engine.submit_many(messages, on_result, on_verdicts)
                    else:
                        await engine.submit_many(messages, on_result)
                except Exception as exc:  # a bug in the engine: the fallback decides
                    log.error("engine %s failed to take %d message(s): %s", engine.name,
                              len(messages), describe(exc),
                              exc_info=log.isEnabledFor(logging.DEBUG))
                    for index in range(len(messages)):
                        on_result(index, EngineError(describe(exc)))

            while True:
                try:
                    batch = await receive_batch(intake, self.queue_size)
                except trio.EndOfChannel:
                    break
                # Read again after each wait: a reload may replace the primary or the cache.
                primary, claims = chain.primary, chain.claims_matter
                submitting: list[Message] = []  # for the primary, all since ``started``
                leads: list[Lead] = []
                taken = 0  # messages in flight whose intake room is not yet given back
                started = clock()
                for message in batch:
                    if slots.free > 0:
                        slots.free -= 1
                    else:
                        # Hand over what is claimed first: its answers free the slots.
                        intake_room.give_back(taken)
                        taken = 0
                        if submitting:
                            await submit(primary, submitting, leads, started)
                            submitting, leads = [], []
                        await slots.take(1)
                        started = clock()
                        primary, claims = chain.primary, chain.claims_matter
                    taken += 1
                    self.in_flight += 1
                    if message.verdict is not None:  # the source brought it: no engine asked
                        finish(message, message.verdict, started)
                        continue
                    if claims:
                        claim = chain.claim(message, partial(settled, message, started))
                        if isinstance(claim, Verdict):
                            finish(message, claim, started)
                            continue
                        if claim is None:  # an identical message leads: it waits for that
                            continue
                    else:  # nothing to share the answer with (no allow-list, no cache)
                        claim = UNSHARED
                    submitting.append(message)
                    leads.append(claim)
                intake_room.give_back(taken)
                if submitting:
                    await submit(primary, submitting, leads, started)
            if self.in_flight:
                self._drained = trio.Event()
                await self._drained.wait()
            hand_over()  # decided after the last wake-up of ``deliver``
            delivery.cancel()

