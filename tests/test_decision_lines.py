"""``decision_lines`` (every decision line is written through it, a batch at a time, first
without the options only odd records need) writes exactly what each decision's
:meth:`~chatmod.core.model.Decision.to_line` writes, odd records included; and no record
fails its line (before round 4, an integer beyond 64 bits among an engine's scores failed
the whole batch's lines)."""

from __future__ import annotations

import decimal
import enum
import os
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatmod.core.model import Decision, Message, Verdict, decision_lines


class Shade(enum.Enum):
    DARK = "dark"


class Score(float):
    """A float subclass, as numpy's float64 is: orjson has no type for it."""


# Score values and keys as engines may hand them over: JSON's own types, and odd ones.
ODD_VALUES = st.sampled_from([Score(0.5), decimal.Decimal("0.25"), {1, 2}, (1, "a"), b"raw",
                              Shade.DARK, object(), float("nan"), 2**70, -(2**65)])
VALUES = st.floats() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.none() \
    | st.booleans() | ODD_VALUES
KEYS = st.text(max_size=5) | st.integers(-5, 5) | st.sampled_from([1.5, None, True, 2**64])
SCORES = st.dictionaries(st.text(max_size=6), st.dictionaries(KEYS, VALUES, max_size=3)
                         | VALUES, max_size=3) | st.dictionaries(KEYS, VALUES, max_size=3)

messages = st.builds(
    Message, id=st.text(max_size=6), text=st.text(max_size=12), source=st.just("stdin"),
    author=st.none() | st.text(max_size=4), channel=st.none() | st.text(max_size=4),
    timestamp=st.none() | st.text(max_size=4), author_account=st.none() | st.text(max_size=4),
    event=st.none() | st.just("join"))
verdicts = st.builds(Verdict, action=st.sampled_from(["pass", "flag", "delete", "odd"]),
                     score=st.none() | st.floats(allow_nan=False), engine=st.just("e"),
                     route=st.just("ws"), scores=SCORES)


@st.composite
def batches(draw: st.DrawFn) -> list[Decision]:
    """Decisions as a batch has them: most share a latency and a ts, some do not."""
    latency = draw(st.floats(0, 1e4))
    ts = draw(st.floats(0, 4e9))
    made = []
    for message, verdict in draw(st.lists(st.tuples(messages, verdicts), max_size=5)):
        made.append(Decision(
            message, verdict, draw(st.sampled_from(["none", "delete"])),
            draw(st.just(latency) | st.floats(0, 1e4)), draw(st.just(ts) | st.floats(0, 4e9)),
            shadow=draw(st.booleans()), exempt=draw(st.booleans()),
            strikes=draw(st.none() | st.integers(0, 5)),
            step=draw(st.none() | st.just("warn")), duration=draw(st.none() | st.floats(0, 60)),
            reason=draw(st.none() | st.text(max_size=5)), repeated=draw(st.booleans())))
    return made


def lines_of(decisions: list[Decision], include_text: bool) -> bytes:
    return b"".join(decision.to_line(include_text=include_text) for decision in decisions)


# Explicit settings override the loaded profile: the thorough count is asked for here.
EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300


@settings(max_examples=EXAMPLES, deadline=None)
@given(batches(), st.booleans())
@example([Decision(Message("m", "t", "stdin"), Verdict("pass", 0.1, "e", "ws",
                                                       {"g": {1: Score(0.5)}}), "none", 1.0)],
         True)
@example([Decision(Message("m", "t", "stdin"), Verdict("pass", 0.1, "e", "ws",
                                                       {"g": {"a": 0.5}}), "none", 1.0)],
         False)
def test_decision_lines_are_each_decisions_line(decisions: list[Decision],
                                                include_text: bool) -> None:
    written = decision_lines(decisions, include_text=include_text)
    assert written == lines_of(decisions, include_text)
    for line, decision in zip(written.splitlines(), decisions, strict=True):
        record: dict[str, Any] = orjson.loads(line)
        assert record["id"] == decision.message.id
        assert ("text" in record) is include_text


def cyclic_scores() -> dict[str, Any]:
    scores: dict[str, Any] = {"a": 0.5}
    scores["itself"] = scores
    return scores


def test_a_record_orjson_refuses_is_still_written_with_its_odd_values_as_text() -> None:
    message = Message("m-1", "hello", "stdin")
    decisions = [Decision(message, Verdict("pass", 0.1, "e", "ws", scores), "none", 1.0, 0.0)
                 for scores in ({"g": {"big": 2**70}}, {2**64: -(2**65)}, cyclic_scores(),
                                {"g": {"a": 0.5}})]
    lines = decision_lines(decisions).splitlines()
    records = [orjson.loads(line) for line in lines]
    assert [r["id"] for r in records] == ["m-1"] * 4  # one line each, none lost
    assert records[0]["scores"] == {"g": {"big": str(2**70)}}
    assert records[1]["scores"] == {str(2**64): str(-(2**65))}
    assert records[2]["scores"]["a"] == 0.5  # the cycle cut where it gets too deep
    assert records[3]["scores"] == {"g": {"a": 0.5}}


class Unprintable:
    """An engine's odd score object whose text and number both fail."""

    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__

    def __float__(self) -> float:
        raise RuntimeError("no number")


def test_a_score_with_no_text_costs_neither_its_line_nor_the_batchs() -> None:
    # Before round 8, either of the first two raised out of decision_lines, and the sink
    # failed the whole batch.
    batch = [Decision(Message(name, "hello", "stdin"),
                      Verdict("pass", 0.1, "e", "ws", scores), "none", 1.0, 0.0)
             for name, scores in (("huge", {"g": {"a": 2**20000}}),
                                  ("broken", {"g": {"a": Unprintable()}}),
                                  ("huge-key", {2**20000: 0.5}),
                                  ("usual", {"g": {"a": 0.5}}))]
    records = [orjson.loads(line) for line in decision_lines(batch).splitlines()]
    assert [record["id"] for record in records] == ["huge", "broken", "huge-key", "usual"]
    assert records[0]["scores"] == {"g": {"a": "<int>"}}  # beyond Python's 4,300 digits
    assert records[1]["scores"] == {"g": {"a": "<Unprintable>"}}
    assert records[2]["scores"] == {"<int>": 0.5}
    assert records[3]["scores"] == {"g": {"a": 0.5}}
    assert [decision.to_line() for decision in batch] == decision_lines(batch).splitlines(
        keepends=True)
