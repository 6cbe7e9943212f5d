"""The escalation stage, between the policy and the sinks: counts strikes in the store and
adds the ladder's step to each decision whose verdict counts.

It also applies the live rules (:mod:`chatmod.state.live`): a live exemption makes the
action ``none`` (``"exempt": true`` with the reason), a channel's live ``shadow`` switch wins
over the config's. They are kept in memory and read again from the store every ``refresh``
seconds, so a change another daemon made applies here within that time.

The policy is sync and pure; counting strikes may wait on SQLite or Redis, so it happens
here, on each batch the sink stage takes, before any sink sees it. Once every sink took the
batch, :meth:`Escalation.delivered` marks the steps applied, so a redelivered message (same id)
keeps its step in the decision line but is marked ``repeated`` and not acted on again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import trio

from chatmod.config.sections import LadderSection, PolicySection
from chatmod.core.model import Decision, format_timestamp
from chatmod.core.supervisor import describe
from chatmod.core.text import printable
from chatmod.policy.ladder import Ladder
from chatmod.policy.rules import NO_ACTION
from chatmod.state.live import Exemption, LiveRules
from chatmod.state.strikes import StrikeStore

log = logging.getLogger("chatmod.policy")

# Seconds one store update may take before the decision goes on without its step, and
# seconds the store is not asked again after it failed (else every decision of a batch would
# wait STORE_TIMEOUT in turn while Redis is away).
STORE_TIMEOUT = 5.0
STORE_RETRY_AFTER = 5.0
DEFAULT_LADDER = "default"
# Seconds between reads of the live rules from the store.
LIVE_RULES_REFRESH = 1.0


def build_ladders(section: PolicySection) -> tuple[Ladder, dict[str, Ladder]]:
    """The default ladder and each channel's own (channels without one use the default)."""

    def ladder(name: str, config: LadderSection) -> Ladder:
        return Ladder.parse(name, config.steps, config.window, config.strikes)

    channels = {channel: ladder(channel, override.ladder)
                for channel, override in section.channels.items() if override.ladder is not None}
    return ladder(DEFAULT_LADDER, section.ladder), channels


