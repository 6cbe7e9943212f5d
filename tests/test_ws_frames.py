"""chatmod's own text-frame codec (chatsight/ws_frames.py) against wsproto, differentially.

- Outgoing: for the same masking keys, :func:`encode_text_frames` gives byte for byte what
  wsproto sends for the same texts, and wsproto's server side reads the texts back.
- Incoming: :meth:`WsConnection.read` (ws_frames for whole text frames, wsproto for the rest)
  and the reader it replaced (every byte through wsproto; kept below as the reference) see the
  same texts, binaries, pongs, close code and answers for any stream of frames: text, binary,
  fragments, pings, pongs, close frames, reserved bits, masks, lengths in too many bytes,
  invalid UTF-8, oversized messages, garbage, cut into reads anywhere.

Examples per property: 200, or 10,000 with ``HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from typing import Any
from unittest import mock

import trio
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from chatmod.chatsight import ws_client
from chatmod.chatsight.ws_client import WsConnection
from chatmod.chatsight.ws_frames import IncomingFrames, encode_text_frames

PONG_PAYLOADS = (b"p1", b"p2")  # pongs the connection waits for


def open_pair() -> tuple[WSConnection, WSConnection]:
    """A client and a server wsproto connection, both past the handshake."""
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="example.test", target="/text/moderation")))
    assert isinstance(next(server.events()), Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    return client, server


def server_reads(server: WSConnection, data: bytes) -> list[tuple[str, Any]]:
    """What a wsproto server makes of the bytes a client sent."""
    server.receive_data(data)
    seen: list[tuple[str, Any]] = []
    for event in server.events():
        if isinstance(event, (TextMessage, BytesMessage)):
            seen.append((type(event).__name__, (event.data, event.message_finished)))
        elif isinstance(event, (Ping, Pong)):
            seen.append((type(event).__name__, bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            seen.append(("CloseConnection", event.code))
        else:
            seen.append((type(event).__name__, None))
    return seen


# --- outgoing ---------------------------------------------------------------------------------

texts = st.lists(
    st.one_of(st.text(max_size=300), st.text(min_size=126, max_size=400).map(lambda t: t * 200)),
    max_size=12,
)


@given(texts=texts, data=st.data())
@example(texts=["", "a" * 125, "b" * 126, "c" * 65535, "d" * 65536], data=None)
@example(texts=["e" * 2047, "f" * 2048, "g" * 172, "h" * 127], data=None)  # the header table's ends
def test_encoded_frames_equal_wsprotos(texts: list[str], data: st.DataObject | None) -> None:
    keys = (data.draw(st.binary(min_size=4 * len(texts), max_size=4 * len(texts)))
            if data is not None else bytes(range(4 * len(texts))))
    payloads = [text.encode() for text in texts]
    ours = encode_text_frames(payloads, keys)

    client, server = open_pair()
    key_chunks = iter([keys[i:i + 4] for i in range(0, len(keys), 4)])
    with mock.patch("wsproto.frame_protocol.os.urandom", side_effect=key_chunks):
        theirs = b"".join(client.send(TextMessage(data=text)) for text in texts)
    assert ours == theirs
    read_back = server_reads(server, ours)
    joined: list[str] = []
    part = ""
    for kind, (text, finished) in read_back:
        assert kind == "TextMessage"
        part += text
        if finished:
            joined.append(part)
            part = ""
    assert joined == texts


def test_each_frame_gets_its_own_random_mask() -> None:
    payload = b"x" * 40
    frames = encode_text_frames([payload] * 8)
    keys = {frames[i * 46 + 2:i * 46 + 6] for i in range(8)}  # 2 header + 4 key + 40 payload
    assert len(keys) == 8
    assert payload not in frames


# --- incoming ---------------------------------------------------------------------------------


def frame(first: int, payload: bytes, *, mask: bytes | None = None, width: int | None = None
          ) -> bytes:
    """A raw frame: ``first`` byte as given, the length in ``width`` bytes (1, 2 or 8;
    minimal by default), masked with ``mask`` if given."""
    size = len(payload)
    if width is None:
        width = 1 if size < 126 else 2 if size < 0x10000 else 8
    mask_bit = 0x80 if mask is not None else 0
    if width == 1:
        header = bytes((first, mask_bit | size))
    elif width == 2:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if mask is None:
        return header + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(
        ["text"] * 6 + ["bad-text", "binary", "fragment", "ping", "pong", "close", "odd"]))
    if kind == "text":
        return frame(0x81, draw(st.text(max_size=200)).encode(),
                     width=draw(st.sampled_from([None] * 8 + [2, 8])))
    if kind == "bad-text":
        return frame(0x81, draw(st.binary(max_size=40)) + b"\xff\xfe")
    if kind == "binary":
        return frame(0x82, draw(st.binary(max_size=200)))
    if kind == "fragment":
        text = draw(st.text(min_size=2, max_size=200)).encode()
        cut = draw(st.integers(0, len(text)))
        middle = frame(0x89, b"in-between") if draw(st.booleans()) else b""
        return frame(0x01, text[:cut]) + middle + frame(0x80, text[cut:])
    if kind == "ping":
        return frame(0x89, draw(st.binary(max_size=20)))
    if kind == "pong":
        return frame(0x8A, draw(st.sampled_from([*PONG_PAYLOADS, b"other"])))
    if kind == "close":
        body = draw(st.one_of(st.just(b""), st.builds(
            lambda code, reason: struct.pack("!H", code) + reason,
            st.sampled_from([1000, 1001, 1005, 1011, 999, 3000, 4999]),
            st.binary(max_size=10))))
        return frame(0x88, body)
    first = draw(st.integers(0, 255))
    payload = draw(st.binary(max_size=300))
    mask = draw(st.none() | st.binary(min_size=4, max_size=4))
    width = draw(st.sampled_from([None, 1, 2, 8])) if len(payload) < 126 else None
    return frame(first, payload, mask=mask, width=width)


class ScriptedStream:
    """Gives the reads it was given, then end of stream; keeps what is sent."""

    def __init__(self, reads: list[bytes]) -> None:
        self.reads = list(reads)
        self.sent: list[bytes] = []

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.reads.pop(0) if self.reads else b""

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(bytes(data))


async def reference_read(self: WsConnection, on_text: Callable[[str], None],
                         on_binary: Callable[[bytes], None]) -> None:
    """The reader before ws_frames: every byte through wsproto (the oracle)."""
    text_parts: list[str] = []
    byte_parts: list[bytes] = []
    pending = 0
    oversized = False
    protocol = self._protocol
    while not oversized:
        data = await self.stream.receive_some(ws_client.RECEIVE_SIZE)
        if not data:
            self._lost()
            return
        try:
            protocol.receive_data(bytes(data))
            for event in protocol.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    pending += len(event.data)
                    if pending > ws_client.MAX_MESSAGE_SIZE:
                        oversized = True
                        break
                    if event.message_finished:
                        pending = 0
                if isinstance(event, TextMessage):
                    if event.message_finished and not text_parts:
                        on_text(event.data)
                    else:
                        text_parts.append(event.data)
                        if event.message_finished:
                            on_text("".join(text_parts))
                            text_parts.clear()
                elif isinstance(event, BytesMessage):
                    byte_parts.append(bytes(event.data))
                    if event.message_finished:
                        on_binary(b"".join(byte_parts))
                        byte_parts.clear()
                elif isinstance(event, Ping):
                    self._queue(protocol.send(event.response()))
                elif isinstance(event, Pong):
                    waiter = self._pings.get(bytes(event.payload))
                    if waiter is not None:
                        waiter.set()
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    self._queue(protocol.send(event.response()))
                    return
        except (RemoteProtocolError, LocalProtocolError):
            self._lost()
            return
    with trio.move_on_after(ws_client.CLOSE_SEND_TIMEOUT):
        await self.close(ws_client.MESSAGE_TOO_BIG)


async def observe(reads: list[bytes], reader: str) -> dict[str, Any]:
    """Everything a reader made of ``reads``: callbacks, pongs, close code, answers sent."""
    client, server = open_pair()
    stream = ScriptedStream(reads)
    connection = WsConnection(stream, client, None)  # type: ignore[arg-type]
    pongs = {payload: trio.Event() for payload in PONG_PAYLOADS}
    connection._pings.update(pongs)
    received: list[tuple[str, Any]] = []

    def on_text(text: str) -> None:
        received.append(("text", text))

    def on_binary(data: bytes) -> None:
        received.append(("binary", data))

    if reader == "ours":
        await connection.read(on_text, on_binary)
    else:
        await reference_read(connection, on_text, on_binary)
    connection._frame_queued_texts()
    answers = b"".join(connection._outgoing) + b"".join(stream.sent)
    return {"received": received, "close_code": connection.close_code,
            "pongs": sorted(p for p, e in pongs.items() if e.is_set()),
            "answers": server_reads(server, answers)}


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    data = b"".join(draw(st.lists(frames(), max_size=12)))
    if draw(st.booleans()):
        data += draw(st.binary(max_size=30))  # garbage, or a frame cut short
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@given(reads=streams(), limit=st.sampled_from([4 * 1024 * 1024, 150]))
@example(reads=[frame(0x81, b"hello")], limit=150)
@example(reads=[frame(0x81, b"a" * 200)], limit=150)  # one frame over the limit
@example(reads=[frame(0x01, b"a" * 100) + frame(0x80, b"b" * 100)], limit=150)  # fragments over it
@example(reads=[frame(0x81, b"x" * 70000, width=8)[:5000]], limit=150)
@example(reads=[frame(0x81, b"ab", width=2) + frame(0x81, b"cd")], limit=150)  # 2-byte length
@example(reads=[frame(0x81, b"\xc3") + frame(0x81, b"ok")], limit=150)  # invalid UTF-8
@example(reads=[frame(0x81, b"ok", mask=b"abcd")], limit=150)  # a masked frame from a server
@example(reads=[frame(0x01, b"he") + frame(0x81, b"x") + frame(0x80, b"llo")], limit=150)
@example(reads=[frame(0x89, b"hi")[:1], frame(0x89, b"hi")[1:] + frame(0x81, b"after")],
         limit=150)
async def test_reader_sees_what_wsproto_alone_sees(reads: list[bytes], limit: int) -> None:
    with mock.patch.object(ws_client, "MAX_MESSAGE_SIZE", limit), trio.fail_after(10):
        ours = await observe(reads, "ours")
        theirs = await observe(reads, "reference")
    assert ours == theirs


@given(reads=st.lists(st.binary(max_size=300), max_size=8))
def test_incoming_frames_never_raises(reads: list[bytes]) -> None:
    incoming = IncomingFrames(1000)
    total_bytes = 0
    for data in reads:
        for item in incoming.receive(data):
            assert isinstance(item, (str, bytes))
            total_bytes += len(item) if isinstance(item, bytes) else 0
    assert total_bytes <= sum(len(r) for r in reads)


def test_incoming_frames_splits_texts_and_hands_on_the_rest() -> None:
    incoming = IncomingFrames(1000)
    ping = frame(0x89, b"p")
    data = frame(0x81, "héllo".encode()) + ping + frame(0x81, b"x" * 300)
    assert incoming.receive(data[:3]) == []
    assert incoming.receive(data[3:]) == ["héllo", ping, "x" * 300]
    assert not incoming.delegating
    masked = frame(0x81, b"m", mask=b"abcd")
    assert incoming.receive(masked + frame(0x81, b"later")) == [masked + frame(0x81, b"later")]
    assert incoming.delegating
    assert incoming.receive(b"anything") == [b"anything"]
