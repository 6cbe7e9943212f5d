from __future__ import annotations

import orjson

from chatmod.core.model import Decision, Message, Verdict, format_timestamp, generate_message_id

DECISION_KEYS = [
    "id", "source", "channel", "author", "verdict", "score", "action", "engine", "route",
    "latency_ms", "ts", "scores", "text",
]


def make_decision(**kwargs: object) -> Decision:
    message = Message(id="m-1", text="hi\x00 there", source="stdin", author="alice",
                      channel="#lobby")
    verdict = Verdict("delete", 0.97, "local", "local", {"profanity": 0.97})
    return Decision(message, verdict, "delete", 12.34567, ts=1616965047.337, **kwargs)  # type: ignore[arg-type]


def test_decision_line_has_the_documented_keys_in_order() -> None:
    line = make_decision().to_line()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    record = orjson.loads(line)
    assert list(record) == DECISION_KEYS
    assert record == {
        "id": "m-1", "source": "stdin", "channel": "#lobby", "author": "alice",
        "verdict": "delete", "score": 0.97, "action": "delete", "engine": "local",
        "route": "local", "latency_ms": 12.346, "ts": "2021-03-28T20:57:27.337Z",
        "scores": {"profanity": 0.97}, "text": "hi\x00 there",
    }


def test_text_can_be_left_out_and_flags_appear_only_when_set() -> None:
    record = orjson.loads(make_decision(shadow=True, exempt=True).to_line(include_text=False))
    assert "text" not in record
    assert record["shadow"] is True
    assert record["exempt"] is True
    assert "shadow" not in orjson.loads(make_decision().to_line())


def test_odd_score_types_do_not_break_serialisation() -> None:
    class Weird:
        def __str__(self) -> str:
            return "weird"

    message = Message(id="m", text="t", source="s")
    verdict = Verdict("pass", None, "x", "ws", {"a": {1, 2}, "b": Weird()})
    record = orjson.loads(Decision(message, verdict, "none", 1.0).to_line())
    assert sorted(record["scores"]["a"]) == [1, 2]
    assert record["scores"]["b"] == "weird"


def test_generated_ids_are_unique() -> None:
    assert len({generate_message_id() for _ in range(1000)}) == 1000


def test_timestamp_format() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"


def test_scores_that_convert_to_numbers_become_numbers() -> None:
    from decimal import Decimal
    from fractions import Fraction

    class Index:
        def __index__(self) -> int:
            return 3

    class BadFloat:
        def __float__(self) -> float:
            raise ValueError("no")

        def __str__(self) -> str:
            return "bad float"

    message = Message(id="m", text="t", source="s")
    scores = {"d": Decimal("0.25"), "f": Fraction(1, 4), "i": Index(), "x": BadFloat()}
    record = orjson.loads(Decision(message, Verdict("pass", None, "x", "ws", scores), "none",
                                   1.0).to_line())
    assert record["scores"] == {"d": 0.25, "f": 0.25, "i": 3.0, "x": "bad float"}
