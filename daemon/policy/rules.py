"""The policy: verdict -> action, with per-channel overrides (actions, score cut-offs, fail
mode), exempt authors and shadow mode."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice

from chatmod.config.sections import DEFAULT_ACTIONS, FailMode, PolicySection
from chatmod.core.engine_chain import ROUTE_FAIL_CLOSED, ROUTE_FAIL_OPEN
from chatmod.core.model import (
    DELETE,
    FLAG,
    JOIN_EVENT,
    PASS,
    Decision,
    Message,
    Verdict,
    new_decision,
)

NO_ACTION = "none"


@dataclass(frozen=True, slots=True)
class _Rules:
    actions: dict[str, str]
    shadow: bool
    exempt_authors: frozenset[str]
    flag_score: float | None = None
    delete_score: float | None = None
    fail_mode: FailMode = "chain"
    name: str = "default"

    #: No cut-off and no fail mode: the action follows the engine's verdict as it is said.
    follows_engine: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "follows_engine", self.flag_score is None
                           and self.delete_score is None and self.fail_mode == "chain")

    def judge(self, verdict: Verdict) -> tuple[str, str | None]:
        """The verdict the action follows, and why when it is not the engine's own."""
        if verdict.route in (ROUTE_FAIL_OPEN, ROUTE_FAIL_CLOSED) and self.fail_mode != "chain":
            return (PASS if self.fail_mode == "open" else FLAG,
                    f"{self.name}: no engine answered; fail {self.fail_mode}")
        score, said = verdict.score, verdict.action
        if score is None or said not in (PASS, FLAG, DELETE):
            return said, None
        judged = said
        if self.delete_score is not None:
            if score >= self.delete_score:
                judged = DELETE
            elif judged == DELETE:
                judged = FLAG
        if self.flag_score is not None and judged != DELETE:
            judged = FLAG if score >= self.flag_score else (PASS if judged == FLAG else judged)
        if judged == said:
            return said, None
        return judged, f"{self.name}: score {score:g} -> {judged} by the score cut-offs"


class Policy:
    """Turns a verdict into an action. Sync and pure: it never blocks."""

    def __init__(self, section: PolicySection) -> None:
        self.unknown_verdict_action = section.unknown_verdict_action
        base = _Rules(
            {**DEFAULT_ACTIONS, **section.actions},
            section.shadow,
            frozenset(section.exempt_authors),
            section.flag_score, section.delete_score, section.fail_mode,
        )
        self._default = base
        self._channels = {
            channel: _Rules(
                {**base.actions, **override.actions},
                base.shadow if override.shadow is None else override.shadow,
                base.exempt_authors | frozenset(override.exempt_authors),
                base.flag_score if override.flag_score is None else override.flag_score,
                base.delete_score if override.delete_score is None else override.delete_score,
                base.fail_mode if override.fail_mode is None else override.fail_mode,
                f"channel {channel}",
            )
            for channel, override in section.channels.items()
        }
        #: :meth:`decide_many`'s shortcut applies: one set of rules for every channel, no
        #: exempt author, the action follows the engine's verdict as it is said.
        self._plain = not self._channels and base.follows_engine and not base.exempt_authors
        #: A subclass's own :meth:`decide` (a test's failing policy) is what decides.
        self._own_decide = type(self).decide is not Policy.decide

    def decide(self, message: Message, verdict: Verdict, latency_ms: float) -> Decision:
        return self._decide_at(message, verdict, latency_ms, time.time())

    def decide_at(self, message: Message, verdict: Verdict, latency_ms: float,
                  ts: float) -> Decision:
        """:meth:`decide`, the decision made at ``ts`` (decisions handed on together share
        one ``ts``, formatted once)."""
        if self._own_decide:
            return self.decide(message, verdict, latency_ms)
        if self._plain and message.event is None:  # as decide_many's shortcut
            rules = self._default
            return new_decision(message, verdict,
                                rules.actions.get(verdict.action, self.unknown_verdict_action),
                                latency_ms, ts, rules.shadow, None, None)
        return self._decide_at(message, verdict, latency_ms, ts)

    def decide_many(self, messages: Sequence[Message], verdicts: Sequence[Verdict],
                    latency_ms: float, failed: list[tuple[Message, Exception]]) -> list[Decision]:
        """:meth:`decide` for each message and its verdict, in order, with one ``ts`` (the
        same float) for all. A message whose decision raised is left out and put in
        ``failed`` with the exception: a bug costs that message, not the others."""
        start, count = 0, len(messages)
        if len(verdicts) != count:
            raise ValueError(f"{len(verdicts)} verdicts for {count} messages")
        ts = time.time()
        decided: list[Decision] = []
        while start < count:
            made = len(decided)
            try:
                self._decide_from(start, messages, verdicts, latency_ms, ts, decided)
                return decided
            except Exception as exc:  # the message after the last one decided raised
                at = start + len(decided) - made
                failed.append((messages[at], exc))
                start = at + 1
        return decided

    def _decide_from(self, start: int, messages: Sequence[Message],
                     verdicts: Sequence[Verdict], latency_ms: float, ts: float,
                     decided: list[Decision]) -> None:
        """Append the decisions from ``messages[start]`` on to ``decided``, stopping at the
        first that raises."""
        append = decided.append
        pairs = zip(islice(messages, start, None), islice(verdicts, start, None), strict=True)
        if self._own_decide:
            decide = self.decide
            for message, verdict in pairs:
                append(decide(message, verdict, latency_ms))
            return
        if not self._plain:
            decide_at = self._decide_at
            for message, verdict in pairs:
                append(decide_at(message, verdict, latency_ms, ts))
            return
        # The usual case: nothing to judge, only the action of the verdict (the same verdict
        # object for most messages of a batch: looked up once for them).
        rules = self._default
        actions, shadow = rules.actions, rules.shadow
        unknown, make = self.unknown_verdict_action, new_decision
        last_verdict: Verdict | None = None
        action = unknown
        for message, verdict in pairs:
            if message.event is not None:
                append(self._decide_at(message, verdict, latency_ms, ts))
                continue
            if verdict is not last_verdict:
                last_verdict, action = verdict, actions.get(verdict.action, unknown)
            append(make(message, verdict, action, latency_ms, ts, shadow, None, None))

    def _decide_at(self, message: Message, verdict: Verdict, latency_ms: float,
                   ts: float) -> Decision:
        rules = self._channels.get(message.channel or "", self._default)
        if message.author is not None and message.author in rules.exempt_authors:
            return Decision(message, verdict, NO_ACTION, latency_ms, ts,
                            shadow=rules.shadow, exempt=True)
        if rules.follows_engine:  # the common case: nothing to judge
            judged, reason = verdict.action, None
        else:
            judged, reason = rules.judge(verdict)
        action = rules.actions.get(judged, self.unknown_verdict_action)
        if message.event == JOIN_EVENT:  # asked about the name: an action such as a kick
            reason = f"username check: {verdict.action}"
        return new_decision(message, verdict, action, latency_ms, ts, rules.shadow, reason,
                            judged if judged != verdict.action else None)
