"""The websocket client against what a server may send: an endless message is cut off with
1009 instead of filling memory, and any bytes at all end the reader cleanly."""

from __future__ import annotations

import os
from functools import partial

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from chatmod.chatsight.ws_client import MAX_MESSAGE_SIZE, MESSAGE_TOO_BIG, WsConnection, WsTarget

FRAGMENT = 64 * 1024
EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300


async def serve_messages(sizes: list[int], closes: list[int], closed: trio.Event,
                         stream: trio.SocketStream) -> None:
    """Accept the upgrade, send one text message of each size (fragments of 64 KiB) and a
    close frame, then note the close code the client sends."""
    server = WSConnection(ConnectionType.SERVER)
    while True:
        server.receive_data(await stream.receive_some(65536))
        if any(isinstance(event, Request) for event in server.events()):
            break
    await stream.send_all(server.send(AcceptConnection()))
    try:
        for size in sizes:
            for start in range(0, size, FRAGMENT):
                piece = min(FRAGMENT, size - start)
                await stream.send_all(server.send(TextMessage(
                    data="x" * piece, message_finished=start + piece >= size)))
        await stream.send_all(server.send(CloseConnection(code=1000)))
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            server.receive_data(data)
            for event in server.events():
                if isinstance(event, CloseConnection):
                    closes.append(event.code)
                    closed.set()
                    return
    except trio.BrokenResourceError:
        return  # the client closed while we were still sending


async def read_from(nursery: trio.Nursery, sizes: list[int], closed: trio.Event
                    ) -> tuple[WsConnection, list[int], list[int]]:
    closes: list[int] = []
    listeners = await nursery.start(partial(trio.serve_tcp, host="127.0.0.1"),
                                    partial(serve_messages, sizes, closes, closed), 0)
    port = listeners[0].socket.getsockname()[1]
    target = WsTarget.from_url(f"ws://127.0.0.1:{port}/text/moderation")
    received: list[int] = []
    async with await target.open_stream() as stream:
        ws = await WsConnection.handshake(stream, target, headers=[], subprotocols=[])
        async with trio.open_nursery() as inner:
            inner.start_soon(ws.write)
            await ws.read(lambda text: received.append(len(text)), lambda data: None)
            inner.cancel_scope.cancel()
    return ws, received, closes


async def test_an_endless_message_is_cut_off_with_1009(nursery: trio.Nursery) -> None:
    closed = trio.Event()
    with trio.fail_after(20):
        ws, received, closes = await read_from(nursery, [MAX_MESSAGE_SIZE + FRAGMENT], closed)
        await closed.wait()  # the server reads our close frame
    assert received == []
    assert ws.close_code == MESSAGE_TOO_BIG
    assert closes == [MESSAGE_TOO_BIG]


async def test_messages_under_the_limit_all_arrive(nursery: trio.Nursery) -> None:
    # Each under the limit, together over it: the limit is per message.
    big = MAX_MESSAGE_SIZE * 3 // 4
    with trio.fail_after(20):
        ws, received, _ = await read_from(nursery, [big, big, 10], trio.Event())
    assert received == [big, big, 10]
    assert ws.close_code == 1000  # the server's close, not ours


class ScriptedStream:
    """Hands out ``chunks``, then end of stream; keeps what is sent."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent: list[bytes] = []

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def send_all(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def open_connection(chunks: list[bytes]) -> WsConnection:
    """A client connection past its handshake, reading ``chunks``."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="127.0.0.1", target="/text/moderation")))
    assert any(isinstance(event, Request) for event in server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert any(isinstance(event, AcceptConnection) for event in client.events())
    return WsConnection(ScriptedStream(chunks), client, None)  # type: ignore[arg-type]


def frames() -> bytes:
    """Well-formed server frames of every kind, to damage."""
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/")))
    list(server.events())
    server.send(AcceptConnection())
    return b"".join([
        server.send(TextMessage(data='{"response": {}}')),
        server.send(TextMessage(data="part", message_finished=False)),
        server.send(TextMessage(data="ial")),
        server.send(BytesMessage(data=b"\x00\xff")),
        server.send(Ping(payload=b"p")),
        server.send(CloseConnection(code=1000)),
    ])


FRAMES = frames()


@st.composite
def server_bytes(draw: st.DrawFn) -> list[bytes]:
    data = draw(st.binary(max_size=300) | st.builds(
        lambda cut, junk, end: FRAMES[:cut] + junk + FRAMES[end:],
        st.integers(0, len(FRAMES)), st.binary(max_size=6), st.integers(0, len(FRAMES))))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(server_bytes())
@example([b"\x81\x7f" + b"\xff" * 8])  # a 64-bit length no message can have
@example([b"\x81\x02\xc3\x28"])  # invalid UTF-8 in a text frame
def test_any_bytes_from_the_server_end_the_reader_cleanly(chunks: list[bytes]) -> None:
    ws = open_connection(list(chunks))
    texts: list[str] = []
    trio.run(ws.read, texts.append, lambda data: None)
    assert ws.close_code is not None
    assert all(isinstance(text, str) for text in texts)


@pytest.mark.parametrize("close_code", [1000, 1011, 4000])
def test_a_close_frame_from_the_server_is_answered(close_code: int) -> None:
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/")))
    list(server.events())
    server.send(AcceptConnection())
    ws = open_connection([server.send(CloseConnection(code=close_code))])
    trio.run(ws.read, lambda text: None, lambda data: None)
    assert ws.close_code == close_code
