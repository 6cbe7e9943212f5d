"""A reload changes the pipeline through its methods (replace_policy, replace_dead_letters,
reconfigure_cache), never by setting its fields."""

from __future__ import annotations

import tomllib
from pathlib import Path

from chatmod.config.load import Config, parse_config
from chatmod.config.registry import Registry
from chatmod.runtime.service import apply_config, build_pipeline

REGISTRY = Registry.from_entry_points()


def config(*, cache: str, shadow: bool, dead_letters: Path) -> Config:
    text = f"""
[engine]
primary = "wordlist"
[policy]
shadow = {str(shadow).lower()}
[cache]
{cache}
[dead_letters]
path = "{dead_letters}"
[[sources]]
type = "stdin"
[[sinks]]
type = "jsonl"
path = "-"
"""
    return parse_config(tomllib.loads(text), REGISTRY)


def test_policy_dead_letters_and_cache_change_in_place(tmp_path: Path) -> None:
    first, second = tmp_path / "dead.jsonl", tmp_path / "other.jsonl"
    old = config(cache="enabled = false", shadow=False, dead_letters=first)
    new = config(cache="enabled = true\nttl = 60.0\nsize = 5", shadow=True, dead_letters=second)
    pipeline = build_pipeline(old)
    policy, dead_letters = pipeline.policy, pipeline.dead_letters
    assert pipeline.chain.cache is None
    assert apply_config(pipeline, old, new) == ["policy", "dead letters", "cache"]
    assert pipeline.policy is not policy
    assert pipeline.dead_letters is not None
    assert pipeline.dead_letters is not dead_letters
    cache = pipeline.chain.cache
    assert cache is not None
    assert (cache.size, cache.ttl) == (5, 60.0)
    # Turned off again: the same cache object stays (requests may be waiting on it).
    off = config(cache="enabled = false", shadow=True, dead_letters=second)
    assert apply_config(pipeline, new, off) == ["cache"]
    assert pipeline.chain.cache is cache
    assert cache.ttl == 0.0
