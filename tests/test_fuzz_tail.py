"""``chatmod tail`` reads whatever is in a file or a pipe: no line may stop it.

Property: any line is either skipped or shown, and the summary can always be written. The
number of examples follows the hypothesis profile (HYPOTHESIS_PROFILE=thorough: 10,000).
"""

from __future__ import annotations

import argparse
import io
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.cli.tail import Printer, _decision

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text())
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
TIMES = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.datetimes().map(lambda d: d.isoformat() + "+05:30"),
    st.text(max_size=30),
)


@st.composite
def decision_lines(draw: st.DrawFn) -> bytes:
    """A JSON object with ``action`` and ``verdict`` (so tail shows it) and any other keys."""
    record: dict[str, Any] = draw(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5))
    record["action"] = draw(JSON_VALUES)
    record["verdict"] = draw(JSON_VALUES)
    for key, values in (("ts", TIMES | JSON_VALUES), ("latency_ms", JSON_VALUES),
                        ("score", JSON_VALUES), ("text", JSON_VALUES),
                        ("channel", JSON_VALUES), ("author", JSON_VALUES)):
        if draw(st.booleans()):
            record[key] = draw(values)
    prefix = draw(st.sampled_from([b"", b"Nov 22 03:50:00 host chatmod[1]: ", b"{{"]))
    return prefix + orjson.dumps(record)


def printer() -> tuple[Printer, io.StringIO]:
    out = io.StringIO()
    args = argparse.Namespace(summary_every=0.0, no_color=False, action=[], channel=[],
                              author=[], route=[])
    return Printer(args, out), out


@given(lines=st.lists(st.binary(max_size=200) | decision_lines(), max_size=8))
@example(lines=[b'{"action": "delete", "verdict": "delete", "ts": "2026-11-22T03:50:00Z"}',
                b'{"action": "none", "verdict": "pass", "ts": "2026-11-22T03:50:05"}'])
@example(lines=[b'{"action": 1, "verdict": [], "latency_ms": true, "score": 1e308}'])
@example(lines=[b'{"action": "x\\u001b[2J", "verdict": "\\u0007", "channel": "#a\\nb", '
                b'"author": "\\u009b31m", "engine": "\\r", "route": "\\u0000"}'])
def test_any_line_is_skipped_or_shown_and_summarised(lines: list[bytes]) -> None:
    shown, out = printer()
    for line in lines:
        decision = _decision(line)
        assert decision is None or ("action" in decision and "verdict" in decision)
        if decision is not None and shown.wants(decision):
            shown.show(decision)
    shown.maybe_summary(final=True)
    text = out.getvalue()
    assert text.splitlines()[-1].startswith("-- ")
    # Whatever a line carries, no control character reaches the terminal raw.
    assert not [c for c in text if c != "\n" and (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0)]
