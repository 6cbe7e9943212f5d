from __future__ import annotations

import pytest

from chatmod.config.registry import PluginInfo, Registry
from chatmod.errors import PluginError


def test_builtins_are_registered_through_entry_points() -> None:
    registry = Registry.from_entry_points()
    assert {"stdin"} <= set(registry.names("source"))
    assert {"jsonl", "log"} <= set(registry.names("sink"))
    assert {"local", "wordlist"} <= set(registry.names("engine"))
    info = registry.get("sink", "jsonl", "sinks[0].type")
    assert info.distribution.startswith("chatmod ")
    assert info.load().__name__ == "JsonlSink"


def test_two_plugins_with_one_name_is_an_error() -> None:
    with pytest.raises(PluginError, match=(
        r"two sink plugins are named 'jsonl': chatmod.plugins.jsonl_sink:JsonlSink from "
        r"chatmod 0.1 and other.mod:Sink from other-dist 2.0; uninstall one of them"
    )):
        Registry([
            PluginInfo("sink", "jsonl", "chatmod.plugins.jsonl_sink:JsonlSink", "chatmod 0.1"),
            PluginInfo("sink", "jsonl", "other.mod:Sink", "other-dist 2.0"),
        ])


def test_same_plugin_seen_twice_is_not_a_conflict() -> None:
    info = PluginInfo("sink", "jsonl", "chatmod.plugins.jsonl_sink:JsonlSink", "chatmod 0.1")
    assert Registry([info, info]).names("sink") == ["jsonl"]


def test_broken_or_wrong_plugins_fail_clearly() -> None:
    broken = PluginInfo("engine", "broken", "no.such.module:Engine", "broken-dist 1")
    with pytest.raises(PluginError, match=r"'broken' .* cannot be loaded: ModuleNotFoundError"):
        broken.load()
    wrong = PluginInfo("engine", "wrong", "chatmod.plugins.jsonl_sink:JsonlSink", "x")
    with pytest.raises(PluginError, match=r"is not a chatmod\.core\.interfaces\.Engine subclass"):
        wrong.load()
