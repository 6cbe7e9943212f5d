"""The model's fast paths give what the slow ones gave: format_timestamp's once-a-second
cache, the frozen dataclasses' quick __init__."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.core.model import format_timestamp


def by_datetime(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@given(st.floats(min_value=-50_000_000_000, max_value=250_000_000_000,
                 allow_nan=False, allow_infinity=False))
@example(1764130000.9999995)  # rounds up into the next second
@example(1764130000.0004995)
@example(-1.5)
@example(0.0)
@example(1764130000.999)
def test_same_text_as_datetime(ts: float) -> None:
    # Examples per the hypothesis profile (tests/conftest.py; HYPOTHESIS_PROFILE=thorough).
    assert format_timestamp(ts) == by_datetime(ts)


def test_consecutive_timestamps_across_seconds() -> None:
    start = 1764130000.0
    for step in range(5000):
        ts = start + step * 0.000731
        assert format_timestamp(ts) == by_datetime(ts)


def test_quick_init_builds_what_the_dataclass_init_built() -> None:
    import dataclasses

    import pytest

    from chatmod.core.model import Decision, Message, Verdict

    message = Message("m-1", "hi", "src", channel="#c")
    assert dataclasses.astuple(message) == (
        "m-1", "hi", "src", None, "#c", {}, (), None, None, None, None)
    assert Message("a", "b", "c").metadata is not Message("a", "b", "c").metadata
    verdict = Verdict("flag", 0.5, "engine", "ws")
    assert verdict.scores == {}
    decision = Decision(message, verdict, "flag", 1.5, shadow=True, reason="why")
    assert (decision.shadow, decision.exempt, decision.reason, decision.strikes) == (
        True, False, "why", None)
    assert Decision(message, verdict, "flag", 1.5, ts=7.0).ts == 7.0
    assert dataclasses.replace(decision, action="none").action == "none"
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.text = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Message("only-id")  # type: ignore[call-arg]
