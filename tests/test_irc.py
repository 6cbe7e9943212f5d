"""The IRC source and action sink against a real ngircd, with real clients speaking."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chatmod.config import PolicySection
from chatmod.engine_chain import EngineChain
from chatmod.pipeline import Pipeline
from chatmod.plugins.irc import (
    FATAL_RETRY,
    IrcActionSink,
    IrcSinkConfig,
    IrcSource,
    IrcSourceConfig,
)
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy import Policy
from chatmod.schema import Secret

from .helpers import ListSource, RecordingSink, eventually
from .irc_client import Client
from .servers import IrcServer


@pytest.fixture
def irc_server(tmp_path: Path) -> Iterator[IrcServer]:
    server = IrcServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_pipeline(port: int) -> tuple[Pipeline, IrcSource, IrcActionSink, RecordingSink]:
    source = IrcSource("irc", IrcSourceConfig(
        port=port, nick="modbot", channels=("#lobby",), reconnect_initial=0.2,
        reconnect_max=0.5, flood_rate=5.0))
    actions = IrcActionSink("irc-actions", IrcSinkConfig())
    recorder = RecordingSink()
    engine = WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        Policy(PolicySection()), [recorder, actions])
    return pipeline, source, actions, recorder


async def test_messages_are_decided_and_a_delete_kicks_the_author(
    irc_server: IrcServer, nursery: trio.Nursery,
) -> None:
    pipeline, source, actions, recorder = make_pipeline(irc_server.port)
    nursery.start_soon(pipeline.run)
    # The bot joins the empty channel first, so the server makes it channel operator.
    await eventually(lambda: source.connection.session is not None
                     and source.connection.session.can_moderate("#lobby"))
    alice = Client("alice")
    await alice.connect(nursery, irc_server.port, "#lobby")
    await alice.say("#lobby", "hello everyone")
    await alice.say("#lobby", "you are an idiot")
    kick = await alice.wait_for(lambda line: line.command == "KICK")
    assert kick.params[:2] == ["#lobby", "alice"]
    assert kick.params[2] == "moderated by chatmod (delete)"
    await eventually(lambda: len(recorder.decisions) == 2)
    by_text = {d.message.text: d for d in recorder.decisions}
    assert by_text["hello everyone"].action == "none"
    assert by_text["you are an idiot"].action == "delete"
    decision = by_text["you are an idiot"]
    assert (decision.message.author, decision.message.channel) == ("alice", "#lobby")
    assert actions.statistics()["kick"] == 1
    # The same decision again (a redelivery) is not acted on twice.
    await actions.write([decision])
    assert actions.statistics()["kick"] == 1
    await alice.aclose()
    pipeline.abort()


async def test_the_bot_survives_a_server_restart(
    irc_server: IrcServer, nursery: trio.Nursery,
) -> None:
    pipeline, source, _actions, recorder = make_pipeline(irc_server.port)
    nursery.start_soon(pipeline.run)
    await eventually(lambda: source.connection.registered.is_set())
    irc_server.stop()
    await eventually(lambda: source.connection.session is None)  # the bot saw it go
    irc_server.start()
    await eventually(lambda: source.connection.session is not None
                     and source.connection.session.can_moderate("#lobby"), within=15)
    bob = Client("bob")
    await bob.connect(nursery, irc_server.port, "#lobby")
    await bob.say("#lobby", "idiot")
    await bob.wait_for(lambda line: line.command == "KICK")
    assert source.connection.stats["connects"] >= 2
    assert [d.message.text for d in recorder.decisions] == ["idiot"]
    await bob.aclose()
    pipeline.abort()


async def test_flood_control_spaces_actions(autojump_clock: trio.testing.MockClock) -> None:
    from chatmod.plugins.irc import TokenBucket

    bucket = TokenBucket(rate=2.0, burst=3)
    times = []
    for _ in range(7):
        await bucket.take()
        times.append(trio.current_time())
    # A burst of 3 at once, then one every half second.
    assert times == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5, 2.0])


def test_notice_and_ban_lines_and_rights() -> None:
    from chatmod.irc_protocol import IrcSession
    from chatmod.model import Decision, Message, Verdict

    sink = IrcActionSink("a", IrcSinkConfig(actions={"warn": "notice", "ban": "ban"}))
    session = IrcSession("modbot", ("#c",))
    message = Message(id="m", text="t", source="irc", author="eve", channel="#c",
                      metadata={"irc_host": "bad.example"})

    def lines(action: str) -> list[str]:
        decision = Decision(message, Verdict("delete", 0.9, "e", "local"), action, 1.0)
        return [line.format() for line in sink._lines(decision, sink.config.actions[action],
                                                      session)]

    assert lines("warn") == ["NOTICE eve :Please keep it friendly (delete)."]
    assert lines("ban") == []  # not operator in #c: nothing tried
    assert sink.statistics()["no_rights"] == 1
    session.operator_in.add("#c")
    assert lines("ban") == ["MODE #c +b *!*@bad.example",
                            "KICK #c eve :moderated by chatmod (delete)"]


async def bot_against(server: IrcServer, nursery: trio.Nursery, **options: Any) -> IrcSource:
    options.setdefault("nick", "modbot")
    source = IrcSource("irc", IrcSourceConfig(port=server.port, channels=("#lobby",),
                                              **options))
    nursery.start_soon(partial(source.run, ListSource("x", [])))  # type: ignore[arg-type]
    return source


async def test_server_password_and_tls(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    locked = IrcServer(tmp_path / "locked", password="letmein")
    secure = IrcServer(tmp_path / "secure", tls=True)
    for server in (locked, secure):
        server.start()
    try:
        good = await bot_against(locked, nursery, password=Secret("t", "letmein"))
        bad = await bot_against(locked, nursery, nick="badbot", password=Secret("t", "nope"))
        tls = await bot_against(secure, nursery, nick="tlsbot", tls=True, tls_verify=False)
        await eventually(lambda: good.connection.registered.is_set())
        await eventually(lambda: tls.connection.registered.is_set())
        await eventually(lambda: any("refused us" in r.getMessage() for r in caplog.records))
        refusal = next(r for r in caplog.records if "refused us" in r.getMessage())
        assert refusal.args[-1] == FATAL_RETRY  # type: ignore[index]  # a long wait, no loop
        assert not bad.connection.registered.is_set()
        assert bad.connection.stats["connects"] == 1
    finally:
        for server in (locked, secure):
            server.stop()


async def test_keyword_alerts_go_to_the_moderators_channel(
    irc_server: IrcServer, nursery: trio.Nursery,
) -> None:
    source = IrcSource("irc", IrcSourceConfig(
        port=irc_server.port, nick="modbot", channels=("#lobby",), quiet_channels=("#mods",)))
    actions = IrcActionSink("irc-actions", IrcSinkConfig(alerts_channel="#mods"))
    recorder = RecordingSink()
    engine = WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        Policy(PolicySection()), [recorder, actions])
    nursery.start_soon(pipeline.run)
    await eventually(lambda: source.connection.session is not None
                     and {"#lobby", "#mods"} <= source.connection.session.joined)
    mod = Client("mod")
    await mod.connect(nursery, irc_server.port, "#mods")
    await mod.say("#mods", "that idiot again")  # moderators' talk: not moderated
    await pipeline.deliver_alert({
        "type": "alert", "alert": "keyword", "keyword": "refund",
        "metadata": {"chatmod_author": "bob", "chatmod_channel": "#lobby"},
        "text": "I want a refund\r\nPRIVMSG #lobby :injected", "time_ms": 1})
    notice = await mod.wait_for(lambda line: line.command == "NOTICE"
                                and line.params[0] == "#mods")
    assert notice.params[1] == ("keyword alert: 'refund' from bob in #lobby: I want a refund "
                                "PRIVMSG #lobby :injected")
    assert actions.statistics()["alerts"] == 1
    await eventually(lambda: source.connection.stats["quiet_lines"] == 1)
    assert recorder.decisions == []
    assert len(recorder.alerts) == 1
    await mod.aclose()
    pipeline.abort()


async def test_an_alert_with_the_irc_connection_down_is_a_sink_error() -> None:
    from chatmod.errors import SinkError

    sink = IrcActionSink("irc-actions", IrcSinkConfig(connection="nowhere",
                                                      alerts_channel="#mods"))
    with pytest.raises(SinkError, match="'nowhere' is down"):
        await sink.write_alert({"type": "alert", "keyword": "x", "metadata": {}, "text": "t"})
    await IrcActionSink("quiet", IrcSinkConfig(connection="nowhere")).write_alert(
        {"type": "alert", "keyword": "x"})  # no alerts_channel: nothing to do, no error
