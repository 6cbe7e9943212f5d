"""Property tests of config loading (chatmod.config.load, chatmod.config.schema): whatever the file or
table holds, only ConfigError escapes, its message names the key path, and an accepted
config keeps every bound and every secret hidden."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import tomllib
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from chatmod.config.load import TOP_LEVEL_KEYS, Config, load_config, parse_config
from chatmod.config.registry import Registry
from chatmod.config.schema import SECRET_SUFFIXES
from chatmod.errors import ConfigError

from .helpers import EXAMPLE_CONFIG

SECRET_ENV = "CHATMOD_FUZZ_SECRET"
SECRET_VALUE = "fuzz-secret-0f3c9a"  # must never show in an error or the printed config
MISSING_ENV = "CHATMOD_FUZZ_NOT_SET"
REGISTRY = Registry.from_entry_points()

# Every built-in plugin configured once, each secret from the environment: valid as it is.
BASE: dict[str, Any] = {
    "daemon": {"drain_timeout": 1.0, "concurrency": 4, "queue_size": 4, "log_level": "info",
               "log_format": "json", "stats_interval": 0.0, "state_dir": ""},
    "engine": {"primary": "chatsight", "fallback": ["discuse", "local", "wordlist", "flag"],
               "timeout": 1.0},
    "engines": {
        "chatsight": {"api_key_env": SECRET_ENV, "ws_url": "ws://127.0.0.1:1/ws",
                      "http_url": "http://127.0.0.1:1"},
        "discuse": {"client_id_env": SECRET_ENV, "client_secret_env": SECRET_ENV,
                    "url": "http://127.0.0.1:1", "project_id": 3},
        "local": {"flag_threshold": 0.5, "delete_threshold": 0.9},
        "wordlist": {"delete": ["idiot"], "flag": ["pizza"]},
    },
    "policy": {"actions": {"pass": "none", "flag": "flag"}, "unknown_verdict_action": "flag",
               "shadow": False, "exempt_authors": ["mod"],
               "channels": {"#a": {"actions": {"flag": "delete"}, "shadow": True,
                                   "exempt_authors": []}}},
    "cache": {"enabled": True, "ttl": 1.0, "size": 10},
    "dead_letters": {"path": "dead.jsonl", "include_text": False},
    "http": {"enabled": False, "host": "127.0.0.1", "port": 0, "max_body": 100,
             "chatsight_webhook_secret_env": SECRET_ENV, "webhook_window": 60.0},
    "sources": [
        {"type": "stdin", "format": "jsonl", "max_line_bytes": 1024, "channel": "#a"},
        {"type": "irc", "name": "irc", "channels": ["#a"], "password_env": SECRET_ENV,
         "sasl_user": "u", "sasl_password_env": SECRET_ENV},
        {"type": "redis", "stream": "chat", "password_env": SECRET_ENV},
        {"type": "chatsight_voice", "api_key_env": SECRET_ENV,
         "jobs": [{"url": "http://127.0.0.1:1/a.mp3", "convo_id": "convo-12345"}]},
    ],
    "sinks": [
        {"type": "jsonl", "path": "-"},
        {"type": "log", "level": "info", "max_text": 10},
        {"type": "irc", "connection": "irc"},
        {"type": "redis", "stream": "out"},
        {"type": "webhook", "url": "http://127.0.0.1:1/hook", "secret_env": SECRET_ENV},
    ],
}


def table_paths(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Where BASE has a table: each is a place to change, add or remove keys."""
    if isinstance(value, dict):
        yield path
        for key, item in value.items():
            yield from table_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from table_paths(item, (*path, i))


TABLE_PATHS = list(table_paths(BASE))


def known_keys() -> list[str]:
    """Every key some table accepts (a secret as its _env and _file keys), and then some."""
    names = {"type", "name", *TOP_LEVEL_KEYS}
    for kind in ("engine", "source", "sink"):
        for plugin in REGISTRY.names(kind):
            config_class = REGISTRY.get(kind, plugin, "fuzz").load().Config
            for field in dataclasses.fields(config_class):
                names.add(field.name)
                names.update(field.name + suffix for suffix in SECRET_SUFFIXES)
    return sorted(names)


KNOWN_KEYS = known_keys()


