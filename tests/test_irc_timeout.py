"""A ladder's `timeout` on IRC: the bot bans (`MODE +b`) and lifts the ban (`-b`) when the
timeout ends, also when the sink that set it was replaced in between, or the daemon
restarted (the pending unban is kept under state_dir; the restarted bot, no longer channel
operator, acts as an IRC operator); against real IRC servers, with 2-3 second timeouts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio

from chatmod.config.sections import LadderSection, PolicySection
from chatmod.config.state import write_private
from chatmod.core.engine_chain import EngineChain
from chatmod.core.pipeline import Pipeline
from chatmod.plugins.irc import IrcActionSink, IrcSinkConfig, IrcSource, IrcSourceConfig
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.escalation import Escalation
from chatmod.policy.rules import Policy
from chatmod.state.strikes import MemoryStrikeStore

from .helpers import RecordingSink, chatmod_command, eventually
from .irc_client import Client
from .servers import IRC_SERVERS, OPER_NAME, OPER_PASSWORD, LoopbackServer

TIMEOUT = 2.0


@pytest.fixture(params=sorted(IRC_SERVERS))
def irc_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoopbackServer]:
    server = IRC_SERVERS[request.param](tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_timeout_bans_and_lifts_the_ban_also_after_the_sink_is_replaced(
        irc_server: LoopbackServer, nursery: trio.Nursery, tmp_path: Path) -> None:
    source = IrcSource("irc", IrcSourceConfig(
        port=irc_server.port, nick="modbot", channels=("#lobby",), reconnect_initial=0.2,
        reconnect_max=0.5, flood_rate=5.0))
    engine = WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))
    policy = PolicySection(ladder=LadderSection(steps=("warn", "timeout 2s")))
    first = IrcActionSink("irc-actions", IrcSinkConfig(state_dir=str(tmp_path)))
    recorder = RecordingSink()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        Policy(policy), [recorder, first],
                        escalation=Escalation(policy, MemoryStrikeStore()))
    nursery.start_soon(pipeline.run)
    with trio.fail_after(30):
        await eventually(lambda: source.connection.session is not None
                         and source.connection.session.can_moderate("#lobby"))
        watcher, alice = Client("watcher"), Client("alice")
        await watcher.connect(nursery, irc_server.port, "#lobby")
        await alice.connect(nursery, irc_server.port, "#lobby")
        await alice.say("#lobby", "you idiot")
        warning = await alice.wait_for(lambda line: line.command == "NOTICE"
                                       and line.params[0] == "alice")
        assert "keep it friendly" in warning.params[1]
        await alice.say("#lobby", "you idiot again")
        ban = await watcher.wait_for(lambda line: line.command == "MODE" and "+b" in line.params)
        banned_at = time.time()
        assert ban.params[:2] == ["#lobby", "+b"]
        mask = ban.params[2]
        # The first sink is replaced (a reload) before the timeout ends: the next one lifts it.
        pending = orjson.loads((tmp_path / "irc-unbans-irc-actions.json").read_bytes())
        assert [entry[:2] for entry in pending] == [["#lobby", mask]]
        second = IrcActionSink("irc-actions", IrcSinkConfig(state_dir=str(tmp_path)))
        pipeline.replace_sinks([recorder, second])
        unban = await watcher.wait_for(lambda line: line.command == "MODE" and "-b" in line.params)
        assert time.time() - banned_at >= TIMEOUT - 0.1
        assert unban.params == ["#lobby", "-b", mask]
    assert (first.statistics()["timeout"], first.statistics()["unban"]) == (1, 0)
    assert second.statistics()["unban"] == 1
    assert orjson.loads((tmp_path / "irc-unbans-irc-actions.json").read_bytes()) == []
    steps = [(d.strikes, d.step, d.duration) for d in recorder.decisions if d.step]
    assert steps == [(1, "warn", None), (2, "timeout 2s", TIMEOUT)]
    # Nothing is kicked for a warning or a timeout: alice is still in the channel.
    assert not any(line.command == "KICK" for line in alice.lines)
    await watcher.aclose()
    await alice.aclose()
    pipeline.abort()


# A daemon restart: the restarted bot is no channel operator (the watcher holds the channel),
# so it acts as an IRC operator (the source's `oper_name`), as moderation bots are run.
DAEMON_CONFIG = """
[daemon]
drain_timeout = 2.0
stats_interval = 0
state_dir = "{state}"
[engine]
primary = "wordlist"
[engines.wordlist]
delete = ["idiot"]
[policy.ladder]
steps = ["timeout {timeout:g}s"]
[[sources]]
type = "irc"
port = {port}
nick = "modbot"
channels = ["#lobby"]
reconnect_initial = 0.2
reconnect_max = 0.5
flood_rate = 5.0
oper_name = "{oper}"
oper_password_env = "IRC_OPER_PASSWORD"
[[sinks]]
type = "irc"
"""
RESTART_TIMEOUT = 3.0
OPER_PASSWORD_ENV = {"IRC_OPER_PASSWORD": OPER_PASSWORD}


@pytest.fixture(params=sorted(IRC_SERVERS))
def oper_irc_server(request: pytest.FixtureRequest,
                    tmp_path: Path) -> Iterator[LoopbackServer]:
    server = IRC_SERVERS[request.param](tmp_path / "server", oper=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class IrcDaemon:
    """``chatmod run`` with an irc source and sink on ``port``; its stderr in ``log``."""

    def __init__(self, tmp_path: Path, port: int, name: str) -> None:
        config = tmp_path / f"{name}.toml"
        config.write_text(DAEMON_CONFIG.format(state=tmp_path / "state", port=port,
                                               timeout=RESTART_TIMEOUT, oper=OPER_NAME))
        self.log = tmp_path / f"{name}.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                chatmod_command("run", "-c", str(config)), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ,
                                                               **OPER_PASSWORD_ENV})

    def logged(self, text: str) -> bool:
        return text in self.log.read_text()

    async def ready(self) -> None:
        """Registered, an IRC operator, and in #lobby (without channel-operator status)."""
        await eventually(lambda: self.process.poll() is not None or (
            self.logged("logged in as IRC operator") and self.logged("joined #lobby")), 20)
        assert self.process.poll() is None, self.log.read_text()

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise


