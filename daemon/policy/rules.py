"""The policy: verdict -> action, with per-channel overrides, exempt authors and shadow mode."""

from __future__ import annotations

from dataclasses import dataclass

from chatmod.config.sections import DEFAULT_ACTIONS, PolicySection
from chatmod.core.model import JOIN_EVENT, Decision, Message, Verdict

NO_ACTION = "none"


@dataclass(frozen=True, slots=True)
class _Rules:
    actions: dict[str, str]
    shadow: bool
    exempt_authors: frozenset[str]


class Policy:
    """Turns a verdict into an action. Sync and pure: it never blocks."""

    def __init__(self, section: PolicySection) -> None:
        self.unknown_verdict_action = section.unknown_verdict_action
        base = _Rules(
            {**DEFAULT_ACTIONS, **section.actions},
            section.shadow,
            frozenset(section.exempt_authors),
        )
        self._default = base
        self._channels = {
            channel: _Rules(
                {**base.actions, **override.actions},
                base.shadow if override.shadow is None else override.shadow,
                base.exempt_authors | frozenset(override.exempt_authors),
            )
            for channel, override in section.channels.items()
        }

    def decide(self, message: Message, verdict: Verdict, latency_ms: float) -> Decision:
        rules = self._channels.get(message.channel or "", self._default)
        if message.author is not None and message.author in rules.exempt_authors:
            return Decision(message, verdict, NO_ACTION, latency_ms,
                            shadow=rules.shadow, exempt=True)
        action = rules.actions.get(verdict.action, self.unknown_verdict_action)
        # A join was asked about the name: say so (the action is e.g. a kick, not a delete).
        reason = f"username check: {verdict.action}" if message.event == JOIN_EVENT else None
        return Decision(message, verdict, action, latency_ms, shadow=rules.shadow,
                        reason=reason)
