"""Confusion matrix and precision / recall / F1, from gold labels and engine verdicts.

Pure functions over plain sequences. A verdict is ``pass``, ``flag``, ``delete``, any other
action an engine said (counted as "not pass" but as neither flag nor delete), or
:data:`ERROR` when the engine gave none (counted as no verdict: it lowers recall and is never
a positive prediction).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from chatmod.core.model import PASS
from chatmod.evaluation.labelled import LABELS

ERROR = "error"
NOT_PASS = "not pass"


@dataclass(frozen=True, slots=True)
class Scores:
    """One class's figures. Precision is 0 when nothing was predicted positive, recall 0 when
    nothing is positive, F1 0 when both are 0."""

    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def support(self) -> int:
        """How many lines truly are of the class."""
        return self.true_positives + self.false_negatives

    @property
    def predicted(self) -> int:
        """How many lines the engine put in the class."""
        return self.true_positives + self.false_positives

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.support if self.support else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def binary_scores(truth: Sequence[bool], predicted: Sequence[bool]) -> Scores:
    """Figures of one class given, per line, whether it is in it and whether it was put in it."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    pairs = Counter(zip(truth, predicted, strict=True))
    return Scores(pairs[True, True], pairs[False, True], pairs[True, False])


def is_flagged(verdict: str) -> bool:
    """A verdict that brings a line to a moderator (anything but pass and no verdict)."""
    return verdict not in (PASS, ERROR)


def confusion(labels: Sequence[str], verdicts: Sequence[str]) -> dict[str, dict[str, int]]:
    """label -> verdict -> count: a row for every label, columns pass, flag, delete, then any
    other verdict seen (sorted)."""
    if len(labels) != len(verdicts):
        raise ValueError(f"{len(labels)} labels but {len(verdicts)} verdicts")
    counts = Counter(zip(labels, verdicts, strict=True))
    columns = [*LABELS, *sorted(set(verdicts) - set(LABELS))]
    return {label: {column: counts[label, column] for column in columns} for label in LABELS}


def per_label(labels: Sequence[str], verdicts: Sequence[str]) -> dict[str, Scores]:
    """Scores for pass, flag, delete (exact verdict) and for "not pass" (any flagging verdict
    on a line labelled flag or delete)."""
    scores = {
        label: binary_scores([g == label for g in labels], [v == label for v in verdicts])
        for label in LABELS
    }
    scores[NOT_PASS] = binary_scores([g != PASS for g in labels],
                                     [is_flagged(v) for v in verdicts])
    return scores
