"""Reading moderation providers' replies: JSON objects, and numbers that may come as strings."""

from __future__ import annotations

import math
from typing import Any

import orjson


def json_object(data: bytes | str, error: type[ValueError]) -> dict[str, Any]:
    """``data`` as a JSON object; ``error`` says why it is not one."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise error("reply is not JSON") from None
    if not isinstance(value, dict):
        raise error(f"reply is {type(value).__name__}, not an object")
    return value


def as_number(value: Any) -> float | None:
    """A finite float from a number or a numeric string; ``None`` for anything else (booleans,
    and "NaN" or "Infinity", which float() reads but no score is: a NaN would compare false
    with every threshold and hide the other scores from ``max``)."""
    if type(value) is float:  # the common case, first
        number = value
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        try:
            number = float(value)
        except OverflowError:  # beyond a double (a Python int has no bound): not a score
            return None
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None
