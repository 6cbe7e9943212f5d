"""The daemon's configuration: reading the TOML file and validating every table.

Top-level tables: ``[daemon]``, ``[engine]``, ``[engines.<name>]``, ``[policy]``,
``[[sources]]``, ``[[sinks]]``. Plugin tables are validated by the plugin's own ``Config``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from chatmod.config.problems import Problems, parsed, placed
from chatmod.config.registry import PluginInfo, Registry
from chatmod.config.schema import (
    describe,
    did_you_mean,
    join_path,
    parse_table,
    to_plain,
)
from chatmod.config.sections import (
    TERMINAL_FALLBACKS,
    CacheSection,
    DaemonSection,
    DeadLettersSection,
    EngineSection,
    HttpSection,
    LogLevel,
    PolicySection,
    ReviewSection,
    StateSection,
)
from chatmod.config.state import state_directory
from chatmod.core.interfaces import Engine, Plugin, Sink, Source
from chatmod.errors import ConfigError, PluginError

# Where `chatmod run` and `check-config` look without -c (the systemd unit's path too).
DEFAULT_CONFIG_PATH = "/etc/chatmod/chatmod.toml"
CONFIG_ENV = "CHATMOD_CONFIG"


PluginT = TypeVar("PluginT", bound=Plugin[Any])


@dataclass(frozen=True)
class PluginConfig(Generic[PluginT]):
    """One configured instance of a plugin: its class (checked against its kind's base class
    when the config was loaded) and its options (an instance of the class's ``Config``)."""

    kind: str
    name: str
    plugin_type: str
    cls: type[PluginT] = field(repr=False)
    options: object  # an instance of cls.Config

    def build(self) -> PluginT:
        """A new, not yet running, instance of the plugin."""
        return self.cls(self.name, self.options)


SourceConfig = PluginConfig[Source[Any]]
SinkConfig = PluginConfig[Sink[Any]]
EngineConfig = PluginConfig[Engine[Any]]


@runtime_checkable
class StateDirOption(Protocol):
    """A plugin config (a dataclass) with a ``state_dir`` option: left empty, it is
    ``[daemon] state_dir``."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    state_dir: str


@dataclass(frozen=True)
class Config:
    daemon: DaemonSection
    engine: EngineSection
    policy: PolicySection
    cache: CacheSection
    dead_letters: DeadLettersSection
    http: HttpSection
    engines: dict[str, EngineConfig]
    sources: list[SourceConfig]
    sinks: list[SinkConfig]
    origin: str = "<config>"
    # `run --log-level`: wins over [daemon] log_level, also after a reload.
    log_level_override: LogLevel | None = None
    state: StateSection = field(default_factory=StateSection)
    review: ReviewSection = field(default_factory=ReviewSection)

    def engine_chain(self) -> list[str]:
        """Engine names in the order they are asked: primary, then fallback engines."""
        return [self.engine.primary] + [
            name for name in self.engine.fallback if name not in TERMINAL_FALLBACKS
        ]

    def to_plain(self) -> dict[str, Any]:
        """The resolved config as plain data, secrets masked (for ``check-config``)."""
        def plugin(p: PluginConfig[Any]) -> dict[str, Any]:
            return {"name": p.name, "type": p.plugin_type, **to_plain(p.options)}

        return {
            "daemon": to_plain(self.daemon),
            "engine": to_plain(self.engine),
            "engines": {name: plugin(p) for name, p in self.engines.items()},
            "policy": to_plain(self.policy),
            "cache": to_plain(self.cache),
            "dead_letters": to_plain(self.dead_letters),
            "http": to_plain(self.http),
            "state": to_plain(self.state),
            "review": to_plain(self.review),
            "sources": [plugin(p) for p in self.sources],
            "sinks": [plugin(p) for p in self.sinks],
        }


TOP_LEVEL_KEYS = ("daemon", "engine", "engines", "policy", "cache", "dead_letters", "http",
                  "sources", "sinks", "state", "review")


def choose_config_path(given: str | None) -> tuple[Path, str]:
    """The config file to read and why: ``-c FILE``, else ``$CHATMOD_CONFIG``, else
    ``/etc/chatmod/chatmod.toml``. A file chosen by default that does not exist is a
    :class:`ConfigError` saying where it looked and how to choose another."""
    if given is not None:
        return Path(given), "-c"
    from_env = os.environ.get(CONFIG_ENV, "").strip()
    path, chosen_by = (Path(from_env), f"${CONFIG_ENV}") if from_env else (
        Path(DEFAULT_CONFIG_PATH), "the default")
    if not path.exists():
        raise ConfigError.at(str(path), f"no config file there ({chosen_by}); give -c FILE "
                                        f"or set {CONFIG_ENV}")
    return path, chosen_by


def read_config_tables(path: str | Path) -> dict[str, Any]:
    """A config file's TOML, not yet validated; :class:`ConfigError` when it can't be read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config is not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None


def load_config(path: str | Path, registry: Registry | None = None, *,
                log_level: LogLevel | None = None) -> Config:
    """Read and validate a config file; :class:`ConfigError` lists every problem, each naming
    the key, the value found and what was expected. ``log_level`` (``run --log-level``)
    overrides ``[daemon] log_level``, and is kept across reloads."""
    path = Path(path)
    data = read_config_tables(path)
    try:
        config = parse_config(data, registry or Registry.from_entry_points(), origin=str(path))
    except ConfigError as exc:
        raise exc.located(str(path)) from None
    if log_level is None:
        return config
    return replace(config, daemon=replace(config.daemon, log_level=log_level),
                   log_level_override=log_level)


def parse_config(data: Mapping[str, Any], registry: Registry, origin: str = "<config>") -> Config:
    """Validate a config's tables; every problem found is reported in one :class:`ConfigError`."""
    problems = Problems()
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            problems.add(key, f"unknown key{did_you_mean(key, TOP_LEVEL_KEYS)}")
    daemon = problems.check(parse_table, DaemonSection, data.get("daemon", {}), "daemon")
    engine = problems.check(parse_table, EngineSection, data.get("engine", {}), "engine")
    policy = problems.check(parse_table, PolicySection, data.get("policy", {}), "policy")
    cache = problems.check(parse_table, CacheSection, data.get("cache", {}), "cache")
    dead_letters = problems.check(parse_table, DeadLettersSection, data.get("dead_letters", {}),
                                  "dead_letters")
    http = problems.check(parse_table, HttpSection, data.get("http", {}), "http")
    state = problems.check(parse_table, StateSection, data.get("state", {}), "state")
    review = problems.check(parse_table, ReviewSection, data.get("review", {}), "review")
    engines = _engines(data, engine, registry, problems)
    sources = _plugin_list(PluginInfo.load_source, "source", "sources", data, registry,
                           problems)
    sinks = _plugin_list(PluginInfo.load_sink, "sink", "sinks", data, registry, problems)
    if daemon is not None:
        _check_state_dir_users(daemon, state, review, problems)
    problems.raise_if_any()
    state_dir = parsed(daemon).state_dir
    if state_dir:
        sources = [_inherit_state_dir(spec, state_dir) for spec in sources]
        sinks = [_inherit_state_dir(spec, state_dir) for spec in sinks]
    return Config(parsed(daemon), parsed(engine), parsed(policy), parsed(cache),
                  parsed(dead_letters), parsed(http), engines, sources, sinks, origin,
                  state=parsed(state),
                  review=parsed(review))


def _check_state_dir_users(daemon: DaemonSection, state: StateSection | None,
                           review: ReviewSection | None, problems: Problems) -> None:
    """What keeps its state in files needs a state directory: said by ``check-config`` as by
    ``run`` (``$STATE_DIRECTORY``, which systemd sets, counts)."""
    if state_directory(daemon.state_dir) is not None:
        return
    where = "set [daemon] state_dir (or $STATE_DIRECTORY)"
    if review is not None and review.enabled and review.backend == "sqlite":
        problems.add("review.backend", f"sqlite needs a state directory: {where}, or use redis")
    if state is not None and state.control:
        problems.add("state.control", f"live control needs a state directory (its socket "
                                      f"and token live there): {where}")
    if state is not None and state.backend == "sqlite":
        problems.add("state.backend", f"sqlite needs a state directory: {where}, or use "
                                      f"memory or redis")


def _engines(data: Mapping[str, Any], engine: EngineSection | None, registry: Registry,
             problems: Problems) -> dict[str, EngineConfig]:
    """Every ``[engines.<name>]`` table, and the engines ``[engine]`` names without one."""
    engine_tables = data.get("engines", {})
    if not isinstance(engine_tables, Mapping):
        problems.add("engines", f"expected a table, found {describe(engine_tables)}")
        engine_tables = {}
    in_use = [engine.primary, *engine.fallback] if engine is not None else []
    if engine is not None:
        _check_chain(engine, problems)
    engines: dict[str, EngineConfig] = {}
    for name, table in engine_tables.items():
        spec = problems.check(
            _plugin_config, PluginInfo.load_engine, "engine", registry, table,
            join_path("engines", name),
            default_type=name, name=name, resolve_secrets=name in in_use,
        )
        if spec is not None:
            engines[name] = spec
    installed = registry.names("engine")
    for i, name in enumerate(in_use):
        if name in TERMINAL_FALLBACKS or name in engine_tables:
            continue
        where = "engine.primary" if i == 0 else f"engine.fallback[{i - 1}]"
        if name not in installed:
            known = [*engine_tables, *installed, *(TERMINAL_FALLBACKS if i else ())]
            problems.add(where, f"no engine named {name!r}{did_you_mean(name, known)}; "
                                f"expected an [engines.<name>] table's name or an installed "
                                f"engine ({', '.join(installed) or 'none'})"
                                + (", or 'pass' or 'flag' last" if i else ""))
            continue
        spec = problems.check(_plugin_config, PluginInfo.load_engine, "engine", registry, {},
                              where, default_type=name, name=name)
        if spec is not None:
            engines[name] = spec
    return engines


def _check_chain(engine: EngineSection, problems: Problems) -> None:
    """The order of ``[engine]``'s names: a terminal answer last, nothing named twice."""
    in_use = [engine.primary, *engine.fallback]
    for i, name in enumerate(engine.fallback):
        if name in TERMINAL_FALLBACKS and i != len(engine.fallback) - 1:
            problems.add(f"engine.fallback[{i}]", f"{name!r} always answers, so it must come last")
    if engine.primary in TERMINAL_FALLBACKS:
        problems.add("engine.primary", f"expected an engine name, found {engine.primary!r} "
                                       "('pass' and 'flag' are for engine.fallback)")
    if len(set(in_use)) != len(in_use):
        problems.add("engine.fallback", f"an engine is named twice in {in_use}")


def _inherit_state_dir(spec: PluginConfig[PluginT], state_dir: str) -> PluginConfig[PluginT]:
    """A plugin with a ``state_dir`` option left empty uses ``[daemon] state_dir``."""
    options = spec.options
    if not isinstance(options, StateDirOption) or options.state_dir != "":
        return spec
    return replace(spec, options=replace(options, state_dir=state_dir))


def _plugin_list(
    load: Callable[[PluginInfo], type[PluginT]], kind: str, key: str,
    data: Mapping[str, Any], registry: Registry, problems: Problems,
) -> list[PluginConfig[PluginT]]:
    tables = data.get(key, [])
    if not isinstance(tables, list):
        problems.add(key, f"expected an array of tables ([[{key}]]), found {describe(tables)}")
        return []
    if not tables:
        problems.add(key, f"at least one [[{key}]] table is needed")
    configs: list[PluginConfig[PluginT]] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        path = join_path(key, i)
        if not isinstance(table, Mapping):
            problems.add(path, f"expected a table, found {describe(table)}")
            continue
        if "type" not in table:
            problems.add(f"{path}.type", "required key is missing; installed: "
                                         f"{', '.join(registry.names(kind))}")
            continue
        config = problems.check(_plugin_config, load, kind, registry, table, path)
        if config is None:
            continue
        if config.name in seen:
            problems.add(f"{path}.name", f"{config.name!r} is already the name of "
                                         f"{key}[{seen[config.name]}]; give each a unique name")
            continue
        seen[config.name] = i
        configs.append(config)
    return configs


def _plugin_config(
    load: Callable[[PluginInfo], type[PluginT]],
    kind: str,
    registry: Registry,
    table: Mapping[str, Any],
    path: str,
    *,
    default_type: str | None = None,
    name: str | None = None,
    resolve_secrets: bool = True,
) -> PluginConfig[PluginT]:
    """The plugin ``table`` configures, its class loaded with ``load`` (which checks its
    kind) and its options validated by the class's ``Config``."""
    if not isinstance(table, Mapping):
        raise ConfigError.at(path, f"expected a table, found {describe(table)}")
    plugin_type = table.get("type", default_type)
    if not isinstance(plugin_type, str):
        raise ConfigError.at(f"{path}.type",
                             f"expected a plugin name, found {describe(plugin_type)}")
    type_path = f"{path}.type" if "type" in table else path
    try:
        cls = load(registry.get(kind, plugin_type, type_path))
    except PluginError as exc:
        raise PluginError(problems=[placed(type_path, p) for p in exc.problems]) from None
    problems = Problems()
    ignored = frozenset({"type"}) if name is not None else frozenset({"type", "name"})
    if name is None:
        name = table.get("name", plugin_type)
        if not isinstance(name, str) or not name:
            problems.add(f"{path}.name", f"expected a non-empty string, found {describe(name)}")
    options = problems.check(parse_table, cls.Config, table, path,
                             resolve_secrets=resolve_secrets, ignore=ignored)
    if resolve_secrets:
        try:
            cls.check_available()
        except PluginError as exc:
            problems.errors.append(
                PluginError(problems=[placed(type_path, p) for p in exc.problems]))
    problems.raise_if_any()
    return PluginConfig(kind, str(name), plugin_type, cls, options)
