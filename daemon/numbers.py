"""Numbers from provider replies, which send them as numbers or as numeric strings."""

from __future__ import annotations

from typing import Any


def as_number(value: Any) -> float | None:
    """A float from a number or a numeric string; ``None`` for anything else (booleans too)."""
    if type(value) is float:  # the common case, first
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
