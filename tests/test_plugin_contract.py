"""The typed plugin contract: third-party plugins through real entry points, the kind checked
at load, the hooks declared on the base class, connections handed over per pipeline, and the
streaming engine as a type of its own."""

from __future__ import annotations

import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from chatmod.config.load import parse_config
from chatmod.config.registry import Registry
from chatmod.config.sections import PolicySection
from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import (
    Engine,
    NoOptions,
    ResultCallback,
    SharedConnections,
    Sink,
    StreamingEngine,
)
from chatmod.core.model import Message, Verdict
from chatmod.core.pipeline import Pipeline
from chatmod.errors import ConfigError
from chatmod.plugins.chatsight_voice import VoiceSource
from chatmod.plugins.jsonl_sink import JsonlSink
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.rules import Policy

from .helpers import ListSource, RecordingSink, eventually

# The README's plugin example, installed as a distribution of its own.
THIRD_PARTY_MODULE = "chatmod_test_shouting"
THIRD_PARTY_CODE = '''
from __future__ import annotations

from dataclasses import dataclass

from chatmod.config.schema import setting
from chatmod.core.interfaces import Engine
from chatmod.core.model import Message, Verdict


@dataclass(frozen=True)
class ShoutingConfig:
    max_caps_ratio: float = setting(0.7, min=0.0, max=1.0)


class ShoutingEngine(Engine[ShoutingConfig]):
    Config = ShoutingConfig

    async def moderate(self, message: Message) -> Verdict:
        letters = [c for c in message.text if c.isalpha()]
        ratio = sum(c.isupper() for c in letters) / max(len(letters), 1)
        action = "flag" if ratio > self.config.max_caps_ratio else "pass"
        return Verdict(action, ratio, self.name, "local", {"caps": ratio})


def make_sink() -> None:
    """Not a class: an entry point naming it is refused."""


class OddConfigEngine(ShoutingEngine):
    Config = dict  # not a dataclass: its table cannot be read into it
'''
ENTRY_POINTS = f"""
[chatmod.engines]
shouting = {THIRD_PARTY_MODULE}:ShoutingEngine
odd = {THIRD_PARTY_MODULE}:OddConfigEngine

[chatmod.sinks]
shouting_sink = {THIRD_PARTY_MODULE}:ShoutingEngine
not_a_class = {THIRD_PARTY_MODULE}:make_sink
"""

BASE = """
[[sources]]
type = "stdin"
"""
SINK = """
[[sinks]]
type = "jsonl"
path = "-"
"""


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """A distribution ``shouting-plugins 1.0`` installed on sys.path, found as chatmod finds
    every plugin: through its entry points."""
    (tmp_path / f"{THIRD_PARTY_MODULE}.py").write_text(THIRD_PARTY_CODE)
    info = tmp_path / "shouting_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shouting-plugins\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield Registry.from_entry_points()
    finally:
        sys.modules.pop(THIRD_PARTY_MODULE, None)


def config_text(text: str) -> dict[str, object]:
    return tomllib.loads(textwrap.dedent(text))


async def test_a_third_party_engine_from_an_entry_point_is_built_typed_and_answers(
    third_party: Registry,
) -> None:
    info = third_party.get("engine", "shouting", "engine.primary")
    assert info.distribution == "shouting-plugins 1.0"
    config = parse_config(config_text("""
        [engine]
        primary = "shouting"
        [engines.shouting]
        max_caps_ratio = 0.5
    """ + BASE + SINK), third_party)
    engine = config.engines["shouting"].build()
    assert isinstance(engine, Engine)
    assert type(engine).__name__ == "ShoutingEngine"
    assert engine.config.max_caps_ratio == 0.5
    with trio.fail_after(5):
        shouted = await engine.moderate(Message(id="1", text="STOP THAT NOW", source="t"))
        calm = await engine.moderate(Message(id="2", text="stop that now", source="t"))
    assert (shouted.action, calm.action) == ("flag", "pass")


def test_an_entry_point_of_the_wrong_kind_is_a_clear_error_naming_it(
    third_party: Registry,
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text("""
            [engine]
            primary = "wordlist"
            [[sinks]]
            type = "shouting_sink"
            [[sinks]]
            type = "not_a_class"
        """ + BASE), third_party)
    lines = str(caught.value).splitlines()
    assert any(
        "sinks[0].type: sink plugin 'shouting_sink' (chatmod_test_shouting:ShoutingEngine, "
        "from shouting-plugins 1.0) is not a chatmod.core.interfaces.Sink subclass" in line
        for line in lines), lines
    assert any(
        "sinks[1].type: sink plugin 'not_a_class' (chatmod_test_shouting:make_sink, from "
        "shouting-plugins 1.0) is a function, not a class" in line for line in lines), lines


