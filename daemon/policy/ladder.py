"""Escalation ladders, with no I/O: a strike count within a window -> the step taken.

A ladder is a list of steps such as ``["warn", "timeout 10m", "timeout 1h", "ban"]``: the
first strike takes the first step, the second the second, and every strike past the end takes
the last step again. Which verdicts count as a strike, and how much, is a table
(``{"delete" = 1, "flag" = 0}``). The counting itself is the store's
(:mod:`chatmod.state.strikes`); this module only reads the count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

WARN = "warn"
TIMEOUT = "timeout"
KICK = "kick"
BAN = "ban"
# A step with no duration; ``timeout`` needs one.
PLAIN_STEPS = frozenset({WARN, KICK, BAN})
STEP_KINDS = (*sorted(PLAIN_STEPS), TIMEOUT)

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d{1,9})([smhd])")
# The longest timeout a ladder may give. Chat platforms cap theirs far lower (Twitch at 14
# days, Discord at 28) and a timeout of years is a ban that a later unban would not expect.
MAX_TIMEOUT_SECONDS = 365 * 86400


def parse_duration(text: str) -> float:
    """``"10m"`` -> 600.0; units s, m, h, d. Raises ValueError on anything else."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration such as 30s, 10m, 2h or 1d, found {text!r}")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(seconds: float) -> str:
    """600.0 -> ``"10m"``: the largest unit that divides it."""
    whole = int(seconds)
    for unit in ("d", "h", "m"):
        if whole and whole % _UNIT_SECONDS[unit] == 0:
            return f"{whole // _UNIT_SECONDS[unit]}{unit}"
    return f"{whole}s"


@dataclass(frozen=True, slots=True)
class Step:
    """One rung: ``kind`` is warn, timeout, kick or ban; ``duration`` (seconds) for timeout."""

    kind: str
    duration: float | None = None

    def __str__(self) -> str:
        if self.duration is None:
            return self.kind
        return f"{self.kind} {format_duration(self.duration)}"


def parse_step(text: str) -> Step:
    """``"timeout 10m"`` -> Step("timeout", 600.0). Raises ValueError naming what is wrong."""
    words = text.split()
    if not words or words[0] not in STEP_KINDS:
        raise ValueError(f"expected one of {', '.join(STEP_KINDS)} (timeout with a duration, "
                         f"e.g. 'timeout 10m'), found {text!r}")
    kind = words[0]
    if kind == TIMEOUT:
        if len(words) != 2:
            raise ValueError(f"timeout needs a duration, e.g. 'timeout 10m', found {text!r}")
        duration = parse_duration(words[1])
        if duration > MAX_TIMEOUT_SECONDS:
            raise ValueError(f"a timeout is at most 365d (use 'ban' for longer), found {text!r}")
        return Step(kind, duration)
    if len(words) != 1:
        raise ValueError(f"{kind} takes no duration, found {text!r}")
    return Step(kind)


@dataclass(frozen=True, slots=True)
class Ladder:
    """A named ladder: its steps, the window strikes count in, and each verdict's weight."""

    name: str
    steps: tuple[Step, ...]
    window: float
    weights: Mapping[str, int]

    @classmethod
    def parse(cls, name: str, steps: Sequence[str], window: float,
              weights: Mapping[str, int]) -> Ladder:
        """Build from config strings; ValueError on a bad step."""
        return cls(name, tuple(parse_step(s) for s in steps), window, dict(weights))

    @property
    def enabled(self) -> bool:
        return bool(self.steps)

    def weight(self, verdict: str) -> int:
        """How many strikes ``verdict`` counts for (0: none)."""
        return max(0, self.weights.get(verdict, 0))

    def step_for(self, strikes: int) -> Step:
        """The step for the ``strikes``-th strike (1-based; past the end: the last step)."""
        if not self.steps:
            raise ValueError("an empty ladder has no steps")
        return self.steps[min(max(strikes, 1), len(self.steps)) - 1]

    def reason(self, strikes: int, step: Step) -> str:
        """What the decision line says: the rule, the count and the step."""
        return (f"ladder {self.name}: strike {strikes} within "
                f"{format_duration(self.window)} -> {step}")