class Escalation:
    """Adds strikes and steps to decisions (see the module docstring)."""

    def __init__(self, section: PolicySection, store: StrikeStore,
                 clock: Callable[[], float] = time.time,
                 refresh: float = LIVE_RULES_REFRESH) -> None:
        self.store = store
        self.clock = clock
        self.refresh = refresh
        self.rules = LiveRules()
        # One read of the live rules at a time: a periodic read that began before a change
        # must not land after the read that follows the change (it would undo it here).
        self._reading_rules = trio.Lock()
        self.default, self.channels = build_ladders(section)
        self.counted = 0
        self.repeats = 0
        self.store_failures = 0
        self.store_skips = 0
        self._store_down_until = -math.inf  # trio time

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the store open and keep the live rules fresh, until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.store.run)
            await self.reload_rules()
            self._log_rules_in_effect()
            task_status.started()
            while True:
                await trio.sleep(self.refresh)
                await self.reload_rules()

    def _log_rules_in_effect(self) -> None:
        # Live changes outlive restarts (they are in the store): say so at start, or an
        # operator who set shadow=true last week wonders why nothing is acted on.
        switched = {name: values for name, values in self.rules.channels.items() if values}
        if not self.rules.exemptions and not switched:
            return
        shown = "; ".join(
            f"{printable(name or '(every channel)', 64)}: "
            + ", ".join(f"{key}={str(value).lower()}" for key, value in sorted(values.items()))
            for name, values in sorted(switched.items()))
        log.info("live rules in effect from the %s store: %d exemption(s)%s (chatmod exempt "
                 "list, chatmod channel list)", self.store.name, len(self.rules.exemptions),
                 f"; {shown}" if shown else "")

    async def reload_rules(self) -> None:
        """Read the live rules from the store; on failure the ones held stay."""
        async with self._reading_rules:
            try:
                with trio.fail_after(STORE_TIMEOUT):
                    exemptions = await self.store.exemptions(self.clock())
                    switches = await self.store.channel_switches()
            except Exception as exc:
                self.store_failures += 1
                log.warning("strike store (%s): cannot read the live rules (%s); keeping the "
                            "ones held", self.store.name, describe(exc))
                return
            self.rules.replace_all(exemptions, switches)

    def reconfigure(self, section: PolicySection) -> None:
        """New ladders (reload); the strikes counted so far stay."""
        self.default, self.channels = build_ladders(section)

    def ladder_for(self, channel: str | None) -> Ladder:
        return self.channels.get(channel or "", self.default)

    async def apply(self, batch: Sequence[Decision]) -> list[Decision]:
        """The batch with each counting decision's strikes and step filled in."""
        return [await self._escalate(decision) for decision in batch]

    async def _escalate(self, decision: Decision) -> Decision:
        message = decision.message
        shadow = self.rules.switch(message.channel, "shadow")
        if isinstance(shadow, bool) and shadow != decision.shadow:
            decision = replace(decision, shadow=shadow)
        if not decision.exempt:
            exemption = self.rules.exemption_for(message.author, message.channel, self.clock())
            if exemption is not None:
                return replace(decision, action=NO_ACTION, exempt=True,
                               reason=exemption_reason(exemption))
        ladder = self.ladder_for(message.channel)
        if not ladder.enabled or decision.exempt or not message.author:
            return decision
        weight = ladder.weight(decision.judged or decision.verdict.action)
        if weight == 0:
            return decision
        unavailable = replace(decision, reason=f"ladder {ladder.name}: strike store unavailable")
        if trio.current_time() < self._store_down_until:
            self.store_skips += 1
            return unavailable
        try:
            with trio.fail_after(STORE_TIMEOUT):
                outcome = await self.store.add_strike(
                    message.channel or "", message.author, message.id, weight, self.clock(),
                    ladder.window)
        except Exception as exc:  # the store is down: the decision goes on without a step
            self.store_failures += 1
            self._store_down_until = trio.current_time() + STORE_RETRY_AFTER
            log.error("strike store (%s) failed for message %s: %s; decisions go without a "
                      "step for %g s", self.store.name, message.id, describe(exc),
                      STORE_RETRY_AFTER)
            return unavailable
        step = ladder.step_for(outcome.strikes)
        if outcome.new:
            self.counted += 1
        elif outcome.applied:
            self.repeats += 1
        reason = ladder.reason(outcome.strikes, step)
        return replace(decision, strikes=outcome.strikes, step=str(step),
                       duration=step.duration,
                       reason=f"{decision.reason}; {reason}" if decision.reason else reason,
                       repeated=outcome.applied)

    async def delivered(self, batch: Sequence[Decision]) -> None:
        """Every sink took ``batch``: its steps count as applied."""
        taken = [d for d in batch if d.step is not None and not d.repeated]
        if not taken:
            return
        window = max(self.ladder_for(d.message.channel).window for d in taken)
        try:
            with trio.fail_after(STORE_TIMEOUT):
                await self.store.mark_applied([d.message.id for d in taken], self.clock(),
                                              window)
        except Exception as exc:  # a redelivery would then repeat the step: say so
            self.store_failures += 1
            log.error("strike store (%s) could not mark %d step(s) applied: %s",
                      self.store.name, len(taken), describe(exc))

    def statistics(self) -> dict[str, float]:
        return {"strikes_counted": self.counted, "steps_repeated": self.repeats,
                "store_failures": self.store_failures, "store_skips": self.store_skips}


def exemption_reason(exemption: Exemption) -> str:
    """``exempt until 2026-11-26T03:00:00.000Z (by ann: stream guest)``."""
    until = "" if exemption.until is None else f" until {format_timestamp(exemption.until)}"
    said = ": ".join(part for part in (exemption.by, exemption.why) if part)
    return f"exempt{until}" + (f" ({said})" if said else "")
