"""Differential tests of the decision's fast paths (issue 14): the policy's shortcut when there
is nothing to judge, and the jsonl sink's batch of decision lines. The functions they replaced
are kept here as they were (63b095e); the new ones must give the same decision and the same
bytes.

The 10,000-example run: ``HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest
tests/test_decision_fast_paths.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.config.sections import ChannelPolicy, PolicySection
from chatmod.core.engine_chain import ROUTE_FAIL_CLOSED, ROUTE_FAIL_OPEN
from chatmod.core.model import (
    JOIN_EVENT,
    Decision,
    Message,
    Verdict,
    _json_default,
    decision_lines,
    format_timestamp,
)
from chatmod.policy.rules import NO_ACTION, Policy

# --- the reference (63b095e) ----------------------------------------------------------------


def reference_decide(policy: Policy, message: Message, verdict: Verdict,
                     latency_ms: float) -> Decision:
    """Policy.decide as it was: every verdict through the rules' judge."""
    rules = policy._channels.get(message.channel or "", policy._default)
    if message.author is not None and message.author in rules.exempt_authors:
        return Decision(message, verdict, NO_ACTION, latency_ms,
                        shadow=rules.shadow, exempt=True)
    judged, reason = rules.judge(verdict)
    action = rules.actions.get(judged, policy.unknown_verdict_action)
    if message.event == JOIN_EVENT:
        reason = f"username check: {verdict.action}"
    return Decision(message, verdict, action, latency_ms, shadow=rules.shadow,
                    reason=reason, judged=judged if judged != verdict.action else None)


def reference_record(decision: Decision, include_text: bool) -> dict[str, Any]:
    """Decision.to_record as it was."""
    message, verdict = decision.message, decision.verdict
    record: dict[str, Any] = {
        "id": message.id, "source": message.source, "channel": message.channel,
        "author": message.author, "verdict": verdict.action, "score": verdict.score,
        "action": decision.action, "engine": verdict.engine, "route": verdict.route,
        "latency_ms": round(decision.latency_ms, 3), "ts": format_timestamp(decision.ts),
        "scores": verdict.scores,
    }
    if include_text:
        record["text"] = message.text
    if message.timestamp is not None:
        record["timestamp"] = message.timestamp
    if message.author_account is not None:
        record["author_account"] = message.author_account
    if message.event is not None:
        record["event"] = message.event
    if decision.shadow:
        record["shadow"] = True
    if decision.exempt:
        record["exempt"] = True
    if decision.step is not None:
        record["strikes"] = decision.strikes
        record["step"] = decision.step
        if decision.duration is not None:
            record["duration"] = decision.duration
    if decision.reason is not None:
        record["reason"] = decision.reason
    if decision.repeated:
        record["repeated"] = True
    return record


def reference_lines(decisions: list[Decision], include_text: bool) -> bytes:
    """The jsonl sink's batch as it was: each decision's line, joined."""
    return b"".join(
        orjson.dumps(reference_record(d, include_text),
                     option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
                     default=_json_default)
        for d in decisions
    )


def with_ts(decision: Decision, ts: float) -> Decision:
    return replace(decision, ts=ts)


# --- strategies --------------------------------------------------------------------------------

names = st.sampled_from(["alice", "bob", "mod", ""]) | st.none()
channels = st.sampled_from(["#a", "#b", "#c", ""]) | st.none()
actions_said = st.sampled_from(["pass", "flag", "delete", "reject", "quarantine", ""])
scores = st.none() | st.floats(min_value=0, max_value=1) | st.sampled_from([0.5, 0.8, 0.9])
cut_offs = st.none() | st.sampled_from([0.0, 0.5, 0.8, 0.95])
fail_modes = st.sampled_from(["chain", "open", "closed"])
routes = st.sampled_from(["local", "ws", "http", "cache", ROUTE_FAIL_OPEN, ROUTE_FAIL_CLOSED])
odd_scores = st.dictionaries(
    st.text(max_size=6),
    st.none() | st.floats(allow_nan=True) | st.text(max_size=6) | st.integers(-10, 10)
    | st.frozensets(st.integers(0, 3), max_size=2) | st.tuples(st.integers(0, 3)),
    max_size=3,
) | st.dictionaries(st.integers(0, 5), st.integers(0, 5), max_size=2)  # non-string keys

