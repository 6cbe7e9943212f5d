"""Discuse: the protocol on the document's own sample, and the engine against the sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from chatmod.config.schema import Secret
from chatmod.core.engine_chain import EngineChain
from chatmod.core.model import Message
from chatmod.errors import EngineError, ProtocolError
from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine
from chatmod.plugins.discuse import DiscuseConfig, DiscuseEngine
from chatmod.protocols.discuse import (
    check_request,
    media_urls,
    parse_check_reply,
    verdict_for,
)
from chatmod.sandbox.server import Sandbox

from .helpers import decision_lines, run_chatmod
from .servers import SandboxProcess, free_port

DOC_REPLY = (Path(__file__).parent / "data" / "discuse_reply.json").read_bytes()


def test_documented_reply_parses_and_maps_to_a_verdict() -> None:
    result = parse_check_reply(DOC_REPLY)
    assert result.scores["toxic"] == pytest.approx(0.78711975)
    assert result.scores["images.porn"] == pytest.approx(0.068999981880188)
    assert set(result.hits) == {"sentiment", "images", "language"}
    assert verdict_for(result, 0.5, 0.9) == ("flag", pytest.approx(0.7888968))
    assert verdict_for(result, 0.5, 0.75)[0] == "delete"


def doc_reply_clean() -> dict[str, Any]:
    """The document's sample with nothing over any threshold (a pass, as it stands)."""
    reply: dict[str, Any] = orjson.loads(DOC_REPLY)
    reply["language"].update(detected="en", hit=False)
    reply["sentiment"].update(toxic=0.01, profanity=0.02, threat=0.0, insult=0.01, hit=False)
    reply["images"].update(porn=0.01, sexual=0.02, hit=False)
    reply["hits"] = False
    assert verdict_for(parse_check_reply(orjson.dumps(reply)), 0.5, 0.9)[0] == "pass"
    return reply


@pytest.mark.parametrize("section", ["images", "gifs"])
def test_media_that_could_not_be_checked_is_flagged_not_passed(section: str) -> None:
    # The document: images.status "can be ok or error", and media that is not publicly
    # reachable cannot be moderated. An error is an image nobody looked at.
    reply = doc_reply_clean()
    reply[section] = {"result": {}, "status": "error", "hit": False}
    result = parse_check_reply(orjson.dumps(reply))
    assert result.unchecked == (section,)
    assert verdict_for(result, 0.5, 0.9) == ("flag", pytest.approx(0.02))
    # Text bad enough to delete is deleted whatever the image holds.
    reply["sentiment"]["toxic"] = 0.95
    assert verdict_for(parse_check_reply(orjson.dumps(reply)), 0.5, 0.9)[0] == "delete"
    # Only "error" means unchecked: the document's "ok", and sections with no media, do not.
    reply = doc_reply_clean()
    assert parse_check_reply(orjson.dumps(reply)).unchecked == ()


def test_overall_hits_with_no_section_hit_is_a_flag() -> None:
    reply = doc_reply_clean()
    reply["hits"] = True  # the overall result says a threshold was crossed
    result = parse_check_reply(orjson.dumps(reply))
    assert result.hits == ("hits",)
    assert verdict_for(result, 0.5, 0.9)[0] == "flag"
    # A section the document does not name (added later) that says it was hit counts too.
    reply = doc_reply_clean()
    reply["spam"] = {"status": "ok", "hit": True}
    assert parse_check_reply(orjson.dumps(reply)).hits == ("spam",)


def test_request_shape_and_media_from_text() -> None:
    images, gifs = media_urls("look https://x.test/cat.PNG?s=1 and https://x.test/a.gif "
                              "and https://x.test/page", ["https://cdn.test/pic"])
    assert images == ["https://cdn.test/pic", "https://x.test/cat.PNG?s=1"]
    assert gifs == ["https://x.test/a.gif"]
    body = orjson.loads(check_request("hi", images, gifs, "alice", 31337))
    assert body == {"request": {"media": {"text": "hi", "image_url": images, "gif_url": gifs},
                                "user_id": "alice"}, "settings": {"project_id": 31337}}
    with pytest.raises(ProtocolError):
        parse_check_reply(b'{"nothing": "here"}')


async def start(nursery: trio.Nursery) -> Sandbox:
    sandbox = Sandbox(verdicts="wordlist")
    await nursery.start(sandbox.serve)
    return sandbox


async def discuse(nursery: trio.Nursery, sandbox: Sandbox, **options: Any) -> DiscuseEngine:
    config = DiscuseConfig(client_id=Secret("t", sandbox.discuse_client_id),
                           client_secret=Secret("t", options.pop("secret",
                                                                 sandbox.discuse_client_secret)),
                           url=sandbox.http_url(), project_id=7, **options)
    engine = DiscuseEngine("discuse", config)
    await nursery.start(engine.run)
    return engine


