"""Our websocket ends against an independent implementation (trio-websocket), both ways:
the daemon's client against a trio-websocket server, a trio-websocket client against the
sandbox."""

from __future__ import annotations

from functools import partial

import orjson
import pytest
import trio
import trio_websocket

from chatmod.chatsight.ws_client import (
    ABNORMAL_CLOSURE,
    WsConnection,
    WsTarget,
)
from chatmod.errors import UpgradeRejected
from chatmod.sandbox.server import Sandbox

KEY = "interop-key-123456"


async def start_server(nursery: trio.Nursery, handler: object) -> int:
    server = await nursery.start(partial(
        trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
    port: int = server.port
    return port


async def connect(port: int, path: str = "/chat") -> tuple[WsConnection, trio.SocketStream]:
    target = WsTarget.from_url(f"ws://127.0.0.1:{port}{path}")
    stream = await target.open_stream()
    assert isinstance(stream, trio.SocketStream)
    try:
        ws = await WsConnection.handshake(stream, target, [(b"x-test", b"1")],
                                          ["echo-protocol"])
    except BaseException:
        await stream.aclose()
        raise
    return ws, stream


async def test_client_against_trio_websocket_server(nursery: trio.Nursery) -> None:
    seen: dict[str, object] = {}

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        seen["path"] = request.path
        seen["header"] = dict(request.headers).get(b"x-test")
        ws = await request.accept(subprotocol="echo-protocol")
        for _ in range(3):
            message = await ws.get_message()
            await ws.send_message(f"echo:{message}")
        await ws.send_message(b"\x00binary")
        with trio.fail_after(5):
            await ws.ping(b"srv1")  # returns once our client answered with a pong
        await ws.aclose(code=4000)

    port = await start_server(nursery, handler)
    ws, stream = await connect(port)
    assert ws.subprotocol == "echo-protocol"
    texts: list[str] = []
    binaries: list[bytes] = []
    async with stream, trio.open_nursery() as tasks:
        tasks.start_soon(ws.write)
        for text in ("one", "two", "x" * 200_000):  # the last arrives in several reads
            await ws.send_text(text)
        with trio.fail_after(5):
            await ws.read(texts.append, binaries.append)
        tasks.cancel_scope.cancel()
    assert texts == ["echo:one", "echo:two", "echo:" + "x" * 200_000]
    assert binaries == [b"\x00binary"]
    assert ws.close_code == 4000
    assert (seen["path"], seen["header"]) == ("/chat", b"1")


async def test_client_pings_and_sees_a_cut(nursery: trio.Nursery) -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.get_message()
        # Close the TCP stream under the websocket: no close frame.
        await ws._stream.aclose()  # type: ignore[attr-defined]

    port = await start_server(nursery, handler)
    ws, stream = await connect(port)
    ended = trio.Event()

    async def read() -> None:
        await ws.read(lambda text: None, lambda data: None)
        ended.set()

    async with stream, trio.open_nursery() as tasks:
        tasks.start_soon(ws.write)
        tasks.start_soon(read)
        with trio.fail_after(5):
            await ws.ping()  # the pong comes from trio-websocket's reader
        await ws.send_text("bye")
        with trio.fail_after(5):
            await ended.wait()
        tasks.cancel_scope.cancel()
    assert ws.close_code == ABNORMAL_CLOSURE


async def test_refused_upgrade_reports_the_status(nursery: trio.Nursery) -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(401, body=b"no")

    port = await start_server(nursery, handler)
    with pytest.raises(UpgradeRejected) as caught:
        await connect(port)
    assert caught.value.status == 401


async def test_trio_websocket_client_against_the_sandbox(nursery: trio.Nursery) -> None:
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    await nursery.start(sandbox.serve)
    async with trio_websocket.open_websocket_url(
        sandbox.ws_url(), subprotocols=["echo-protocol"],
        extra_headers=[(b"x-chatsight-api-auth", KEY.encode())],
    ) as ws:
        assert ws.subprotocol == "echo-protocol"
        await ws.send_message(orjson.dumps({"sample": "you idiot", "reference": "r-1"}).decode())
        with trio.fail_after(5):
            reply = orjson.loads(await ws.get_message())
            await ws.ping()
    assert reply["response"]["metadata"]["self_reference"] == "r-1"
    assert reply["response"]["suggestedAction"][0] == "delete"
