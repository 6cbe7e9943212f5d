"""Plugins found through entry points.

Groups: ``chatmod.sources``, ``chatmod.sinks``, ``chatmod.engines``. The built-ins are
registered the same way in chatmod's own ``pyproject.toml``, so a plugin is found only if its
distribution is installed. Two distributions providing one name in one group is an error: we
never pick one silently. An entry point is imported only when a config uses it, and its object
is checked once then against its kind's base class (:meth:`PluginInfo.load_source`,
``load_sink``, ``load_engine``), so what the config builds is typed without a cast.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, is_dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from chatmod.config.schema import did_you_mean
from chatmod.core.interfaces import Engine, Plugin, Sink, Source
from chatmod.errors import PluginError

PluginT = TypeVar("PluginT", bound=Plugin[Any])

GROUPS: dict[str, str] = {
    "source": "chatmod.sources",
    "sink": "chatmod.sinks",
    "engine": "chatmod.engines",
}


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin, before it is imported."""

    kind: str
    name: str
    value: str  # "module:attribute"
    distribution: str  # "name version", or "?" when unknown

    def load(self) -> type[Plugin[Any]]:
        """The plugin class, checked against the base class of its kind."""
        if self.kind == "source":
            return self.load_source()
        if self.kind == "sink":
            return self.load_sink()
        return self.load_engine()

    def load_source(self) -> type[Source[Any]]:
        loaded = self._import()
        if issubclass(loaded, Source):
            return self._with_config(loaded)
        raise self._not_a("Source")

    def load_sink(self) -> type[Sink[Any]]:
        loaded = self._import()
        if issubclass(loaded, Sink):
            return self._with_config(loaded)
        raise self._not_a("Sink")

    def load_engine(self) -> type[Engine[Any]]:
        loaded = self._import()
        if issubclass(loaded, Engine):
            return self._with_config(loaded)
        raise self._not_a("Engine")

    def _import(self) -> type:
        """The entry point's object; a :class:`PluginError` naming it unless it is a class."""
        try:
            loaded: object = EntryPoint(self.name, self.value, GROUPS[self.kind]).load()
        except Exception as exc:
            raise PluginError(
                f"{self.kind} plugin {self.name!r} ({self.value}, from {self.distribution}) "
                f"cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(loaded, type):
            raise PluginError(
                f"{self.kind} plugin {self.name!r} ({self.value}, from {self.distribution}) "
                f"is a {type(loaded).__name__}, not a class")
        return loaded

    def _with_config(self, cls: type[PluginT]) -> type[PluginT]:
        """``cls``, once its ``Config`` is known to be a dataclass (what tables are read into)."""
        config = cls.Config
        if not (isinstance(config, type) and is_dataclass(config)):
            raise PluginError(
                f"{self.kind} plugin {self.name!r} ({self.value}, from {self.distribution}): "
                f"its Config ({config!r}) is not a dataclass")
        return cls

    def _not_a(self, base: str) -> PluginError:
        return PluginError(
            f"{self.kind} plugin {self.name!r} ({self.value}, from {self.distribution}) is "
            f"not a chatmod.core.interfaces.{base} subclass"
        )


class Registry:
    """The installed plugins of each kind, by name."""

    def __init__(self, plugins: Iterable[PluginInfo]) -> None:
        self._plugins: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in GROUPS}
        for info in plugins:
            known = self._plugins[info.kind].get(info.name)
            if known is not None and known != info:
                raise PluginError(
                    f"two {info.kind} plugins are named {info.name!r}: {known.value} from "
                    f"{known.distribution} and {info.value} from {info.distribution}; "
                    "uninstall one of them"
                )
            self._plugins[info.kind][info.name] = info

    @classmethod
    def from_entry_points(cls) -> Registry:
        found: list[PluginInfo] = []
        for kind, group in GROUPS.items():
            for ep in entry_points(group=group):
                dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "?"
                found.append(PluginInfo(kind, ep.name, ep.value, dist))
        return cls(found)

    def names(self, kind: str) -> list[str]:
        return sorted(self._plugins[kind])

    def all(self) -> list[PluginInfo]:
        return [info for kind in GROUPS for info in sorted(
            self._plugins[kind].values(), key=lambda i: i.name)]

    def get(self, kind: str, name: str, where: str) -> PluginInfo:
        """The plugin ``name`` of ``kind``; ``where`` is the config key that asked for it."""
        try:
            return self._plugins[kind][name]
        except KeyError:
            names = self.names(kind)
            raise PluginError(
                f"{where}: no {kind} plugin named {name!r}{did_you_mean(name, names)}; "
                f"installed: {', '.join(names) or 'none'}"
            ) from None
