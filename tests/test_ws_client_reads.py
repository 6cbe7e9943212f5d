"""The websocket reader's list per read (``on_texts``): every text of a read in one list, in
stream order around the frames wsproto handles (fragments, binary, pings, close), and the same
texts as the one-by-one callback gets."""

from __future__ import annotations

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from chatmod.chatsight.ws_client import WsConnection

from .test_ws_client_limits import open_connection


def server_frames() -> WSConnection:
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="h", target="/")))
    list(server.events())
    server.send(AcceptConnection())
    return server


def one_read() -> bytes:
    """One read holding texts before, between and after the frames wsproto handles."""
    server = server_frames()
    return b"".join([
        server.send(TextMessage(data="a")),
        server.send(TextMessage(data="b")),
        server.send(TextMessage(data="frag", message_finished=False)),
        server.send(TextMessage(data="mented")),
        server.send(TextMessage(data="c")),
        server.send(BytesMessage(data=b"\x00")),
        server.send(Ping(payload=b"p")),
        server.send(TextMessage(data="d")),
        server.send(TextMessage(data="e")),
        server.send(CloseConnection(code=1000)),
    ])


async def read_all(ws: WsConnection, *, lists: bool) -> list[object]:
    seen: list[object] = []

    def on_texts(texts: list[str]) -> None:
        seen.append(list(texts))

    with trio.fail_after(5):
        await ws.read(lambda text: seen.append(text), lambda data: seen.append(data),
                      on_texts if lists else None)
    return seen


async def test_texts_of_a_read_come_as_lists_in_stream_order() -> None:
    seen = await read_all(open_connection([one_read()]), lists=True)
    # wsproto assembles the fragmented message (after the texts before it); the binary frame
    # splits the lists; the ping is answered, not handed on.
    assert seen == [["a", "b"], "fragmented", ["c"], b"\x00", ["d", "e"]]


async def test_lists_hold_the_same_texts_as_one_by_one() -> None:
    data = one_read()
    in_lists = await read_all(open_connection([data]), lists=True)
    one_by_one = await read_all(open_connection([data]), lists=False)
    flattened = [t for item in in_lists for t in (item if isinstance(item, list) else [item])]
    assert flattened == one_by_one
    assert one_by_one == ["a", "b", "fragmented", "c", b"\x00", "d", "e"]


async def test_each_read_gets_its_own_list() -> None:
    server = server_frames()
    reads = [server.send(TextMessage(data="1")) + server.send(TextMessage(data="2")),
             server.send(TextMessage(data="3")),
             server.send(CloseConnection(code=1000))]
    seen = await read_all(open_connection(reads), lists=True)
    assert seen == [["1", "2"], ["3"]]
