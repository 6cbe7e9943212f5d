from __future__ import annotations

from chatmod.config.sections import ChannelPolicy, PolicySection
from chatmod.core.model import Message, Verdict
from chatmod.policy.rules import Policy


def msg(channel: str | None = "#lobby", author: str | None = "alice") -> Message:
    return Message(id="m", text="t", source="s", author=author, channel=channel)


def verdict(action: str) -> Verdict:
    return Verdict(action, 0.5, "e", "local")


def test_default_actions() -> None:
    policy = Policy(PolicySection())
    assert [policy.decide(msg(), verdict(v), 1.0).action for v in ("pass", "flag", "delete")] == [
        "none", "flag", "delete"]


def test_unknown_verdict_is_kept_and_gets_the_configured_action() -> None:
    policy = Policy(PolicySection(unknown_verdict_action="warn"))
    decision = policy.decide(msg(), verdict("quarantine"), 1.0)
    assert decision.verdict.action == "quarantine"
    assert decision.action == "warn"


def test_channel_overrides_exemptions_and_shadow() -> None:
    policy = Policy(PolicySection(
        actions={"delete": "kick"},
        exempt_authors=("modbot",),
        channels={
            "#kids": ChannelPolicy(actions={"flag": "delete"}, exempt_authors=("teacher",)),
            "#test": ChannelPolicy(shadow=True),
        },
    ))
    assert policy.decide(msg(), verdict("delete"), 1).action == "kick"
    assert policy.decide(msg("#kids"), verdict("flag"), 1).action == "delete"
    assert policy.decide(msg("#kids"), verdict("delete"), 1).action == "kick"  # inherited
    exempt = policy.decide(msg("#kids", "teacher"), verdict("delete"), 1)
    assert (exempt.action, exempt.exempt) == ("none", True)
    assert policy.decide(msg("#kids", "modbot"), verdict("delete"), 1).exempt  # global list too
    assert not policy.decide(msg("#lobby", "teacher"), verdict("delete"), 1).exempt
    shadow = policy.decide(msg("#test"), verdict("delete"), 1)
    assert (shadow.action, shadow.shadow) == ("kick", True)
    assert not policy.decide(msg(None, None), verdict("flag"), 1).shadow
