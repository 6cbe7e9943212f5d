"""The IRC source and action sink against real servers (ngircd and InspIRCd), with real
clients speaking."""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from chatmod.config.schema import Secret
from chatmod.config.sections import PolicySection
from chatmod.core.engine_chain import EngineChain
from chatmod.core.pipeline import Pipeline
from chatmod.plugins.irc import (
    FATAL_RETRY,
    IrcActionSink,
    IrcSinkConfig,
    IrcSource,
    IrcSourceConfig,
)
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.rules import Policy

from .helpers import ListSource, RecordingSink, eventually
from .irc_client import Client
from .servers import IRC_SERVERS, IrcServer, LoopbackServer


@pytest.fixture(params=sorted(IRC_SERVERS))
def irc_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoopbackServer]:
    """Each IRC test that takes this runs against every server in IRC_SERVERS."""
    server = IRC_SERVERS[request.param](tmp_path)
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
    irc_server: LoopbackServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chatmod")
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
    # What happened is in the log: connected, registered, joined (it used to say nothing).
    where = f"IRC 127.0.0.1:{irc_server.port}"
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos[:3] == [f"{where}: connected", f"{where}: registered as modbot",
                         f"{where}: joined #lobby"]
    await alice.aclose()
    pipeline.abort()


async def test_the_bot_survives_a_server_restart(
    irc_server: LoopbackServer, nursery: trio.Nursery,
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
    from chatmod.core.model import Decision, Message, Verdict
    from chatmod.protocols.irc import IrcSession

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


async def bot_against(server: LoopbackServer, nursery: trio.Nursery, **options: Any) -> IrcSource:
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
    irc_server: LoopbackServer, nursery: trio.Nursery,
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


def logged(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if re.search(pattern, r.getMessage())]


async def test_a_refused_nick_is_a_clear_error_and_a_long_wait(
    irc_server: LoopbackServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    source = await bot_against(irc_server, nursery, nick="1bad", reconnect_initial=0.01,
                               reconnect_max=0.01)
    await eventually(lambda: bool(logged(caplog, "refused the nick")))
    [error] = logged(caplog, "refused the nick")
    assert re.fullmatch(rf"IRC 127.0.0.1:{irc_server.port}: the server refused the nick "
                        r"'1bad': (?i:erroneous nickname); retrying in 300 s", error), error
    assert [r.levelno for r in caplog.records if r.getMessage() == error] == [logging.ERROR]
    assert source.connection.stats["connects"] == 1
    assert not source.connection.registered.is_set()


async def test_a_nick_in_use_registers_under_an_alternative(
    irc_server: LoopbackServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chatmod")
    squatter = Client("modbot")
    await squatter.connect(nursery, irc_server.port, "#elsewhere")
    source = await bot_against(irc_server, nursery)
    await eventually(lambda: source.connection.session is not None
                     and "#lobby" in source.connection.session.joined)
    assert source.connection.session is not None
    assert source.connection.session.nick == "modbot_"
    assert logged(caplog, "in use") == [
        f"IRC 127.0.0.1:{irc_server.port}: the nick modbot is in use; trying modbot_",
        f"IRC 127.0.0.1:{irc_server.port}: registered as modbot_ (modbot is in use)"]
    await squatter.aclose()


async def test_a_refused_join_is_logged_and_tried_again(
    irc_server: LoopbackServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    owner = Client("owner")
    await owner.connect(nursery, irc_server.port, "#locked")
    await owner.send("MODE", "#locked", "+i")
    await owner.wait_for(lambda line: line.command == "MODE")
    source = IrcSource("irc", IrcSourceConfig(
        port=irc_server.port, nick="modbot", channels=("#lobby", "#locked"),
        rejoin_initial=0.2, rejoin_max=0.4))
    nursery.start_soon(partial(source.run, ListSource("x", [])))  # type: ignore[arg-type]
    # Refused (invite only), then refused again on the retry: logged each time.
    await eventually(lambda: len(logged(caplog, "cannot join #locked")) >= 2)
    first = logged(caplog, "cannot join #locked")[0]
    assert re.fullmatch(rf"IRC 127.0.0.1:{irc_server.port}: cannot join #locked: 473 .*"
                        r"; trying again in 0\.\d s", first), first
    session = source.connection.session
    assert session is not None
    assert "#lobby" in session.joined
    await owner.send("MODE", "#locked", "-i")
    await eventually(lambda: "#locked" in session.joined)
    assert source.connection.registered.is_set()
    await owner.aclose()


async def test_account_tag_is_requested_where_offered(
    irc_server: LoopbackServer, nursery: trio.Nursery,
) -> None:
    source = await bot_against(irc_server, nursery)
    await eventually(lambda: source.connection.registered.is_set())
    session = source.connection.session
    assert session is not None
    if irc_server.name == "inspircd":  # it offers account-tag; ngircd does not
        assert {"account-tag", "message-tags", "server-time"} <= session.caps
    else:
        assert "account-tag" not in session.caps


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (as an IP address: Python checks that, not the CN)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=chatmod test", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_tls_with_a_ca_file_and_a_certificate_that_fails_verification(
    tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = self_signed(tmp_path / "cert")
    secure = IrcServer(tmp_path / "secure", tls=True, cert=(cert, key))
    secure.start()
    try:
        trusted = await bot_against(secure, nursery, nick="trusted", tls=True,
                                    tls_ca_file=str(cert))
        await eventually(lambda: trusted.connection.registered.is_set())
        untrusted = await bot_against(secure, nursery, nick="untrusted", tls=True,
                                      reconnect_initial=0.01, reconnect_max=0.01)
        await eventually(lambda: bool(logged(caplog, "failed verification")))
        [error] = logged(caplog, "failed verification")
        assert re.fullmatch(rf"IRC 127.0.0.1:{secure.port}: the server's TLS certificate "
                            r"failed verification: self.signed certificate \(tls_ca_file "
                            r"names the CA to trust\); retrying in 300 s", error), error
        assert untrusted.connection.stats["connects"] == 0
    finally:
        secure.stop()


async def test_a_tls_failure_has_a_reason(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:  # as a server refusing TLS does
        await stream.aclose()

    [listener] = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
    port = listener.socket.getsockname()[1]
    source = IrcSource("irc", IrcSourceConfig(port=port, channels=("#a",), tls=True,
                                              reconnect_initial=5, reconnect_max=5))
    nursery.start_soon(partial(source.run, ListSource("x", [])))  # type: ignore[arg-type]
    await eventually(lambda: bool(logged(caplog, "reconnecting")))
    [warning] = logged(caplog, "reconnecting")
    # It used to read "IRC 127.0.0.1:54511: ; reconnecting in 1.0 s".
    assert re.fullmatch(rf"IRC 127.0.0.1:{port}: TLS handshake failed: BrokenResourceError: "
                        r"\S.*; reconnecting in \d\.\d s", warning), warning


def test_tls_ca_file_must_exist_and_needs_tls(tmp_path: Path) -> None:
    from chatmod.errors import ConfigError

    with pytest.raises(ConfigError, match=r"tls_ca_file: .* is not a readable file"):
        IrcSourceConfig(channels=("#a",), tls=True, tls_ca_file=str(tmp_path / "none.pem"))
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ConfigError, match="tls_ca_file: set, but tls is false"):
        IrcSourceConfig(channels=("#a",), tls_ca_file=str(tmp_path / "ca.pem"))


async def test_an_author_no_irc_command_can_name_is_not_acted_on() -> None:
    from chatmod.core.model import Decision, Message, Verdict
    from chatmod.protocols.irc import IrcSession

    sink = IrcActionSink("a", IrcSinkConfig())
    session = IrcSession("modbot", ("#c",))
    session.operator_in.add("#c")
    for author in (":x", "a b", ""):
        message = Message(id="m", text="t", source="irc", author=author, channel="#c")
        decision = Decision(message, Verdict("delete", 0.9, "e", "local"), "delete", 1.0)
        # A KICK naming ":x" could not be formatted: it used to fail the action task, and
        # with it the connection and the daemon.
        assert sink._lines(decision, "kick", session) == []
    assert sink.statistics()["unusable"] == 3


async def test_a_defect_while_handling_a_line_skips_that_line_only(
    irc_server: LoopbackServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatmod.protocols.irc import IrcSession

    handle_privmsg = IrcSession._HANDLERS["PRIVMSG"]

    def fragile(session: IrcSession, line: Any, reaction: Any) -> None:
        if line.params[-1] == "boom":
            raise RuntimeError("a defect")
        handle_privmsg(session, line, reaction)

    monkeypatch.setitem(IrcSession._HANDLERS, "PRIVMSG", fragile)
    pipeline, source, _actions, recorder = make_pipeline(irc_server.port)
    nursery.start_soon(pipeline.run)
    await eventually(lambda: source.connection.session is not None
                     and "#lobby" in source.connection.session.joined)
    carol = Client("carol")
    await carol.connect(nursery, irc_server.port, "#lobby")
    for text in ("boom", "boom", "after"):
        await carol.say("#lobby", text)
    await eventually(lambda: [d.message.text for d in recorder.decisions] == ["after"])
    assert source.connection.stats["lines_failed"] == 2
    assert source.connection.stats["connects"] == 1
    [record, _] = [r for r in caplog.records if "could not handle" in r.getMessage()]
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError
    await carol.aclose()
    pipeline.abort()


async def test_an_unexpected_error_in_the_connection_is_contained_and_retried(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from chatmod.plugins.irc import IrcConnection

    calls = []

    async def broken_open(self: IrcConnection) -> trio.abc.Stream:
        calls.append(trio.current_time())
        raise RuntimeError("a defect")

    monkeypatch.setattr(IrcConnection, "_open", broken_open)
    source = IrcSource("irc", IrcSourceConfig(channels=("#a",), reconnect_initial=0.01,
                                              reconnect_max=0.01))
    nursery.start_soon(partial(source.run, ListSource("x", [])))  # type: ignore[arg-type]
    await eventually(lambda: len(calls) >= 3)
    assert source.connection.stats["failures"] >= 2
    assert logged(caplog, "unexpected error: a defect; reconnecting")


async def test_log_limiter(autojump_clock: trio.testing.MockClock) -> None:
    from chatmod.plugins.irc import LogLimiter

    limiter = LogLimiter(burst=2, period=60)
    assert [limiter.allow() for _ in range(5)] == ["", "", None, None, None]
    await trio.sleep(60)
    assert limiter.allow() == " (3 more left out)"
    assert limiter.allow() == ""


@pytest.mark.parametrize("kind", sorted(IRC_SERVERS))
async def test_a_refused_server_password_is_a_long_wait(
    kind: str, tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture,
) -> None:
    locked = IRC_SERVERS[kind](tmp_path, password="letmein")
    locked.start()
    try:
        good = await bot_against(locked, nursery, password=Secret("t", "letmein"))
        bad = await bot_against(locked, nursery, nick="badbot", password=Secret("t", "nope"),
                                reconnect_initial=0.01, reconnect_max=0.01)
        await eventually(lambda: good.connection.registered.is_set())
        await eventually(lambda: bool(logged(caplog, "retrying in 300 s")))
        [error] = logged(caplog, "retrying in 300 s")
        assert error.startswith(f"IRC 127.0.0.1:{locked.port}: ")
        assert "letmein" not in caplog.text
        assert "nope" not in caplog.text
        assert bad.connection.stats["connects"] == 1
    finally:
        locked.stop()


def test_an_engines_verdict_cannot_inject_an_irc_command() -> None:
    from chatmod.core.model import Decision, Message, Verdict
    from chatmod.errors import ConfigError
    from chatmod.protocols.irc import IrcSession

    sink = IrcActionSink("a", IrcSinkConfig())
    session = IrcSession("modbot", ("#c",))
    session.operator_in.add("#c")
    message = Message(id="m", text="t", source="irc", author="eve", channel="#c")
    verdict = Verdict("delete\r\nQUIT :gone\0", 0.9, "chatsight", "ws")
    for what in ("kick", "notice"):
        [line] = sink._lines(Decision(message, verdict, "delete", 1.0), what, session)
        assert not any(char in line.format() for char in "\r\n\0")
    [kick] = sink._lines(Decision(message, verdict, "delete", 1.0), "kick", session)
    assert kick.format() == "KICK #c eve :moderated by chatmod (delete QUIT :gone )"
    with pytest.raises(ConfigError, match="alerts_channel: '#a b' is not a channel name"):
        IrcSinkConfig(alerts_channel="#a b")


async def test_two_pipelines_never_share_an_irc_connection(
    irc_server: LoopbackServer, nursery: trio.Nursery,
) -> None:
    """Two pipelines in one process, each with a source named ``irc``: each sink acts through
    its own pipeline's connection. The connection used to be found in a module-level dict by
    the source's name, so the last pipeline started took over the other's actions (its bot,
    not operator there, could not kick), and its stop took the other's connection away."""

    def pipeline_for(nick: str, channel: str) -> tuple[Pipeline, IrcSource, IrcActionSink]:
        source = IrcSource("irc", IrcSourceConfig(
            port=irc_server.port, nick=nick, channels=(channel,), reconnect_initial=0.2,
            reconnect_max=0.5, flood_rate=5.0))
        actions = IrcActionSink("irc-actions", IrcSinkConfig())
        engine = WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))
        return (Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                         Policy(PolicySection()), [actions]), source, actions)

    def moderating(source: IrcSource, channel: str) -> bool:
        session = source.connection.session
        return session is not None and session.can_moderate(channel)

    first, first_source, first_actions = pipeline_for("bot-a", "#a")
    second, second_source, _ = pipeline_for("bot-b", "#b")
    nursery.start_soon(first.run)
    await eventually(lambda: moderating(first_source, "#a"))
    nursery.start_soon(second.run)
    await eventually(lambda: moderating(second_source, "#b"))

    async def kicked_by(nick: str) -> str:
        person = Client(nick)
        try:
            await person.connect(nursery, irc_server.port, "#a")
            await person.say("#a", "you idiot")
            kick = await person.wait_for(lambda line: line.command == "KICK")
        finally:
            await person.aclose()
        assert kick.params[:2] == ["#a", nick]
        assert kick.source is not None
        return kick.source.split("!")[0]

    assert await kicked_by("alice") == "bot-a"
    # The second pipeline stops: the first one's connection is its own, and stays.
    second.abort()
    await eventually(lambda: second_source.connection.session is None)
    assert await kicked_by("bob") == "bot-a"
    assert first_actions.statistics()["kick"] == 2
    first.abort()
