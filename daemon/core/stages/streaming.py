"""The streaming moderation stage: a streaming primary engine fed a list at a time, its
callbacks (one answer, or a read's verdicts at once) deciding each message."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import trio

from chatmod.core.cache import Lead
from chatmod.core.engine_chain import UNSHARED
from chatmod.core.intake import Room, receive_batch, send_batch
from chatmod.core.interfaces import Engine, StreamingEngine
from chatmod.core.model import Decision, Message, Verdict
from chatmod.core.stages.moderation import DecisionChannel, ModerationStages
from chatmod.core.supervisor import describe
from chatmod.errors import EngineError

log = logging.getLogger("chatmod.pipeline")


class StreamingStages(ModerationStages):
    """:class:`ModerationStages` with the stage for a streaming primary engine."""

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
                finish_many([message], [verdict], started)

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