def pending_unbans(tmp_path: Path) -> list[list[object]]:
    saved: list[list[object]] = orjson.loads(
        (tmp_path / "state" / "irc-unbans-irc.json").read_bytes())
    return saved


async def test_a_timeout_set_before_a_restart_is_lifted_by_the_restarted_daemon(
        oper_irc_server: LoopbackServer, nursery: trio.Nursery, tmp_path: Path) -> None:
    watcher, alice = Client("watcher"), Client("alice")
    daemons: list[IrcDaemon] = []
    try:
        with trio.fail_after(45):
            # The watcher joins first: it is the channel operator, and the channel (with its
            # bans) outlives the bot's restart.
            await watcher.connect(nursery, oper_irc_server.port, "#lobby")
            await alice.connect(nursery, oper_irc_server.port, "#lobby")
            first = IrcDaemon(tmp_path, oper_irc_server.port, "first")
            daemons.append(first)
            await first.ready()
            await alice.say("#lobby", "you idiot")
            ban = await watcher.wait_for(
                lambda line: line.command == "MODE" and "+b" in line.params)
            banned_at = time.time()
            assert ban.params[:2] == ["#lobby", "+b"]
            assert ban.hostmask.nickname == "modbot"
            mask = ban.params[2]
            assert first.stop() == 0, first.log.read_text()
            # Stopped before the timeout ended: the ban is set and its lifting pending.
            assert time.time() - banned_at < RESTART_TIMEOUT, "stopping took too long"
            assert not any(line.command == "MODE" and "-b" in line.params
                           for line in watcher.lines)
            assert [entry[:2] for entry in pending_unbans(tmp_path)] == [["#lobby", mask]]
            # Until the server has closed the first bot's connection its nick is taken, and
            # the second would (rightly) log in as modbot_: wait for the server's QUIT.
            await watcher.wait_for(lambda line: line.command == "QUIT"
                                   and line.hostmask.nickname == "modbot")
            second = IrcDaemon(tmp_path, oper_irc_server.port, "second")
            daemons.append(second)
            unban = await watcher.wait_for(
                lambda line: line.command == "MODE" and "-b" in line.params, within=30)
            assert unban.params == ["#lobby", "-b", mask]
            assert unban.hostmask.nickname == "modbot"
            assert time.time() - banned_at >= RESTART_TIMEOUT - 0.1
            await eventually(lambda: pending_unbans(tmp_path) == [])
            assert second.logged("logged in as IRC operator")
            assert not second.logged("not operator in")
            assert second.stop() == 0, second.log.read_text()
    finally:
        for daemon in daemons:
            if daemon.process.poll() is None:
                daemon.process.kill()
                daemon.process.wait(timeout=5)
        await watcher.aclose()
        await alice.aclose()
    for daemon in daemons:
        assert OPER_PASSWORD not in daemon.log.read_text()


async def test_a_timeout_that_ended_while_no_daemon_ran_is_lifted_at_start(
        oper_irc_server: LoopbackServer, nursery: trio.Nursery, tmp_path: Path) -> None:
    watcher = Client("watcher")
    mask = "*!*@offender.example"
    daemon: IrcDaemon | None = None
    try:
        with trio.fail_after(45):
            await watcher.connect(nursery, oper_irc_server.port, "#lobby")
            await watcher.send("MODE", "#lobby", "+b", mask)
            await watcher.wait_for(lambda line: line.command == "MODE" and "+b" in line.params)
            # A daemon set this ban, and was stopped; its timeout ended an hour ago.
            write_private(tmp_path / "state" / "irc-unbans-irc.json", orjson.dumps(
                [["#lobby", mask, time.time() - 3600]]).decode())
            daemon = IrcDaemon(tmp_path, oper_irc_server.port, "late")
            unban = await watcher.wait_for(
                lambda line: line.command == "MODE" and "-b" in line.params, within=30)
            assert unban.params == ["#lobby", "-b", mask]
            assert unban.hostmask.nickname == "modbot"
            await eventually(lambda: pending_unbans(tmp_path) == [])
            assert daemon.stop() == 0, daemon.log.read_text()
    finally:
        if daemon is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=5)
        await watcher.aclose()