channel_policies = st.builds(
    ChannelPolicy,
    actions=st.dictionaries(actions_said, st.sampled_from(["none", "kick", "ban", "flag"]),
                            max_size=2),
    shadow=st.none() | st.booleans(),
    exempt_authors=st.lists(st.sampled_from(["alice", "mod"]), max_size=2).map(tuple),
    flag_score=cut_offs, delete_score=cut_offs, fail_mode=st.none() | fail_modes,
)
policy_sections = st.builds(
    PolicySection,
    actions=st.dictionaries(actions_said, st.sampled_from(["none", "warn", "kick", "delete"]),
                            max_size=2),
    unknown_verdict_action=st.sampled_from(["flag", "warn"]),
    shadow=st.booleans(),
    exempt_authors=st.lists(st.sampled_from(["bob", "mod"]), max_size=2).map(tuple),
    channels=st.dictionaries(channels.filter(lambda c: c is not None), channel_policies,
                             max_size=2),
    flag_score=cut_offs, delete_score=cut_offs, fail_mode=fail_modes,
)
messages = st.builds(
    Message, id=st.text(max_size=6), text=st.text(max_size=20), source=st.just("stdin"),
    author=names, channel=channels, timestamp=st.none() | st.just("00:01.5"),
    author_account=st.none() | st.just("acct"), event=st.none() | st.just(JOIN_EVENT),
)
verdicts = st.builds(Verdict, action=actions_said, score=scores,
                     engine=st.sampled_from(["wordlist", "chatsight"]), route=routes,
                     scores=odd_scores)
latencies = st.sampled_from([0.0, -0.0, 0.1234565, 12.3456789, float("nan"), 1e-9, 250.0])


@given(section=policy_sections, message=messages, verdict=verdicts, latency=latencies)
@example(section=PolicySection(), message=Message("m", "t", "s", "alice", "#a"),
         verdict=Verdict("pass", 0.0, "wordlist", "local"), latency=0.5)
@example(section=PolicySection(fail_mode="open"), message=Message("m", "t", "s"),
         verdict=Verdict("flag", None, "chain", ROUTE_FAIL_CLOSED), latency=0.5)
@example(section=PolicySection(channels={"": ChannelPolicy(flag_score=0.5)}),
         message=Message("m", "t", "s", channel=""),
         verdict=Verdict("pass", 0.9, "e", "local"), latency=0.5)
def test_decide_is_the_reference(section: PolicySection, message: Message, verdict: Verdict,
                                 latency: float) -> None:
    policy = Policy(section)
    new, old = policy.decide(message, verdict, latency), reference_decide(
        policy, message, verdict, latency)
    # Each gets its own wall-clock ts; everything else must be the same (compared as the
    # lines' bytes: a NaN latency is not equal to itself).
    assert reference_lines([with_ts(new, 0.0)], True) == reference_lines([with_ts(old, 0.0)], True)
    assert (new.judged, new.exempt, new.shadow) == (old.judged, old.exempt, old.shadow)


decisions = st.builds(
    Decision, message=messages, verdict=verdicts, action=st.sampled_from(["none", "kick"]),
    latency_ms=latencies,
    ts=st.floats(min_value=0, max_value=4e9) | st.just(1764130000.9999995),
    shadow=st.booleans(), exempt=st.booleans(), strikes=st.none() | st.integers(0, 5),
    step=st.none() | st.sampled_from(["warn", "timeout 10m"]),
    duration=st.none() | st.just(600.0), reason=st.none() | st.text(max_size=10),
    repeated=st.booleans(), judged=st.none() | actions_said,
)


@given(batch=st.lists(decisions, max_size=6), include_text=st.booleans(), shared=st.booleans())
def test_decision_lines_are_the_reference(batch: list[Decision], include_text: bool,
                                          shared: bool) -> None:
    if shared and batch:  # as the pipeline makes them: one latency and one ts for the batch
        latency, ts = batch[0].latency_ms, batch[0].ts
        batch = [Decision(d.message, d.verdict, d.action, latency, ts, d.shadow, d.exempt,
                          d.strikes, d.step, d.duration, d.reason, d.repeated, d.judged)
                 for d in batch]
    expected = reference_lines(batch, include_text)
    assert decision_lines(batch, include_text=include_text) == expected
    assert b"".join(d.to_line(include_text=include_text) for d in batch) == expected


def test_a_negative_zero_latency_after_a_zero_keeps_its_sign() -> None:
    # 0.0 == -0.0: a cache of the rounded latency by value would write the first's sign.
    message, verdict = Message("m", "t", "s"), Verdict("pass", 0.0, "e", "local")
    batch = [Decision(message, verdict, "none", 0.0, 1.0),
             Decision(message, verdict, "none", -0.0, 1.0)]
    lines = decision_lines(batch).splitlines()
    assert [orjson.loads(line)["latency_ms"] for line in lines] == [0.0, -0.0]
    assert b'"latency_ms":-0.0' in lines[1]
