"""The labelled chat set: one JSON object a line, ``{"text", "label"[, "split"]}``."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from chatmod.core.model import DELETE, FLAG, PASS
from chatmod.errors import LabelledSetError

LABELS = (PASS, FLAG, DELETE)


@dataclass(frozen=True, slots=True)
class LabelledLine:
    """One chat line and what a moderator should do with it."""

    text: str
    label: str
    split: str | None = None


def parse_labelled(data: bytes) -> list[LabelledLine]:
    """Every line of a labelled set; blank lines are skipped.

    Raises :class:`LabelledSetError` naming the first bad line: not UTF-8 JSON, not an
    object, ``text`` not a string, ``label`` not one of ``pass``, ``flag``, ``delete``, or
    ``split`` not a string.
    """
    found: list[LabelledLine] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise LabelledSetError(number, f"not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise LabelledSetError(number, f"expected a JSON object, found {type(row).__name__}")
        text, label, split = row.get("text"), row.get("label"), row.get("split")
        if not isinstance(text, str):
            raise LabelledSetError(number, '"text": expected a string')
        if label not in LABELS:
            raise LabelledSetError(
                number, f'"label": expected one of pass, flag, delete, found {label!r:.40}')
        if split is not None and not isinstance(split, str):
            raise LabelledSetError(number, '"split": expected a string')
        found.append(LabelledLine(text, label, split))
    if not found:
        raise LabelledSetError(0, "no labelled lines")
    return found


def select_split(lines: list[LabelledLine], split: str | None) -> list[LabelledLine]:
    """The lines of one split (all of them when ``split`` is None)."""
    if split is None:
        return lines
    chosen = [line for line in lines if line.split == split]
    if not chosen:
        splits = sorted({line.split for line in lines if line.split is not None})
        raise LabelledSetError(0, f"no line has split {split!r} (splits found: "
                                  f"{', '.join(splits) or 'none'})")
    return chosen
