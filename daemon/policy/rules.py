"""The policy: verdict -> action, with per-channel overrides (actions, score cut-offs, fail
mode), exempt authors and shadow mode."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatmod.config.sections import DEFAULT_ACTIONS, FailMode, PolicySection
from chatmod.core.engine_chain import ROUTE_FAIL_CLOSED, ROUTE_FAIL_OPEN
from chatmod.core.model import DELETE, FLAG, JOIN_EVENT, PASS, Decision, Message, Verdict

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

    def decide(self, message: Message, verdict: Verdict, latency_ms: float) -> Decision:
        rules = self._channels.get(message.channel or "", self._default)
        if message.author is not None and message.author in rules.exempt_authors:
            return Decision(message, verdict, NO_ACTION, latency_ms,
                            shadow=rules.shadow, exempt=True)
        if rules.follows_engine:  # the common case: nothing to judge
            judged, reason = verdict.action, None
        else:
            judged, reason = rules.judge(verdict)
        action = rules.actions.get(judged, self.unknown_verdict_action)
        if message.event == JOIN_EVENT:  # asked about the name: an action such as a kick
            reason = f"username check: {verdict.action}"
        return Decision(message, verdict, action, latency_ms, shadow=rules.shadow,
                        reason=reason, judged=judged if judged != verdict.action else None)
