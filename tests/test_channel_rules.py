"""Per-channel rules: score cut-offs and fail mode, each overridable per channel; the action
follows them, the engine's verdict stays in the decision line, the reason says why."""

from __future__ import annotations

import pytest

from chatmod.config.schema import parse_table
from chatmod.config.sections import ChannelPolicy, PolicySection
from chatmod.core.engine_chain import ROUTE_FAIL_CLOSED, ROUTE_FAIL_OPEN
from chatmod.core.model import Message, Verdict
from chatmod.errors import ConfigError
from chatmod.policy.rules import Policy


def decide(policy: Policy, action: str, score: float | None, channel: str = "#lobby",
           route: str = "local") -> tuple[str, str | None, str | None]:
    decision = policy.decide(Message(id="m", text="t", source="s", author="al", channel=channel),
                             Verdict(action, score, "e", route), 1.0)
    record = decision.to_record()
    assert record["verdict"] == action  # the engine's word is kept
    return decision.action, decision.judged, decision.reason


POLICY = Policy(PolicySection(
    flag_score=0.5, delete_score=0.9,
    channels={"#kids": ChannelPolicy(flag_score=0.2, delete_score=0.4, fail_mode="closed"),
              "#open": ChannelPolicy(fail_mode="open")}))


@pytest.mark.parametrize(("channel", "verdict", "score", "expected"), [
    ("#lobby", "pass", 0.1, ("none", None, None)),
    ("#lobby", "pass", 0.6, ("flag", "flag", "default: score 0.6 -> flag by the score cut-offs")),
    ("#lobby", "delete", 0.7, ("flag", "flag", "default: score 0.7 -> flag by the score cut-offs")),
    ("#lobby", "flag", 0.3, ("none", "pass", "default: score 0.3 -> pass by the score cut-offs")),
    ("#lobby", "pass", 0.95, ("delete", "delete",
                              "default: score 0.95 -> delete by the score cut-offs")),
    ("#kids", "pass", 0.45, ("delete", "delete",
                             "channel #kids: score 0.45 -> delete by the score cut-offs")),
    ("#kids", "pass", 0.1, ("none", None, None)),
    ("#lobby", "delete", None, ("delete", None, None)),  # no score: the engine's verdict
    ("#lobby", "quarantine", 0.99, ("flag", None, None)),  # unknown: unknown_verdict_action
])
def test_score_cut_offs_per_channel(channel: str, verdict: str, score: float | None,
                                    expected: tuple[str, str | None, str | None]) -> None:
    assert decide(POLICY, verdict, score, channel) == expected


def test_fail_mode_per_channel() -> None:
    # The chain failed closed (flag); #open fails open, #kids closed, the default follows the chain.
    assert decide(POLICY, "flag", None, "#open", ROUTE_FAIL_CLOSED) == (
        "none", "pass", "channel #open: no engine answered; fail open")
    assert decide(POLICY, "pass", None, "#kids", ROUTE_FAIL_OPEN) == (
        "flag", "flag", "channel #kids: no engine answered; fail closed")
    assert decide(POLICY, "flag", None, "#lobby", ROUTE_FAIL_CLOSED) == ("flag", None, None)


def test_cut_offs_and_fail_mode_are_checked_in_the_config() -> None:
    with pytest.raises(ConfigError, match=r"policy\.channels\.\"#a\"\.fail_mode|fail_mode"):
        parse_table(PolicySection, {"channels": {"#a": {"fail_mode": "sometimes"}}}, "policy")
    with pytest.raises(ConfigError, match="flag_score"):
        parse_table(PolicySection, {"flag_score": -1}, "policy")


async def test_the_ladder_counts_the_verdict_the_cut_offs_gave() -> None:
    import trio

    from chatmod.config.sections import LadderSection
    from chatmod.policy.escalation import Escalation
    from chatmod.state.strikes import MemoryStrikeStore

    section = PolicySection(delete_score=0.8, ladder=LadderSection(steps=("warn", "ban")))
    policy, escalation = Policy(section), Escalation(section, MemoryStrikeStore())
    message = Message(id="m1", text="t", source="s", author="al", channel="#lobby")
    upgraded = policy.decide(message, Verdict("pass", 0.85, "e", "local"), 1.0)
    downgraded = policy.decide(Message(id="m2", text="t", source="s", author="al",
                                       channel="#lobby"), Verdict("delete", 0.5, "e", "local"), 1.0)
    with trio.fail_after(5):
        first, second = await escalation.apply([upgraded, downgraded])
    assert (first.action, first.strikes, first.step) == ("delete", 1, "warn")
    assert first.reason == ("default: score 0.85 -> delete by the score cut-offs; "
                            "ladder default: strike 1 within 1d -> warn")
    assert (second.action, second.step) == ("flag", None)  # a flag earns no strike
