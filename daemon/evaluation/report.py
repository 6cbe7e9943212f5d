"""``chatmod eval``'s report: figures from labels and outcomes, as text or as JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from chatmod.evaluation.labelled import LabelledLine
from chatmod.evaluation.metrics import ERROR, NOT_PASS, Scores, confusion, per_label
from chatmod.evaluation.runner import Outcome
from chatmod.evaluation.sweep import Cut, Suggestion, grid_table, suggest

# Most distinct error reasons listed in a report.
MAX_ERROR_REASONS = 5


def _scores(scores: Scores) -> dict[str, float | int]:
    return {"precision": round(scores.precision, 4), "recall": round(scores.recall, 4),
            "f1": round(scores.f1, 4), "support": scores.support,
            "predicted": scores.predicted}


def _cut(cut: Cut | None) -> dict[str, Any] | None:
    return None if cut is None else {"threshold": cut.threshold, **_scores(cut.scores)}


def evaluate(lines: Sequence[LabelledLine], outcomes: Sequence[Outcome], *,
             flag_precision: float, delete_precision: float) -> dict[str, Any]:
    """Everything ``chatmod eval`` reports, as plain data (its ``--json`` output): counts,
    confusion matrix, per-label figures, and, when every verdict had a score, the sweep and
    the suggested thresholds."""
    labels = [line.label for line in lines]
    verdicts = [outcome.action for outcome in outcomes]
    scored = [outcome.score for outcome in outcomes]
    errors = Counter(o.reason for o in outcomes if o.action == ERROR)
    report: dict[str, Any] = {
        "lines": len(lines),
        "labels": dict(Counter(labels)),
        "errors": sum(errors.values()),
        "error_reasons": dict(errors.most_common(MAX_ERROR_REASONS)),
        "confusion": confusion(labels, verdicts),
        "scores": {name: _scores(s) for name, s in per_label(labels, verdicts).items()},
        "sweep": None,
        "suggested": None,
    }
    with_score = [s for s, o in zip(scored, outcomes, strict=True) if o.action != ERROR]
    if with_score and all(s is not None for s in with_score):
        report["sweep"] = [
            {"threshold": t, NOT_PASS: _scores(np), "delete": _scores(d)}
            for t, np, d in grid_table(scored, labels)
        ]
        suggestion: Suggestion = suggest(scored, labels, flag_precision, delete_precision)
        report["suggested"] = {
            "flag_precision": flag_precision, "delete_precision": delete_precision,
            "flag_threshold": _cut(suggestion.flag), "delete_threshold": _cut(suggestion.delete),
        }
    return report


def _row(cells: Sequence[object], widths: Sequence[int]) -> str:
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()


def render(report: dict[str, Any], heading: str) -> str:
    """The report as the text ``chatmod eval`` prints."""
    counts = ", ".join(f"{label} {n}" for label, n in sorted(report["labels"].items()))
    out = [heading, f"{report['lines']} lines ({counts}); {report['errors']} without a verdict"]
    for reason, count in report["error_reasons"].items():
        out.append(f"  {count} x {reason}")
    matrix: dict[str, dict[str, int]] = report["confusion"]
    columns = list(next(iter(matrix.values())))
    widths = [8] + [max(6, len(c)) for c in columns]
    out += ["", "confusion matrix (rows: label, columns: verdict)",
            _row(["", *columns], widths)]
    out += [_row([label, *row.values()], widths) for label, row in matrix.items()]
    widths = [8, 9, 6, 6, 7, 9]
    out += ["", _row(["", "precision", "recall", "f1", "support", "predicted"], widths)]
    for name, s in report["scores"].items():
        out.append(_row([name, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}",
                         s["support"], s["predicted"]], widths))
    if report["sweep"] is None:
        out += ["", "no threshold sweep: the engine's verdicts have no score"]
        return "\n".join(out) + "\n"
    widths = [9, 12, 9, 12, 9]
    out += ["", "threshold sweep (score >= threshold)",
            _row(["threshold", "not-pass P", "R", "delete P", "R"], widths)]
    for point in report["sweep"]:
        np, d = point[NOT_PASS], point["delete"]
        out.append(_row([f"{point['threshold']:.2f}", f"{np['precision']:.3f}",
                         f"{np['recall']:.3f}", f"{d['precision']:.3f}", f"{d['recall']:.3f}"],
                        widths))
    suggested = report["suggested"]
    out.append("")
    for key, what, target in (("flag_threshold", "not pass", suggested["flag_precision"]),
                              ("delete_threshold", "delete", suggested["delete_precision"])):
        cut = suggested[key]
        if cut is None:
            out.append(f"{key}: no threshold reaches {what} precision {target:g}")
        else:
            out.append(f"{key} = {cut['threshold']:g}  ({what} precision {cut['precision']:.3f}"
                       f" >= {target:g}, recall {cut['recall']:.3f})")
    return "\n".join(out) + "\n"
