"""Threshold sweep: which ``flag_threshold`` and ``delete_threshold`` reach a precision.

An engine with a score says ``flag`` at ``score >= flag_threshold`` and ``delete`` at
``score >= delete_threshold``. Over a labelled set, each distinct score is a possible cut;
for a target precision the suggested cut is the one with the highest recall among those
reaching it (the higher cut on a tie). Pure functions; a missing score (no verdict) is never
above a cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chatmod.core.model import DELETE, PASS
from chatmod.evaluation.metrics import Scores, binary_scores

MAX_DECIMALS = 6
GRID = tuple(round(0.05 * step, 2) for step in range(1, 20))


@dataclass(frozen=True, slots=True)
class Cut:
    """``score >= threshold`` counts as positive; ``scores`` are the figures that gives."""

    threshold: float
    scores: Scores


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Suggested thresholds (None: no cut reaches the precision) and the targets used."""

    flag: Cut | None
    delete: Cut | None
    flag_precision: float
    delete_precision: float


def _separating(high: float, low: float | None) -> float:
    """A short number in ``(low, high]``: the cut that keeps ``high`` and drops ``low``."""
    if low is None:
        return high
    middle = (high + low) / 2
    for decimals in range(1, MAX_DECIMALS + 1):
        short = round(middle, decimals)
        if low < short <= high:
            return short
    # Scores too close for a number between them (5e-324 and 0.0): the higher one itself.
    return middle if low < middle <= high else high


def cuts(scores: Sequence[float | None], positive: Sequence[bool]) -> list[Cut]:
    """One cut per distinct score, highest first, each at a short number between that score
    and the next lower one (so the same lines fall on each side)."""
    if len(scores) != len(positive):
        raise ValueError(f"{len(scores)} scores but {len(positive)} labels")
    total = sum(positive)
    ranked = sorted(((s, p) for s, p in zip(scores, positive, strict=True) if s is not None),
                    key=lambda pair: pair[0], reverse=True)
    distinct = sorted({s for s, _ in ranked}, reverse=True)
    found: list[Cut] = []
    true_positives = false_positives = index = 0
    for rank, score in enumerate(distinct):
        while index < len(ranked) and ranked[index][0] == score:
            if ranked[index][1]:
                true_positives += 1
            else:
                false_positives += 1
            index += 1
        lower = distinct[rank + 1] if rank + 1 < len(distinct) else None
        found.append(Cut(_separating(score, lower),
                         Scores(true_positives, false_positives, total - true_positives)))
    return found


def best_cut(found: Sequence[Cut], precision: float, at_least: float = 0.0) -> Cut | None:
    """The cut at or above ``at_least`` with the highest recall among those whose precision
    reaches ``precision`` (the higher cut on a tie); None when none does."""
    eligible = [c for c in found if c.threshold >= at_least and c.scores.predicted
                and c.scores.precision >= precision]
    if not eligible:
        return None
    return max(eligible, key=lambda c: (c.scores.recall, c.threshold))


def suggest(scores: Sequence[float | None], labels: Sequence[str], flag_precision: float,
            delete_precision: float) -> Suggestion:
    """``flag_threshold`` for "not pass" at ``flag_precision``, and ``delete_threshold`` (not
    below it) for ``delete`` at ``delete_precision``."""
    flag = best_cut(cuts(scores, [label != PASS for label in labels]), flag_precision)
    delete = best_cut(cuts(scores, [label == DELETE for label in labels]), delete_precision,
                      at_least=flag.threshold if flag is not None else 0.0)
    return Suggestion(flag, delete, flag_precision, delete_precision)


def at_threshold(scores: Sequence[float | None], positive: Sequence[bool],
                 threshold: float) -> Scores:
    """The figures of ``score >= threshold`` as the positive prediction."""
    return binary_scores(positive, [s is not None and s >= threshold for s in scores])


def grid_table(scores: Sequence[float | None], labels: Sequence[str],
               grid: Sequence[float] = GRID) -> list[tuple[float, Scores, Scores]]:
    """For each threshold of ``grid``: the "not pass" and the ``delete`` figures."""
    not_pass = [label != PASS for label in labels]
    deleted = [label == DELETE for label in labels]
    return [(t, at_threshold(scores, not_pass, t), at_threshold(scores, deleted, t))
            for t in grid]