@pytest.fixture(scope="module", autouse=True)
def secret_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The secret in the environment, and secret files good and bad to point at."""
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "good").write_text(SECRET_VALUE + "\n")
    (folder / "empty").write_text("")
    (folder / "latin1").write_bytes(b"caf\xe9 " + SECRET_VALUE.encode())
    (folder / "dir").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET_ENV, SECRET_VALUE)
        patch.delenv(MISSING_ENV, raising=False)
        patch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        yield folder


def secret_file_values() -> list[str]:
    # The fixture's folder is not known when strategies are built: these are resolved by
    # name in `resolve_files`.
    return ["@good", "@empty", "@latin1", "@dir", "@missing", "@nul"]


def resolve_files(value: Any, folder: Path) -> Any:
    if isinstance(value, str) and value.startswith("@") and value[1:] in {
            "good", "empty", "latin1", "dir", "missing"}:
        return str(folder / value[1:])
    if value == "@nul":
        return str(folder / "good") + "\x00"
    if isinstance(value, dict):
        return {key: resolve_files(item, folder) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_files(item, folder) for item in value]
    return value


# Strings that mean something somewhere in a config, besides arbitrary text.
MEANINGFUL = [
    SECRET_ENV, MISSING_ENV, "", "chatsight", "discuse", "local", "wordlist", "stdin", "irc",
    "redis", "chatsight_voice", "jsonl", "log", "webhook", "pass", "flag", "delete", "none",
    "text", "jsonl", "json", "debug", "info", "ws://127.0.0.1:1", "ws://[::1", "http://[",
    "http://127.0.0.1:1", "https://", "#a", "convo-12345", "-", *secret_file_values(),
]
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes)))
toml_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
toml_scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(),
    toml_text, st.sampled_from(MEANINGFUL), st.datetimes(timezones=st.none() | offsets),
    st.dates(), st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(KNOWN_KEYS) | toml_text, inner, max_size=3),
    max_leaves=8,
)


def same_type_as(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if isinstance(value, float):
        return st.floats()
    if isinstance(value, list):
        return st.lists(st.sampled_from(MEANINGFUL) | toml_text, max_size=3)
    return st.sampled_from(MEANINGFUL) | toml_text


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """BASE with 1-3 keys changed, added or removed; and the top-level sections touched."""
    config = copy.deepcopy(BASE)
    touched: set[str] = set()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(TABLE_PATHS))
        table: Any = config
        for step in path:  # an earlier change may have replaced or removed part of the path
            if isinstance(table, dict):
                table = table.get(step)
            elif isinstance(table, list) and isinstance(step, int) and step < len(table):
                table = table[step]
            else:
                table = None
        if not isinstance(table, dict):
            continue
        present = st.sampled_from(sorted(table)) if table else st.nothing()
        key = draw(present | st.sampled_from(KNOWN_KEYS) | toml_text)
        if draw(st.booleans()) and key in table:
            del table[key]
        elif draw(st.booleans()):
            table[key] = draw(toml_values)
        else:  # the right type, any value: past the type checks to the bounds
            table[key] = draw(same_type_as(table.get(key)))
        top = path[0] if path else key
        assert isinstance(top, str)
        touched.add(top)
    # An engine is named in [engine] and configured in [engines.<name>]: one concern.
    if touched & {"engine", "engines"}:
        touched |= {"engine", "engines"}
    return config, touched


def dataclass_values(value: Any) -> Iterator[tuple[dataclasses.Field[Any], Any]]:
    """Every field of every dataclass in an accepted config, with its value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            yield field, item
            yield from dataclass_values(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from dataclass_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from dataclass_values(item)


def check_accepted(config: Config) -> None:
    """An accepted config keeps its declared bounds and shows no secret."""
    parts = [config.daemon, config.engine, config.policy, config.cache, config.dead_letters,
             config.http, *(p.options for p in (*config.engines.values(), *config.sources,
                                                *config.sinks))]
    for field, value in dataclass_values(parts):
        low, high = field.metadata.get("min"), field.metadata.get("max")
        if isinstance(value, (int, float)) and (low is not None or high is not None):
            assert not math.isnan(value), f"{field.name} is NaN"
            assert low is None or value >= low, field.name
            assert high is None or value <= high, field.name
    assert SECRET_VALUE not in repr(config.to_plain())
    assert SECRET_VALUE not in repr(config)


def leading_section(message: str) -> str:
    """The top-level key an error message starts with."""
    found = re.match(r"([A-Za-z_]+)(?=[.\[:])", message)
    return found.group(1) if found else ""


def check_refusal(message: str, touched: set[str]) -> None:
    """The error names the key path it is about, under a section that was changed."""
    assert SECRET_VALUE not in message
    if any(message.startswith(f"{key}: unknown key") for key in touched
           if key not in TOP_LEVEL_KEYS):
        return
    assert leading_section(message) in touched, message


@given(mutated=mutated_configs())
@example(mutated=({**BASE, "daemon": {"drain_timeout": math.nan}}, {"daemon"}))  # was accepted
@example(mutated=({**BASE, "engines": {**BASE["engines"], "chatsight": {
    **BASE["engines"]["chatsight"], "ws_url": "ws://[::1"}}}, {"engine", "engines"}))
@example(mutated=({**BASE, "engines": {**BASE["engines"], "chatsight": {
    "api_key_file": "@nul"}}}, {"engine", "engines"}))
@example(mutated=({**BASE, "engines": {**BASE["engines"], "chatsight": {
    "api_key_file": "@latin1"}}}, {"engine", "engines"}))
@example(mutated=({**BASE, "engines": {**BASE["engines"], "chatsight": {
    "api_key_file": "@good"}}}, {"engine", "engines"}))
def test_any_config_table_is_a_config_or_a_config_error_naming_the_key(
    mutated: tuple[dict[str, Any], set[str]], secret_files: Path
) -> None:
    tables, touched = mutated
    try:
        config = parse_config(resolve_files(tables, secret_files), REGISTRY)
    except ConfigError as exc:
        event("refused")
        check_refusal(str(exc), touched)
        return
    event("accepted")
    check_accepted(config)


def test_the_base_config_is_valid_and_all_its_plugins_are_configured() -> None:
    config = parse_config(BASE, REGISTRY)
    assert [p.plugin_type for p in config.sources] == [t["type"] for t in BASE["sources"]]
    assert [p.plugin_type for p in config.sinks] == [t["type"] for t in BASE["sinks"]]
    assert sorted(config.engines) == sorted(BASE["engines"])
    assert tomllib.loads(to_toml(BASE)) == BASE


def toml_string(text: str) -> str:
    escaped = "".join(
        "\\" + ch if ch in '"\\' else f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F
        else ch for ch in text)
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    """``value`` as TOML (inline tables and arrays); enough for these tests, not general."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(type(value))


def to_toml(tables: dict[str, Any]) -> str:
    return "".join(f"{toml_string(key)} = {toml_value(value)}\n" for key, value in tables.items())


def load_text(path: Path, data: bytes) -> None:
    """Write ``data`` as a config file and load it: a config, or a ConfigError that starts
    with the file's path and shows no secret."""
    path.write_bytes(data)
    try:
        config = load_config(path, REGISTRY)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        assert SECRET_VALUE not in message
        return
    check_accepted(config)


@given(mutated=mutated_configs())
def test_any_config_file_is_a_config_or_a_config_error(
    mutated: tuple[dict[str, Any], set[str]], secret_files: Path
) -> None:
    tables, touched = mutated
    path = secret_files / "config.toml"
    path.write_text(to_toml(resolve_files(tables, secret_files)), encoding="utf-8")
    try:
        config = load_config(path, REGISTRY)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        check_refusal(message.removeprefix(f"{path}: "), touched)
        return
    check_accepted(config)


EXAMPLE_BYTES = EXAMPLE_CONFIG.read_bytes()
edits = st.lists(st.tuples(st.integers(min_value=0, max_value=len(EXAMPLE_BYTES)),
                           st.integers(min_value=0, max_value=8), st.binary(max_size=8)),
                 min_size=1, max_size=6)


@given(changes=edits)
@example(changes=[(0, 0, b"a = " + b"[" * 5000)])  # nested past the recursion limit
@example(changes=[(0, 0, b"\xff")])
@example(changes=[(0, 0, b"x = nan\n")])
def test_an_edited_example_config_is_a_config_or_a_config_error(
    changes: list[tuple[int, int, bytes]], secret_files: Path
) -> None:
    data = bytearray(EXAMPLE_BYTES)
    for position, removed, inserted in changes:
        at = min(position, len(data))
        data[at:at + removed] = inserted
    load_text(secret_files / "example.toml", bytes(data))


@given(text=st.text() | st.binary().map(lambda b: b.decode("latin-1")))
@example(text="[daemon]\ndrain_timeout = nan\n[[sources]]\ntype = 'stdin'\n[[sinks]]\ntype = 'log'\n")
@example(text="a = " + "{b = " * 3000)
def test_any_config_text_is_a_config_or_a_config_error(text: str, secret_files: Path) -> None:
    load_text(secret_files / "any.toml", text.encode("utf-8", "surrogatepass"))


def with_engine_table(**chatsight: Any) -> dict[str, Any]:
    return {**BASE, "engines": {**BASE["engines"], "chatsight": chatsight}}


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ({**BASE, "daemon": {"drain_timeout": math.nan}},
         r"daemon\.drain_timeout: expected a number >= 0, found nan$"),
        ({**BASE, "engine": {**BASE["engine"], "timeout": math.nan}},
         r"engine\.timeout: expected a number >= 0\.001, found nan$"),
        (with_engine_table(api_key_env=SECRET_ENV, ws_url="ws://[::1"),
         r"engines\.chatsight: Invalid IPv6 URL$"),
        (with_engine_table(api_key_file="@nul"),
         r"engines\.chatsight\.api_key_file: expected a file path, found '/.*good\\x00'$"),
        (with_engine_table(api_key_file="@latin1"),
         r"engines\.chatsight\.api_key_file: /.*latin1 is not UTF-8 text$"),
    ],
)
def test_refusals_found_by_fuzzing_name_the_key(
    tables: dict[str, Any], expected: str, secret_files: Path
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(resolve_files(tables, secret_files), REGISTRY)
    assert re.match(expected, str(refused.value)), str(refused.value)
    assert SECRET_VALUE not in str(refused.value)


def test_a_file_nested_too_deeply_is_a_config_error(secret_files: Path) -> None:
    path = secret_files / "deep.toml"
    path.write_text("a = " + "[" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path, REGISTRY)
