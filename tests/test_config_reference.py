"""``chatmod config reference``: the README's configuration reference is the schema's."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from chatmod.config.reference import (
    BEGIN_MARKER,
    CORE_SECTIONS,
    END_MARKER,
    reference_markdown,
    splice,
)
from chatmod.config.registry import Registry
from chatmod.config.schema import is_secret_type

from .helpers import REPO, run_chatmod


def builtin_registry() -> Registry:
    """chatmod's own plugins: the README documents these, not whatever else is installed."""
    return Registry([info for info in Registry.from_entry_points().all()
                     if info.value.startswith("chatmod.plugins.")])


@pytest.fixture(scope="module")
def reference() -> str:
    return reference_markdown(builtin_registry())


def test_the_readme_reference_is_current(reference: str) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert splice(readme, reference) == readme, (
        "the README's configuration reference is stale: run "
        "`chatmod config reference --update README.md`")


def all_sections() -> list[tuple[str, type[Any]]]:
    sections = list(CORE_SECTIONS)
    for info in builtin_registry().all():
        sections.append((f"{info.kind} {info.name}", info.load().Config))
    nested: list[tuple[str, type[Any]]] = []
    for title, cls in sections:
        for field in dataclasses.fields(cls):
            for arg in typing.get_args(typing.get_type_hints(cls)[field.name]):
                if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                    nested.append((f"{title} {field.name}", arg))
    return sections + nested


@pytest.mark.parametrize(("title", "cls"), all_sections(), ids=lambda v: str(v))
def test_every_key_has_help_and_the_reference_shows_it(title: str, cls: type[Any],
                                                        reference: str) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        help_text = field.metadata.get("help", "")
        assert help_text, f"{title}: {field.name} has no help"
        key = f"`{field.name}_env`" if is_secret_type(hints[field.name]) else f"`{field.name}`"
        rows = [line for line in reference.splitlines() if line.startswith(f"| {key} ")]
        assert any(help_text.replace("<", "&lt;").replace("|", "\\|") in row
                   or help_text in row for row in rows), f"{title}: {field.name} not shown"


def test_reference_rows_say_type_default_and_requirement(reference: str) -> None:
    for row in [
        "| `drain_timeout` | number >= 0 | `10.0` | seconds to finish in-flight messages after "
        "SIGTERM/SIGINT |",
        '| `format` | `"text"`, `"jsonl"` | `"text"` |',
        "| `api_key_env` / `api_key_file` | environment variable / file ([secret](#secrets)) "
        "| required | the API key |",
        '| `fallback` | string or array of strings | `["flag"]` |',
        '| `url` | non-empty string | required | where decisions are POSTed |',
        "| `project_id` | integer | none |",
    ]:
        assert row in reference, row
    for heading in ("### `[daemon]`", "### `[engines.<name>]`", "#### `local` engine",
                    "### `[[sources]]`", "#### `redis` source", "#### `webhook` sink",
                    "Each table in `jobs` (`sources.jobs`):",
                    "Each table in `channels` (`policy.channels`):",
                    "Each table in `ladder` (`policy.ladder`):"):
        assert f"\n{heading}\n" in reference, heading
    # A channel's ladder has the keys of [policy] ladder: pointed to, not printed twice.
    assert reference.count("| `steps` |") == 1
    assert ("\nEach table in `ladder` (`policy.channels.<name>.ladder`) takes the keys of "
            "`policy.ladder`.\n") in reference
    assert reference.startswith(BEGIN_MARKER + "\n")
    assert reference.endswith(END_MARKER + "\n")


def test_splice_replaces_only_between_the_markers() -> None:
    new = f"{BEGIN_MARKER}\nnew\n{END_MARKER}\n"
    document = f"# Title\n\nbefore\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\nafter\n"
    assert splice(document, new) == f"# Title\n\nbefore\n\n{new}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        splice("no markers here\n", new)
    with pytest.raises(ValueError, match="markers"):
        splice(f"{END_MARKER}\n{BEGIN_MARKER}\n", new)


def test_config_reference_update_rewrites_a_file(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{BEGIN_MARKER}\nOLD TEXT\n{END_MARKER}\n\nrest\n")
    result = run_chatmod("config", "reference", "--update", str(readme))
    assert result.returncode == 0, result.stderr.decode()
    text = readme.read_text()
    assert text.startswith(f"intro\n\n{BEGIN_MARKER}\n")
    assert "OLD TEXT" not in text
    assert "### `[daemon]`" in text
    assert text.endswith(f"{END_MARKER}\n\nrest\n")
    unmarked = tmp_path / "other.md"
    unmarked.write_text("nothing\n")
    refused = run_chatmod("config", "reference", "--update", str(unmarked))
    assert refused.returncode == 2
    assert "expected the config reference markers" in refused.stderr.decode()
    assert unmarked.read_text() == "nothing\n"
