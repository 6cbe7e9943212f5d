"""Typed validation of TOML tables into frozen dataclasses.

Every component declares its config as a dataclass; :func:`parse_table` checks a TOML table
against it and raises :class:`ConfigError` naming the key path, the value found and what was
expected. Unknown keys are errors with a "did you mean" suggestion.

Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Literal[...]``,
``tuple[T, ...]`` (written as a TOML array), ``dict[str, T]``, ``T | None``, nested dataclasses
and :class:`Secret`. Field metadata may carry ``min`` / ``max`` bounds, ``one_or_many=True``
(a single value is accepted where an array is expected) and ``help``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hmac
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

from chatmod.config.problems import Problems
from chatmod.errors import ConfigError, ConfigProblem

T = TypeVar("T")

SECRET_SUFFIXES = ("_env", "_file")
CREDENTIALS_DIRECTORY_ENV = "CREDENTIALS_DIRECTORY"
# Shorter secrets are not scrubbed from logs: they would match ordinary words.
MIN_REDACTED_LENGTH = 6


class Secret:
    """A secret taken from the environment or a file. It never prints its value."""

    __slots__ = ("_value", "origin")
    # Every secret value read, so log output can be scrubbed of them whatever the code path.
    _revealed: ClassVar[tuple[str, ...]] = ()

    def __init__(self, origin: str, value: str | None) -> None:
        self.origin = origin
        self._value = value
        known = Secret._revealed
        if value is not None and len(value) >= MIN_REDACTED_LENGTH and value not in known:
            Secret._revealed = (*known, value)

    @classmethod
    def revealed_values(cls) -> tuple[str, ...]:
        return cls._revealed

    @property
    def resolved(self) -> bool:
        return self._value is not None

    def reveal(self) -> str:
        """The secret itself: for the one place that sends it, never for output."""
        if self._value is None:
            raise ConfigError(f"secret from {self.origin} was not resolved")
        return self._value

    def __eq__(self, other: object) -> bool:
        # Same source and same value (compared in constant time): a reload that re-reads an
        # unchanged key must not look like a changed engine.
        if not isinstance(other, Secret):
            return NotImplemented
        return self.origin == other.origin and hmac.compare_digest(
            (self._value or "").encode(), (other._value or "").encode())

    def __hash__(self) -> int:
        return hash(self.origin)

    def masked(self) -> str:
        state = "set" if self._value is not None else "not resolved: component not in use"
        return f"*** ({self.origin}, {state})"

    def __repr__(self) -> str:
        return f"Secret({self.masked()})"

    __str__ = __repr__


def describe(value: object) -> str:
    """A short, safe rendering of a config value for error messages."""
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` when a close choice exists, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def join_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def parse_table(
    cls: type[T],
    table: Mapping[str, Any],
    path: str,
    *,
    resolve_secrets: bool = True,
    ignore: frozenset[str] = frozenset(),
) -> T:
    """Validate ``table`` against the dataclass ``cls``; ``path`` prefixes every error.

    Every problem of the table is reported, in one :class:`ConfigError`.
    """
    if not isinstance(table, Mapping):
        raise ConfigError.at(path or "config", f"expected a table, found {describe(table)}")
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise ConfigError.at(path or "config", f"cannot be checked: {cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    accepted = set(fields) | ignore
    for name in fields:
        if is_secret_type(hints[name]):
            accepted.discard(name)
            accepted.update(name + suffix for suffix in SECRET_SUFFIXES)
    problems = Problems()
    for key in table:
        if key not in accepted:
            if key in fields:  # a secret written in clear
                problems.add(join_path(path, key), (
                    f"secrets are not written in the config; use {key}_env (an environment "
                    f"variable) or {key}_file (a file)"))
            else:
                problems.add(join_path(path, key),
                             f"unknown key{did_you_mean(str(key), accepted)}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        hint = hints[name]
        key_path = join_path(path, name)
        if is_secret_type(hint):
            if name in table:
                continue  # reported above
            try:
                secret = _read_secret(table, name, key_path, resolve_secrets)
            except ConfigError as exc:
                problems.errors.append(exc)
                continue
            if secret is not None:
                values[name] = secret
            elif not is_optional(hint) and _has_no_default(field):
                problems.add(key_path, f"required; set {name}_env or {name}_file")
            continue
        if name not in table:
            if _has_no_default(field):
                problems.add(key_path, "required key is missing")
            continue
        converted = problems.check(
            _convert, table[name], hint, key_path, field.metadata, resolve_secrets)
        if converted is not None:
            values[name] = converted
    problems.raise_if_any()
    try:
        return cls(**values)
    except ConfigError as exc:  # raised by a __post_init__ check across keys
        raise ConfigError(problems=[_under(path, p) for p in exc.problems]) from None
    except ValueError as exc:  # a library check in __post_init__, e.g. urlsplit's
        raise ConfigError.at(path or "config", str(exc)) from None


def _under(path: str, problem: ConfigProblem) -> ConfigProblem:
    """A problem a dataclass found in itself (``"key: message"``), placed under ``path``."""
    if problem.path:
        return ConfigProblem(join_path(path, problem.path), problem.message)
    key, sep, message = problem.message.partition(": ")
    if sep and key.isidentifier():
        return ConfigProblem(join_path(path, key), message)
    return ConfigProblem(path, problem.message)


def _has_no_default(field: dataclasses.Field[Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def is_optional(hint: Any) -> bool:
    """``T | None``."""
    return _is_union(hint) and type(None) in get_args(hint)


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (typing.Union, types.UnionType)


def is_secret_type(hint: Any) -> bool:
    """:class:`Secret` or ``Secret | None``: given as ``<key>_env`` or ``<key>_file``."""
    if hint is Secret:
        return True
    return _is_union(hint) and Secret in get_args(hint)


def _read_secret(
    table: Mapping[str, Any], name: str, key_path: str, resolve: bool
) -> Secret | None:
    env_key, file_key = name + "_env", name + "_file"
    if env_key in table and file_key in table:
        raise ConfigError.at(key_path, f"set either {env_key} or {file_key}, not both")
    if env_key in table:
        var = table[env_key]
        if not isinstance(var, str) or not var:
            raise ConfigError.at(f"{key_path}_env", "expected the name of an environment "
                                 f"variable, found {describe(var)}")
        if not resolve:
            return Secret(f"env {var}", None)
        value = os.environ.get(var, "").strip()
        if not value:
            raise ConfigError.at(f"{key_path}_env",
                                 f"environment variable {var} is not set (or is blank)")
        return Secret(f"env {var}", value)
    if file_key in table:
        raw = table[file_key]
        if not isinstance(raw, str) or not raw:
            raise ConfigError.at(f"{key_path}_file",
                                 f"expected a file path, found {describe(raw)}")
        file_path = Path(raw)
        credentials = os.environ.get(CREDENTIALS_DIRECTORY_ENV)
        # systemd's LoadCredential= puts files in $CREDENTIALS_DIRECTORY; a bare name points there.
        if not file_path.is_absolute() and credentials:
            file_path = Path(credentials) / file_path
        if not resolve:
            return Secret(f"file {file_path}", None)
        try:
            value = file_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError.at(f"{key_path}_file",
                                 f"cannot read {file_path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:  # says nothing of the content: it is a secret
            raise ConfigError.at(f"{key_path}_file", f"{file_path} is not UTF-8 text") from None
        except ValueError:  # a NUL in the path
            raise ConfigError.at(f"{key_path}_file",
                                 f"expected a file path, found {describe(raw)}") from None
        if not value:
            raise ConfigError.at(f"{key_path}_file", f"{file_path} is empty")
        return Secret(f"file {file_path}", value)
    return None


def _convert(
    value: Any, hint: Any, path: str, meta: Mapping[str, Any], resolve: bool
) -> Any:
    origin = get_origin(hint)
    if _is_union(hint):
        options = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(options) != 1:
            raise TypeError(f"unsupported union in config schema at {path}")
        return _convert(value, options[0], path, meta, resolve)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            hint_text = did_you_mean(value, choices) if isinstance(value, str) else ""
            raise ConfigError.at(path, f"expected one of {listed}, found {describe(value)}"
                                       f"{hint_text}")
        return value
    if origin is tuple:
        (item_type, _ellipsis) = get_args(hint)
        if not isinstance(value, list):
            if meta.get("one_or_many"):
                value = [value]
            else:
                raise ConfigError.at(path, f"expected an array, found {describe(value)}")
        problems = Problems()
        items = [problems.check(_convert, item, item_type, join_path(path, i), {}, resolve)
                 for i, item in enumerate(value)]
        problems.raise_if_any()
        return tuple(items)
    if origin is dict:
        _key_type, item_type = get_args(hint)
        if not isinstance(value, Mapping):
            raise ConfigError.at(path, f"expected a table, found {describe(value)}")
        problems = Problems()
        entries = {key: problems.check(_convert, item, item_type, _quoted_path(path, key), {},
                                       resolve)
                   for key, item in value.items()}
        problems.raise_if_any()
        return entries
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return parse_table(hint, value, path, resolve_secrets=resolve)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError.at(path, f"expected true or false, found {describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError.at(path, f"expected {bounds_text('an integer', meta)}, "
                                       f"found {describe(value)}")
        _check_bounds(value, path, meta, "an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError.at(path, f"expected {bounds_text('a number', meta)}, "
                                       f"found {describe(value)}")
        _check_bounds(value, path, meta, "a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError.at(path, f"expected a string, found {describe(value)}")
        if meta.get("nonempty") and not value:
            raise ConfigError.at(path, "expected a non-empty string, found ''")
        return value
    raise TypeError(f"unsupported type {hint!r} in config schema at {path}")


def _quoted_path(path: str, key: str) -> str:
    plain = key.replace("_", "").replace("-", "").isalnum()
    return join_path(path, key) if plain else f'{path}."{key}"'


def bounds_text(kind: str, meta: Mapping[str, Any]) -> str:
    """``"a number from 0 to 1"``: ``kind`` with the field's ``min`` / ``max``."""
    low, high = meta.get("min"), meta.get("max")
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def _check_bounds(value: float, path: str, meta: Mapping[str, Any], kind: str) -> None:
    low, high = meta.get("min"), meta.get("max")
    # NaN compares false with every bound, so it would pass them all.
    if math.isnan(value) or (low is not None and value < low) or (
            high is not None and value > high):
        raise ConfigError.at(path, f"expected {bounds_text(kind, meta)}, found {describe(value)}")


def to_plain(value: Any) -> Any:
    """A dataclass tree as plain data for printing, with every secret masked."""
    if isinstance(value, Secret):
        return value.masked()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def setting(default: Any = dataclasses.MISSING, *, help: str = "", **meta: Any) -> Any:
    """A dataclass field with a default (none: the key is required) and schema metadata
    (``min``, ``max``, ``help``: the key's line in ``chatmod config reference``, ...)."""
    meta["help"] = help
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (dict, list)):
        factory = default.copy
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
