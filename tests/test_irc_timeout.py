"""A ladder's `timeout` on IRC: the bot bans (`MODE +b`) and lifts the ban (`-b`) when the
timeout ends, also when the sink that set it was replaced in between (the pending unban is
kept under state_dir); against real IRC servers, with a 2-second timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trio

from chatmod.config.sections import LadderSection, PolicySection
from chatmod.core.engine_chain import EngineChain
from chatmod.core.pipeline import Pipeline
from chatmod.plugins.irc import IrcActionSink, IrcSinkConfig, IrcSource, IrcSourceConfig
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.escalation import Escalation
from chatmod.policy.rules import Policy
from chatmod.state.strikes import MemoryStrikeStore

from .helpers import RecordingSink, eventually
from .irc_client import Client
from .servers import IRC_SERVERS, LoopbackServer

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
                        Policy(policy), [recorder, first])
    pipeline.escalation = Escalation(policy, MemoryStrikeStore())
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
