"""The daemon's configuration: reading the TOML file and validating every table.

Top-level tables: ``[daemon]``, ``[engine]``, ``[engines.<name>]``, ``[policy]``,
``[[sources]]``, ``[[sinks]]``. Plugin tables are validated by the plugin's own ``Config``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chatmod.config.registry import Registry
from chatmod.config.schema import describe, did_you_mean, join_path, parse_table, to_plain
from chatmod.config.sections import (
    TERMINAL_FALLBACKS,
    CacheSection,
    DaemonSection,
    DeadLettersSection,
    EngineSection,
    HttpSection,
    PolicySection,
)
from chatmod.core.interfaces import Plugin
from chatmod.errors import ConfigError, PluginError


@dataclass(frozen=True)
class PluginConfig:
    """One configured instance of a plugin."""

    kind: str
    name: str
    plugin_type: str
    cls: type[Plugin] = field(repr=False)
    options: Any

    def build(self) -> Plugin:
        return self.cls(self.name, self.options)


@dataclass(frozen=True)
class Config:
    daemon: DaemonSection
    engine: EngineSection
    policy: PolicySection
    cache: CacheSection
    dead_letters: DeadLettersSection
    http: HttpSection
    engines: dict[str, PluginConfig]
    sources: list[PluginConfig]
    sinks: list[PluginConfig]
    origin: str = "<config>"

    def engine_chain(self) -> list[str]:
        """Engine names in the order they are asked: primary, then fallback engines."""
        return [self.engine.primary] + [
            name for name in self.engine.fallback if name not in TERMINAL_FALLBACKS
        ]

    def to_plain(self) -> dict[str, Any]:
        """The resolved config as plain data, secrets masked (for ``check-config``)."""
        def plugin(p: PluginConfig) -> dict[str, Any]:
            return {"name": p.name, "type": p.plugin_type, **to_plain(p.options)}

        return {
            "daemon": to_plain(self.daemon),
            "engine": to_plain(self.engine),
            "engines": {name: plugin(p) for name, p in self.engines.items()},
            "policy": to_plain(self.policy),
            "cache": to_plain(self.cache),
            "dead_letters": to_plain(self.dead_letters),
            "http": to_plain(self.http),
            "sources": [plugin(p) for p in self.sources],
            "sinks": [plugin(p) for p in self.sinks],
        }


TOP_LEVEL_KEYS = ("daemon", "engine", "engines", "policy", "cache", "dead_letters", "http",
                  "sources", "sinks")


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


def load_config(path: str | Path, registry: Registry | None = None) -> Config:
    """Read and validate a config file; :class:`ConfigError` says what is wrong and where."""
    path = Path(path)
    data = read_config_tables(path)
    try:
        return parse_config(data, registry or Registry.from_entry_points(), origin=str(path))
    except ConfigError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def parse_config(data: Mapping[str, Any], registry: Registry, origin: str = "<config>") -> Config:
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{key}: unknown key{did_you_mean(key, TOP_LEVEL_KEYS)}")
    daemon = parse_table(DaemonSection, data.get("daemon", {}), "daemon")
    engine = parse_table(EngineSection, data.get("engine", {}), "engine")
    policy = parse_table(PolicySection, data.get("policy", {}), "policy")
    cache = parse_table(CacheSection, data.get("cache", {}), "cache")
    dead_letters = parse_table(DeadLettersSection, data.get("dead_letters", {}), "dead_letters")
    http = parse_table(HttpSection, data.get("http", {}), "http")

    engine_tables = data.get("engines", {})
    if not isinstance(engine_tables, Mapping):
        raise ConfigError(f"engines: expected a table, found {describe(engine_tables)}")
    in_use = [engine.primary, *engine.fallback]
    for i, name in enumerate(engine.fallback):
        if name in TERMINAL_FALLBACKS and i != len(engine.fallback) - 1:
            raise ConfigError(
                f"engine.fallback[{i}]: {name!r} always answers, so it must come last"
            )
    if engine.primary in TERMINAL_FALLBACKS:
        raise ConfigError(
            f"engine.primary: expected an engine name, found {engine.primary!r} "
            "('pass' and 'flag' are for engine.fallback)"
        )
    if len(set(in_use)) != len(in_use):
        raise ConfigError(f"engine.fallback: an engine is named twice in {in_use}")

    engines: dict[str, PluginConfig] = {}
    for name, table in engine_tables.items():
        engines[name] = _plugin_config(
            "engine", registry, table, join_path("engines", name), default_type=name,
            name=name, resolve_secrets=name in in_use,
        )
    for i, name in enumerate(in_use):
        if name in TERMINAL_FALLBACKS or name in engines:
            continue
        where = "engine.primary" if i == 0 else f"engine.fallback[{i - 1}]"
        engines[name] = _plugin_config("engine", registry, {}, where, default_type=name, name=name)

    sources = _plugin_list("source", "sources", data, registry)
    sinks = _plugin_list("sink", "sinks", data, registry)
    if daemon.state_dir:
        sources = [_inherit_state_dir(spec, daemon.state_dir) for spec in sources]
        sinks = [_inherit_state_dir(spec, daemon.state_dir) for spec in sinks]
    if not sources:
        raise ConfigError("sources: at least one [[sources]] table is needed")
    if not sinks:
        raise ConfigError("sinks: at least one [[sinks]] table is needed")
    return Config(daemon, engine, policy, cache, dead_letters, http, engines, sources, sinks,
                  origin)


def _inherit_state_dir(spec: PluginConfig, state_dir: str) -> PluginConfig:
    """A plugin with a ``state_dir`` option left empty uses ``[daemon] state_dir``."""
    if getattr(spec.options, "state_dir", None) != "":
        return spec
    return replace(spec, options=replace(spec.options, state_dir=state_dir))


def _plugin_list(
    kind: str, key: str, data: Mapping[str, Any], registry: Registry
) -> list[PluginConfig]:
    tables = data.get(key, [])
    if not isinstance(tables, list):
        raise ConfigError(f"{key}: expected an array of tables ([[{key}]]), "
                          f"found {describe(tables)}")
    configs: list[PluginConfig] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(tables):
        path = join_path(key, i)
        if not isinstance(table, Mapping):
            raise ConfigError(f"{path}: expected a table, found {describe(table)}")
        if "type" not in table:
            raise ConfigError(
                f"{path}.type: required key is missing; installed: "
                f"{', '.join(registry.names(kind))}"
            )
        config = _plugin_config(kind, registry, table, path)
        if config.name in seen:
            raise ConfigError(
                f"{path}.name: {config.name!r} is already the name of {key}[{seen[config.name]}]; "
                "give each a unique name"
            )
        seen[config.name] = i
        configs.append(config)
    return configs


def _plugin_config(
    kind: str,
    registry: Registry,
    table: Mapping[str, Any],
    path: str,
    *,
    default_type: str | None = None,
    name: str | None = None,
    resolve_secrets: bool = True,
) -> PluginConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: expected a table, found {describe(table)}")
    plugin_type = table.get("type", default_type)
    if not isinstance(plugin_type, str):
        raise ConfigError(f"{path}.type: expected a plugin name, found {describe(plugin_type)}")
    type_path = f"{path}.type" if "type" in table else path
    cls = registry.get(kind, plugin_type, type_path).load()
    ignored = frozenset({"type"}) if name is not None else frozenset({"type", "name"})
    if name is None:
        name = table.get("name", plugin_type)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}.name: expected a non-empty string, found {describe(name)}")
    options = parse_table(
        cls.Config, table, path, resolve_secrets=resolve_secrets,
        ignore=ignored,
    )
    check = getattr(cls, "check_available", None)
    if resolve_secrets and check is not None:
        try:
            check()
        except PluginError as exc:
            raise PluginError(f"{type_path}: {exc}") from None
    return PluginConfig(kind, name, plugin_type, cls, options)
