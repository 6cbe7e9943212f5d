"""Reading moderation providers' replies: JSON objects, and numbers that may come as strings."""

from __future__ import annotations

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
