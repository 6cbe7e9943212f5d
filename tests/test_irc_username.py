"""Username checks on IRC: someone joining (or taking a new nick) is checked with Chatsight
(the sandbox, rejecting a chosen name) and kicked by the bot when the name is rejected;
against real IRC servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from chatmod.config.schema import Secret
from chatmod.config.sections import PolicySection
from chatmod.core.engine_chain import EngineChain
from chatmod.core.pipeline import Pipeline
from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine
from chatmod.plugins.irc import IrcActionSink, IrcSinkConfig, IrcSource, IrcSourceConfig
from chatmod.policy.rules import Policy
from chatmod.sandbox.server import Sandbox

from .helpers import RecordingSink, eventually
from .irc_client import Client
from .servers import IRC_SERVERS, LoopbackServer

API_KEY = "c.test.username-0123456789"


@pytest.fixture(params=sorted(IRC_SERVERS))
def irc_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoopbackServer]:
    server = IRC_SERVERS[request.param](tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_a_joining_user_whose_name_is_rejected_is_kicked(
        irc_server: LoopbackServer, nursery: trio.Nursery) -> None:
    sandbox = Sandbox(api_key=API_KEY, verdicts="wordlist", rejected_usernames={"badguy", "troll"})
    await nursery.start(sandbox.serve)
    engine = ChatsightEngine("chatsight", ChatsightConfig(
        api_key=Secret("test", API_KEY), ws_url=sandbox.ws_url(), http_url=sandbox.http_url(),
        verdict_timeout=30.0))
    source = IrcSource("irc", IrcSourceConfig(
        port=irc_server.port, nick="modbot", channels=("#lobby",), reconnect_initial=0.2,
        reconnect_max=0.5, flood_rate=5.0, check_usernames=True))
    recorder = RecordingSink()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=30),
                        Policy(PolicySection()),
                        [recorder, IrcActionSink("irc-actions", IrcSinkConfig())])
    nursery.start_soon(pipeline.run)
    with trio.fail_after(30):
        await eventually(lambda: source.connection.session is not None
                         and source.connection.session.can_moderate("#lobby"))
        friend = Client("friend")
        await friend.connect(nursery, irc_server.port, "#lobby")
        badguy = Client("badguy")
        await badguy.connect(nursery, irc_server.port, "#lobby")
        kick = await badguy.wait_for(lambda line: line.command == "KICK")
        assert kick.params[:2] == ["#lobby", "badguy"]
        # friend, allowed, takes a rejected name: checked again, and kicked.
        await friend.send("NICK", "Troll")
        renamed = await friend.wait_for(
            lambda line: line.command == "KICK" and line.params[1] == "Troll")
        assert renamed.params[0] == "#lobby"
        await eventually(lambda: len(recorder.decisions) == 3)
    by_author = {d.message.author: d for d in recorder.decisions}
    joined = by_author["badguy"]
    assert (joined.verdict.action, joined.action, joined.reason) == (
        "reject", "kick", "username check: reject")
    assert joined.to_record()["event"] == "join"
    assert (by_author["friend"].verdict.action, by_author["friend"].action) == ("allow", "none")
    assert by_author["Troll"].action == "kick"
    assert sandbox.stats["username_reject"] == 2
    await friend.aclose()
    await badguy.aclose()
    pipeline.abort()
