"""Plugins found through entry points.

Groups: ``chatmod.sources``, ``chatmod.sinks``, ``chatmod.engines``. The built-ins are
registered the same way in chatmod's own ``pyproject.toml``, so a plugin is found only if its
distribution is installed. Two distributions providing one name in one group is an error: we
never pick one silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from chatmod.config.schema import did_you_mean
from chatmod.core.interfaces import Engine, Plugin, Sink, Source
from chatmod.errors import PluginError

GROUPS: dict[str, tuple[str, type[Plugin]]] = {
    "source": ("chatmod.sources", Source),
    "sink": ("chatmod.sinks", Sink),
    "engine": ("chatmod.engines", Engine),
}


@dataclass(frozen=True)
class PluginInfo:
    """One installed plugin, before it is imported."""

    kind: str
    name: str
    value: str  # "module:attribute"
    distribution: str  # "name version", or "?" when unknown

    def load(self) -> type[Plugin]:
        group, base = GROUPS[self.kind]
        try:
            loaded: Any = EntryPoint(self.name, self.value, group).load()
        except Exception as exc:
            raise PluginError(
                f"{self.kind} plugin {self.name!r} ({self.value}, from {self.distribution}) "
                f"cannot be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        if not (isinstance(loaded, type) and issubclass(loaded, base)):
            raise PluginError(
                f"{self.kind} plugin {self.name!r} ({self.value}) is not a "
                f"chatmod.core.interfaces.{base.__name__} subclass"
            )
        return loaded


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
        for kind, (group, _base) in GROUPS.items():
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