async def test_text_and_image_messages_get_verdicts(nursery: trio.Nursery) -> None:
    sandbox = await start(nursery)
    engine = await discuse(nursery, sandbox)
    clean = await engine.moderate(Message(id="1", text="hello", source="t", author="al"))
    rude = await engine.moderate(Message(id="2", text="you idiot", source="t"))
    image = await engine.moderate(Message(id="3", text="see this", source="t",
                                          images=("https://img.test/nsfw.jpg",)))
    assert (clean.action, clean.engine, clean.route) == ("pass", "discuse", "http")
    assert rude.action == "delete"
    assert image.action == "delete"
    assert image.scores["images.porn"] == pytest.approx(0.95)
    unreachable = await engine.moderate(Message(id="4", text="see this", source="t",
                                                images=("https://img.test/unreachable.png",)))
    assert unreachable.action == "flag"  # was "pass": an image nobody could look at
    assert unreachable.scores["unchecked"] == ["images"]
    assert sandbox.stats["discuse_checked"] == 4


async def test_refused_credentials_are_an_engine_error(nursery: trio.Nursery) -> None:
    sandbox = await start(nursery)
    engine = await discuse(nursery, sandbox, secret="wrong-secret-value")
    with pytest.raises(EngineError, match="refused the client id or secret"):
        await engine.moderate(Message(id="1", text="hello", source="t"))


async def test_discuse_answers_when_chatsight_is_down(nursery: trio.Nursery) -> None:
    sandbox = await start(nursery)
    chatsight = ChatsightEngine("chatsight", ChatsightConfig(
        api_key=Secret("t", "c.not-the-sandbox-key"), ws_url=sandbox.ws_url(),
        http_url=sandbox.http_url(), use_websocket=False))
    await nursery.start(chatsight.run)
    backup = await discuse(nursery, sandbox)
    chain = EngineChain([chatsight, backup], "flag", timeout=30)
    verdict = await chain.moderate(Message(id="1", text="you idiot", source="t"))
    assert (verdict.engine, verdict.route, verdict.action) == ("discuse", "fallback", "delete")


@pytest.mark.slow
def test_daemon_with_discuse_primary_then_as_chatsights_fallback(tmp_path: Path) -> None:
    env = {"CHATSIGHT_API_KEY": "c.discuse-test-0123456789", "DISCUSE_ID": "sandbox-client",
           "DISCUSE_SECRET": "sandbox-secret"}
    lines = (b'{"id": "t", "text": "hello there"}\n'
             b'{"id": "r", "text": "you idiot"}\n'
             b'{"id": "i", "text": "look", "images": ["https://img.test/nsfw.png"]}\n'
             b'{"id": "l", "text": "look https://img.test/nsfw.gif"}\n')
    with SandboxProcess(tmp_path, env["CHATSIGHT_API_KEY"]) as sandbox:
        discuse = (f"[engines.discuse]\nurl = '{sandbox.http_url}'\nclient_id_env = 'DISCUSE_ID'\n"
                   "client_secret_env = 'DISCUSE_SECRET'\nproject_id = 1\n")
        io = "[[sources]]\ntype = 'stdin'\nformat = 'jsonl'\n[[sinks]]\ntype = 'jsonl'\npath = '-'\n"
        primary = tmp_path / "primary.toml"
        primary.write_text("[engine]\nprimary = 'discuse'\nfallback = 'flag'\n" + discuse + io)
        result = run_chatmod("run", "-c", str(primary), input=lines, env=env)
        assert result.returncode == 0, result.stderr.decode()
        by_id = {d["id"]: d for d in decision_lines(result.stdout)}
        assert {i: (d["engine"], d["route"], d["verdict"]) for i, d in by_id.items()} == {
            "t": ("discuse", "http", "pass"), "r": ("discuse", "http", "delete"),
            "i": ("discuse", "http", "delete"), "l": ("discuse", "http", "delete")}
        down = free_port()  # nothing listens here: Chatsight is down
        fallback = tmp_path / "fallback.toml"
        fallback.write_text(
            "[engine]\nprimary = 'chatsight'\nfallback = ['discuse', 'flag']\n"
            f"[engines.chatsight]\nws_url = 'ws://127.0.0.1:{down}/text/moderation'\n"
            f"http_url = 'http://127.0.0.1:{down}'\napi_key_env = 'CHATSIGHT_API_KEY'\n"
            "http_retries = 0\nconnect_timeout = 1.0\n" + discuse + io)
        result = run_chatmod("run", "-c", str(fallback), input=lines, env=env)
        assert result.returncode == 0, result.stderr.decode()
        decisions = decision_lines(result.stdout)
        assert len(decisions) == 4
        assert {(d["engine"], d["route"]) for d in decisions} == {("discuse", "fallback")}
        assert {d["id"]: d["verdict"] for d in decisions} == {
            "t": "pass", "r": "delete", "i": "delete", "l": "delete"}
    for secret in env.values():
        assert secret.encode() not in result.stdout + result.stderr
