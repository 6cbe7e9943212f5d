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
        ("[engine]\nprimary = 'lokal'\n", "engine.primary: no engine named 'lokal' (did you mean 'local'?)"),
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


SIX_MISTAKES = """
[daemon]
drain_timeot = 5
log_level = "verbos"

[engine]
primary = "wordlist"
fallback = ["flg"]

[engines.wordlist]
delete = "idiot"

[[sources]]
type = "stdn"

[[sinks]]
type = "jsonl"
pth = "-"
"""
SIX_KEYS = ("daemon.drain_timeot", "daemon.log_level", "engine.fallback[0]",
            "engines.wordlist.delete", "sources[0].type", "sinks[0].pth")


def test_every_mistake_of_a_config_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(SIX_MISTAKES)
    problems = caught.value.problems
    assert sorted(p.path for p in problems) == sorted(SIX_KEYS)
    lines = str(caught.value).splitlines()
    assert len(lines) == 6
    by_key = {p.path: p.message for p in problems}
    assert by_key["daemon.drain_timeot"] == "unknown key (did you mean 'drain_timeout'?)"
    assert by_key["daemon.log_level"].startswith("expected one of 'debug', 'info'")
    assert "found 'verbos'" in by_key["daemon.log_level"]
    assert by_key["engine.fallback[0]"].startswith("no engine named 'flg' (did you mean 'flag'?)")
    assert by_key["engines.wordlist.delete"] == "expected an array, found 'idiot'"
    assert by_key["sources[0].type"].startswith(
        "no source plugin named 'stdn' (did you mean 'stdin'?)")
    assert by_key["sinks[0].pth"] == "unknown key (did you mean 'path'?)"


def test_load_config_names_the_file_on_every_line(tmp_path: Path) -> None:
    path = tmp_path / "six.toml"
    path.write_text(SIX_MISTAKES)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 6
    assert all(line.startswith(f"{path}: ") for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A fallback value close to a terminal answer, an engine table or an installed engine.
        ("[engine]\nfallback = ['flg']\n", "engine.fallback[0]: no engine named 'flg' (did you mean 'flag'?)"),
        ("[engine]\nfallback = 'pas'\n", "engine.fallback[0]: no engine named 'pas' (did you mean 'pass'?)"),
        ("[engine]\nfallback = ['wordlst', 'pass']\n", "engine.fallback[0]: no engine named 'wordlst' (did you mean 'wordlist'?)"),
        ("[engine]\nprimary = 'stric'\n[engines.strict]\ntype = 'local'\n", "engine.primary: no engine named 'stric' (did you mean 'strict'?)"),
        ("[engines.strict]\ntype = 'lokal'\n", "engines.strict.type: no engine plugin named 'lokal' (did you mean 'local'?)"),
        ("[[sinks]]\ntype = 'jsnl'\n", "sinks[1].type: no sink plugin named 'jsnl' (did you mean 'jsonl'?)"),
        ("[[sinks]]\ntype = 'log'\nlevel = 'warn'\n", "sinks[1].level: expected one of 'debug', 'info', 'warning', found 'warn' (did you mean 'warning'?)"),
        ("[[sources]]\ntype = 'stdin'\nname = 'in2'\nformat = 'json'\n", "sources[1].format: expected one of 'text', 'jsonl', found 'json' (did you mean 'jsonl'?)"),
    ],
)
def test_did_you_mean_for_every_kind_of_name(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(BASE + text)
    assert expected in str(caught.value).splitlines()[0]
    assert len(caught.value.problems) == 1


def test_problems_inside_arrays_and_tables_are_all_reported() -> None:
    text = "[policy]\nexempt_authors = [1, 'ok', 2.5]\n[policy.channels.'#a']\nshadw = 1\n" \
           "[policy.channels.'#b']\nshadow = 'no'\n"
    with pytest.raises(ConfigError) as caught:
        parse(text + BASE)
    assert sorted(p.path for p in caught.value.problems) == [
        'policy.channels."#a".shadw', 'policy.channels."#b".shadow',
        "policy.exempt_authors[0]", "policy.exempt_authors[2]"]


def test_cross_key_checks_of_a_plugin_name_their_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("[engines.local]\nflag_threshold = 0.8\ndelete_threshold = 0.5\n"
              "[engines.wordlist]\nflag = 3\n" + BASE)
    assert sorted(p.path for p in caught.value.problems) == [
        "engines.local.delete_threshold", "engines.wordlist.flag"]


def test_a_missing_plugin_among_other_mistakes_is_reported_with_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "profanity_check" else real_find_spec(name, *a),
    )
    with pytest.raises(ConfigError) as caught:
        parse("[daemon]\nqueue_sise = 3\n" + BASE)
    assert not isinstance(caught.value, PluginError)  # a typo too: a config error
    assert [p.path for p in caught.value.problems] == ["daemon.queue_sise", "engine.primary"]


def test_default_config_path_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatmod.config import load as config_module
    from chatmod.config.load import choose_config_path

    monkeypatch.delenv("CHATMOD_CONFIG", raising=False)
    default = tmp_path / "etc" / "chatmod.toml"
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", str(default))
    with pytest.raises(ConfigError) as caught:
        choose_config_path(None)
    assert str(caught.value) == (f"{default}: no config file there (the default); give -c FILE "
                                 "or set CHATMOD_CONFIG")
    default.parent.mkdir()
    default.write_text(BASE)
    assert choose_config_path(None) == (default, "the default")
    chosen = tmp_path / "mine.toml"
    monkeypatch.setenv("CHATMOD_CONFIG", str(chosen))
    with pytest.raises(ConfigError, match=r"mine\.toml: no config file there \(\$CHATMOD_CONFIG\)"):
        choose_config_path(None)
    chosen.write_text(BASE)
    assert choose_config_path(None) == (chosen, "$CHATMOD_CONFIG")
    # -c wins over both; a missing -c file is reported when it is read.
    assert choose_config_path(str(tmp_path / "other.toml")) == (tmp_path / "other.toml", "-c")


def test_log_level_override_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[daemon]\nlog_level = 'warning'\n" + BASE)
    assert load_config(path).daemon.log_level == "warning"
    config = load_config(path, log_level="debug")
    assert config.daemon.log_level == "debug"
    assert config.log_level_override == "debug"


STATE_DIR_USERS = """
[review]
enabled = true
[state]
control = true
backend = "sqlite"
[[sources]]
type = "stdin"
[[sinks]]
type = "jsonl"
path = "-"
"""


def test_what_keeps_files_without_a_state_directory_is_refused_by_check_config_too(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """check-config said "config OK" where run then refused to start (review) or ran with
    live control silently off: now both refuse, naming each key."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    path = tmp_path / "chatmod.toml"
    path.write_text(STATE_DIR_USERS)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    for key in ("review.backend", "state.control", "state.backend"):
        assert key in message
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/chatmod")  # as systemd sets it
    config = load_config(path)
    assert config.review.enabled
    assert config.state.control
