"""Collecting a config's problems, so that one run reports every mistake of a file."""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from chatmod.errors import ConfigError, ConfigProblem

T = TypeVar("T")
P = ParamSpec("P")


class Problems:
    """Collects every :class:`ConfigError` of a config, so one run reports all its mistakes."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(ConfigError.at(path, message))

    def check(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T | None:
        """``func(*args, **kwargs)``; None, with its problems kept, when it raises ConfigError."""
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            self.errors.append(exc)
            return None

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigError.combine(self.errors)


def parsed(value: T | None) -> T:
    """A value :meth:`Problems.check` returned, once :meth:`Problems.raise_if_any` passed:
    a check that failed kept its problem, so it is not None."""
    if value is None:
        raise AssertionError("a config check failed without reporting a problem")
    return value


def placed(path: str, problem: ConfigProblem) -> ConfigProblem:
    """``problem`` at key ``path``, unless it names its own key."""
    if problem.path:
        return problem
    message = problem.message.removeprefix(f"{path}: ")
    return ConfigProblem(path, message)
