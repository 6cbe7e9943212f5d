"""Ladder configs an operator can write that must be refused at load, not at the first strike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatmod.config.schema import parse_table
from chatmod.config.sections import MAX_STRIKE_WEIGHT, LadderSection
from chatmod.errors import ConfigError
from chatmod.policy.ladder import Ladder
from chatmod.state.strikes import SqliteStrikeStore

FUZZ_EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300
INT64_MAX = 2**63 - 1  # the largest integer TOML allows


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.one_of(st.floats(), st.integers(-(2**63), INT64_MAX)))
@example(float("inf"))  # TOML's `inf`: was accepted, then every strike's reason failed
@example(1e400)
def test_any_window_is_refused_at_load_or_works_at_a_strike(window: float) -> None:
    try:
        section = parse_table(LadderSection, {"steps": ["warn"], "window": window}, "ladder")
    except ConfigError as exc:
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert "ladder.window" in refused
        return
    ladder = Ladder.parse("x", section.steps, section.window, section.strikes)
    assert ladder.reason(1, ladder.step_for(1)).startswith("ladder x: strike 1 within ")


def test_a_weight_too_large_is_named_at_load() -> None:
    with pytest.raises(ConfigError, match=r"ladder\.strikes\.delete: expected 0 to 1000"):
        parse_table(LadderSection, {"steps": ["warn"], "strikes": {"delete": INT64_MAX}},
                    "ladder")
    section = parse_table(LadderSection, {"steps": ["warn"],
                                          "strikes": {"delete": MAX_STRIKE_WEIGHT}}, "ladder")
    assert section.strikes == {"delete": MAX_STRIKE_WEIGHT}


async def test_the_largest_weight_counts_in_sqlite(tmp_path: Path) -> None:
    """What the bound protects: SQLite sums the weights in a 64-bit integer."""
    store = SqliteStrikeStore(tmp_path / "state.sqlite3")
    try:
        with trio.fail_after(10):
            for n in range(3):
                outcome = await store.add_strike("#c", "bob", f"m{n}", MAX_STRIKE_WEIGHT,
                                                 1000.0 + n, 3600.0)
            assert outcome.strikes == 3 * MAX_STRIKE_WEIGHT
    finally:
        store.close()
