from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatmod.config.load import load_config, parse_config
from chatmod.config.registry import PluginInfo, Registry
from chatmod.config.schema import Secret, parse_table, setting
from chatmod.core.interfaces import Engine
from chatmod.core.model import Message, Verdict
from chatmod.errors import ConfigError, PluginError

from .helpers import EXAMPLE_CONFIG

BASE = """
[[sources]]
type = "stdin"

[[sinks]]
type = "jsonl"
"""


def parse(text: str) -> object:
    return parse_config(tomllib.loads(text), Registry.from_entry_points())


def test_example_config_is_valid() -> None:
    config = load_config(EXAMPLE_CONFIG)
    assert config.engine.primary == "local"
    assert [s.plugin_type for s in config.sinks] == ["jsonl", "log"]


def test_defaults_fill_in_a_minimal_config() -> None:
    config = parse(BASE)
    assert config.daemon.drain_timeout == 10.0  # type: ignore[attr-defined]
    assert config.engine.fallback == ("flag",)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[daemon]\ndrain_timeot = 3\n", "daemon.drain_timeot: unknown key (did you mean 'drain_timeout'?)"),
        ("[deamon]\n", "deamon: unknown key (did you mean 'daemon'?)"),
        ("[daemon]\ndrain_timeout = 'soon'\n", "daemon.drain_timeout: expected a number >= 0, found 'soon'"),
        ("[daemon]\nconcurrency = 1.5\n", "daemon.concurrency: expected an integer from 1 to 100000, found 1.5"),
        ("[daemon]\nconcurrency = true\n", "daemon.concurrency: expected an integer"),
        ("[daemon]\nlog_level = 'verbose'\n", "daemon.log_level: expected one of 'debug', 'info', 'warning', 'error', found 'verbose'"),
        ("[policy]\nshadow = 'yes'\n", "policy.shadow: expected true or false, found 'yes'"),
        ("[policy]\nexempt_authors = [1]\n", "policy.exempt_authors[0]: expected a string, found 1"),
        ('[policy.channels."#kids"]\nshadw = true\n', 'policy.channels."#kids".shadw: unknown key (did you mean \'shadow\'?)'),
        ("[engine]\nprimary = 'lokal'\n", "engine.primary: no engine plugin named 'lokal' (did you mean 'local'?)"),
        ("[engine]\nfallback = ['pass', 'local']\n", "engine.fallback[0]: 'pass' always answers, so it must come last"),
        ("[engine]\nprimary = 'pass'\n", "engine.primary: expected an engine name"),
        ("[engines.local]\nflag_treshold = 0.2\n", "engines.local.flag_treshold: unknown key (did you mean 'flag_threshold'?)"),
        ("[engines.local]\nflag_threshold = 2\n", "engines.local.flag_threshold: expected a number from 0.0 to 1.0, found 2"),
        ("[engines.local]\nflag_threshold = 0.8\ndelete_threshold = 0.5\n", "engines.local.delete_threshold: expected a number >= flag_threshold"),
    ],
)
def test_errors_name_the_key_the_value_and_what_was_expected(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text + BASE)
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "sources: at least one"),
        ("[[sources]]\ntype = 'stdin'\n", "sinks: at least one"),
        ("[[sources]]\nformat = 'text'\n[[sinks]]\ntype='log'\n", "sources[0].type: required key is missing; installed: "),
        ("[[sources]]\ntype = 'stdn'\n[[sinks]]\ntype='log'\n", "sources[0].type: no source plugin named 'stdn' (did you mean 'stdin'?)"),
        ("[[sources]]\ntype = 'stdin'\nformt = 'jsonl'\n[[sinks]]\ntype='log'\n", "sources[0].formt: unknown key (did you mean 'format'?)"),
        ("[[sources]]\ntype = 'stdin'\n[[sinks]]\ntype='log'\n[[sinks]]\ntype='log'\n", "sinks[1].name: 'log' is already the name of sinks[0]"),
        ("sources = 3\n[[sinks]]\ntype='log'\n", "sources: expected an array of tables"),
    ],
)
def test_plugin_list_errors(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert expected in str(caught.value)


def test_load_config_reports_toml_syntax_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_unused_engine_tables_are_still_checked() -> None:
    with pytest.raises(ConfigError, match=r"engines\.wordlist\.dlete: unknown key"):
        parse("[engines.wordlist]\ndlete = ['x']\n" + BASE)


def test_second_instance_of_an_engine_type() -> None:
    config = parse(
        "[engine]\nprimary = 'strict'\nfallback = ['wordlist', 'pass']\n"
        "[engines.strict]\ntype = 'local'\nflag_threshold = 0.1\n" + BASE
    )
    assert config.engine_chain() == ["strict", "wordlist"]  # type: ignore[attr-defined]
    assert config.engines["strict"].plugin_type == "local"  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SecretConfig:
    api_key: Secret
    label: str = setting("x")


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_API_KEY", "s3cr3t-value")
    parsed = parse_table(SecretConfig, {"api_key_env": "TEST_API_KEY"}, "engines.x")
    assert parsed.api_key.reveal() == "s3cr3t-value"
    assert "s3cr3t" not in repr(parsed)
    assert "s3cr3t" not in str(parsed.api_key)
    assert parsed.api_key.masked() == "*** (env TEST_API_KEY, set)"


def test_secret_from_file_and_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "chatsight").write_text("from-credentials\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    parsed = parse_table(SecretConfig, {"api_key_file": "chatsight"}, "e")
    assert parsed.api_key.reveal() == "from-credentials"
    absolute = tmp_path / "key.txt"
    absolute.write_text("from-file")
    assert parse_table(SecretConfig, {"api_key_file": str(absolute)}, "e").api_key.reveal() == (
        "from-file"
    )


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, "e.api_key: required; set api_key_env or api_key_file"),
        ({"api_key": "literal-secret"}, "e.api_key: secrets are not written in the config"),
        ({"api_key_env": "CHATMOD_TEST_UNSET"}, "e.api_key_env: environment variable CHATMOD_TEST_UNSET is not set"),
        ({"api_key_file": "/nonexistent/key"}, "e.api_key_file: cannot read /nonexistent/key"),
        ({"api_key_env": "A", "api_key_file": "B"}, "set either api_key_env or api_key_file"),
    ],
)
def test_secret_errors(table: dict[str, str], expected: str,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATMOD_TEST_UNSET", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as caught:
        parse_table(SecretConfig, table, "e")
    assert expected in str(caught.value)
    assert "literal-secret" not in str(caught.value)


class SecretEngine(Engine):
    Config = SecretConfig

    async def moderate(self, message: Message) -> Verdict:
        raise NotImplementedError


def secret_registry() -> Registry:
    infos = list(Registry.from_entry_points().all())
    infos.append(PluginInfo("engine", "secretive", "tests.test_config:SecretEngine", "tests"))
    return Registry(infos)


def test_secrets_of_unused_engines_are_not_required_and_masked_in_output() -> None:
    config = parse_config(
        tomllib.loads("[engines.secretive]\napi_key_env = 'CHATMOD_TEST_UNSET'\n" + BASE),
        secret_registry(),
    )
    shown = config.to_plain()["engines"]["secretive"]["api_key"]
    assert shown == "*** (env CHATMOD_TEST_UNSET, not resolved: component not in use)"


def test_secrets_of_used_engines_are_resolved_and_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATMOD_TEST_KEY", "c.xyz.abc123")
    text = "[engine]\nprimary='secretive'\n[engines.secretive]\napi_key_env='CHATMOD_TEST_KEY'\n"
    config = parse_config(tomllib.loads(text + BASE), secret_registry())
    assert "c.xyz.abc123" not in repr(config.to_plain())
    monkeypatch.delenv("CHATMOD_TEST_KEY")
    with pytest.raises(ConfigError, match="CHATMOD_TEST_KEY is not set"):
        parse_config(tomllib.loads(text + BASE), secret_registry())
    monkeypatch.setenv("CHATMOD_TEST_KEY", " \n")  # blank is no secret (an empty HMAC key!)
    with pytest.raises(ConfigError, match="CHATMOD_TEST_KEY is not set"):
        parse_config(tomllib.loads(text + BASE), secret_registry())


def test_local_engine_without_its_extra_is_a_clear_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "profanity_check" else real_find_spec(name, *a),
    )
    with pytest.raises(PluginError, match=r"engine.primary: the local engine needs its model: "
                                          r"pip install 'chatmod\[local\]'"):
        parse(BASE)