def test_a_plugin_whose_config_is_not_a_dataclass_is_a_clear_error(
    third_party: Registry,
) -> None:
    # It used to escape the config check as a TypeError from dataclasses.fields().
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text('[engine]\nprimary = "odd"\n' + BASE + SINK), third_party)
    assert str(caught.value).endswith(
        "engine.primary: engine plugin 'odd' (chatmod_test_shouting:OddConfigEngine, from "
        "shouting-plugins 1.0): its Config (<class 'dict'>) is not a dataclass"), caught.value


def test_each_kind_is_built_as_its_own_type() -> None:
    config = parse_config(config_text("""
        [engine]
        primary = "wordlist"
        [engines.wordlist]
        delete = ["idiot"]
    """ + BASE + SINK), Registry.from_entry_points())
    engine = config.engines["wordlist"].build()
    assert isinstance(engine, WordlistEngine)
    assert engine.config == WordlistConfig(delete=("idiot",))
    (sink,) = [spec.build() for spec in config.sinks]
    assert isinstance(sink, JsonlSink)
    assert not isinstance(engine, StreamingEngine)


def test_daemon_state_dir_fills_a_plugins_empty_state_dir_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATMOD_TEST_VOICE_KEY", "c.test.key")
    daemon_dir, own_dir = str(tmp_path / "daemon"), str(tmp_path / "own")

    def voice(state_dir: str) -> str:
        return (f"[[sources]]\ntype = 'chatsight_voice'\nname = 'v{len(state_dir)}'\n"
                f"api_key_env = 'CHATMOD_TEST_VOICE_KEY'\nstate_dir = '{state_dir}'\n"
                "[[sources.jobs]]\nurl = 'u'\nconvo_id = 'weekly-show-0001'\n")

    config = parse_config(config_text(
        f"[daemon]\nstate_dir = '{daemon_dir}'\n[engine]\nprimary = 'wordlist'\n"
        + voice("") + voice(own_dir) + SINK),
        Registry.from_entry_points())
    sources = [spec.build() for spec in config.sources]
    assert all(isinstance(source, VoiceSource) for source in sources)
    assert [spec.options.state_dir for spec in config.sources] == [daemon_dir, own_dir]


def test_optional_hooks_have_defaults_on_the_base_class() -> None:
    class Bare(Sink[NoOptions]):
        async def write(self, decisions: object) -> None:
            return None

    Bare.check_available()  # available unless it says otherwise
    assert Bare.Config is NoOptions
    sink = Bare("bare", NoOptions())
    sink.bind(SharedConnections())
    assert sink.reconfigure(NoOptions()) is False
    assert sink.statistics() == {}


def test_shared_connections_are_typed_and_one_per_owner() -> None:
    connections = SharedConnections()
    link = trio.Event()
    connections.provide("irc", link)
    connections.provide("irc", link)  # the same again: no conflict
    assert connections.find("irc", trio.Event) is link
    assert connections.find("irc", trio.Lock) is None  # not the kind asked for
    assert connections.find("other", trio.Event) is None
    with pytest.raises(ValueError, match="'irc' already shares a connection"):
        connections.provide("irc", trio.Event())
    assert connections.owners() == ["irc"]


class CountingStreamer(StreamingEngine[None]):
    """A streaming primary answering ``pass`` from submit; counts what it was fed."""

    def __init__(self, name: str = "streamer") -> None:
        super().__init__(name, None)
        self.fed = 0

    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        self.fed += 1
        on_result(Verdict("pass", 0.0, self.name, "ws"))

    async def moderate(self, message: Message) -> Verdict:
        return Verdict("pass", 0.0, self.name, "ws")


async def test_a_streaming_primary_is_not_replaced_by_an_engine_that_cannot_stream() -> None:
    # It used to be swapped in: the streaming stage then failed every message over to the
    # fallback ("does not stream"), until a restart.
    streamer = CountingStreamer()
    source = ListSource("chat", [Message(id=f"m-{i}", text="hello", source="chat")
                                 for i in range(3)], stay_open=True)
    sink = RecordingSink()
    pipeline = Pipeline([source], [streamer], EngineChain([streamer], "flag", timeout=5),
                        Policy(PolicySection()), [sink])
    assert pipeline.streaming
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            await eventually(lambda: len(sink.decisions) == 3)
            plain = WordlistEngine("streamer", WordlistConfig())
            assert pipeline.replace_engine(streamer, plain) is False
            assert pipeline.chain.primary is streamer
            # A streaming replacement is taken.
            successor = CountingStreamer()
            assert pipeline.replace_engine(streamer, successor) is True
            await eventually(lambda: pipeline.chain.primary is successor)
            pipeline.abort()
    assert [d.verdict.route for d in sink.decisions] == ["ws"] * 3
    assert streamer.fed == 3

