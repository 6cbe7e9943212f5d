"""A lean websocket client connection: wsproto for the protocol, trio at the edges.

Why not trio-websocket (which is built on the same wsproto): it makes a send system call
and takes a lock for every message, and hands every received message through a channel to
the reader, which costs about four times the CPU per message that this connection does
(bench/chatsight.py measures both in one run). Here one writer sends every queued frame in
one ``send_all``, and one reader parses all the frames a read brings before waking anyone.
Whole text frames, nearly all the traffic, are framed and parsed by ``ws_frames`` (a batch at
a time); wsproto does the handshake and every other frame.

One reader task (:meth:`WsConnection.read`), one writer task (:meth:`WsConnection.write`);
:meth:`send_text` only queues. The stream belongs to the caller, who closes it.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from chatmod.chatsight.ws_frames import IncomingFrames, encode_text_frames
from chatmod.errors import ConnectionLost, HandshakeFailed, UpgradeRejected

RECEIVE_SIZE = 256 * 1024
# Bytes of queued frames above which senders wait for the writer.
HIGH_WATER = 1024 * 1024
# Close code reported when the connection ended without a close frame (RFC 6455 7.1.5).
ABNORMAL_CLOSURE = 1006
# Characters or bytes one incoming message may hold. Chatsight's replies are a few KB; a peer
# sending an endless message must not grow memory without bound: closed with 1009.
MAX_MESSAGE_SIZE = 4 * 1024 * 1024
MESSAGE_TOO_BIG = 1009
# Seconds the close frame for an oversized message may take to send.
CLOSE_SEND_TIMEOUT = 1.0

# The peer named in the errors this connection raises.
PEER = "websocket"

WsStream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


@dataclass(frozen=True)
class WsTarget:
    """Where a ws:// or wss:// URL points."""

    host: str
    port: int
    resource: str
    tls: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str) -> WsTarget:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        secure = parts.scheme == "wss"
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.hostname, parts.port or (443 if secure else 80), resource,
                   ssl.create_default_context() if secure else None)

    @property
    def host_header(self) -> str:
        default = 443 if self.tls is not None else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    async def open_stream(self) -> WsStream:
        if self.tls is None:
            return await trio.open_tcp_stream(self.host, self.port)
        return await trio.open_ssl_over_tcp_stream(
            self.host, self.port, ssl_context=self.tls, https_compatible=True)


class WsConnection:
    """An open client websocket on ``stream``."""

    def __init__(self, stream: WsStream, protocol: WSConnection, subprotocol: str | None) -> None:
        self.stream = stream
        self.subprotocol = subprotocol
        self.close_code: int | None = None  # set when the connection ends
        self._protocol = protocol
        self._outgoing: list[bytes] = []  # whole frames, in order
        self._texts: list[bytes] = []  # text payloads queued after them, framed in a batch
        self._queued_bytes = 0
        self._has_output = trio.Event()
        self._drained = trio.Event()
        self._pings: dict[bytes, trio.Event] = {}

    @classmethod
    async def handshake(
        cls,
        stream: WsStream,
        target: WsTarget,
        headers: list[tuple[bytes, bytes]],
        subprotocols: list[str],
    ) -> WsConnection:
        """Send the upgrade request and wait for the answer."""
        protocol = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(protocol.send(Request(
            host=target.host_header, target=target.resource, extra_headers=headers,
            subprotocols=subprotocols)))
        status: int | None = None
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise HandshakeFailed("connection closed during the handshake", peer=PEER)
            try:
                protocol.receive_data(bytes(data))
                for event in protocol.events():
                    if isinstance(event, AcceptConnection):
                        return cls(stream, protocol, event.subprotocol)
                    if isinstance(event, RejectConnection):
                        status = event.status_code
                        if not event.has_body:
                            raise UpgradeRejected(status, peer=PEER)
                    elif isinstance(event, RejectData) and event.body_finished:
                        raise UpgradeRejected(status or 0, peer=PEER)
            except RemoteProtocolError as exc:
                raise HandshakeFailed(f"invalid handshake answer: {exc}", peer=PEER) from None

    @property
    def is_open(self) -> bool:
        return self.close_code is None

    async def send_text(self, text: str | bytes) -> None:
        """Queue a text message (``bytes``: already UTF-8); waits only while too much is
        queued already."""
        if self.queue_text(text.encode() if isinstance(text, str) else text):
            await self.wait_drained()

    def queue_text(self, payload: bytes) -> bool:
        """Queue a text message (UTF-8) without waiting: the sender's path with no coroutine
        per message. True when more than :data:`HIGH_WATER` bytes are queued: the caller must
        then :meth:`wait_drained` before queueing more (backpressure).
        :class:`~chatmod.errors.ConnectionLost` when the connection is closed."""
        return self.queue_texts([payload])

    def queue_texts(self, payloads: list[bytes]) -> bool:
        """:meth:`queue_text` for each of ``payloads`` (a list of requests), at once."""
        if self.close_code is not None:
            raise ConnectionLost(f"connection closed ({self.close_code})", peer=PEER)
        self._texts += payloads
        self._queued_bytes += sum(map(len, payloads))
        self._has_output.set()
        return self._queued_bytes > HIGH_WATER

    async def wait_drained(self) -> None:
        """Until the writer took what is queued, or the connection ended."""
        if self._queued_bytes > HIGH_WATER and self.close_code is None:
            if self._drained.is_set():
                self._drained = trio.Event()
            await self._drained.wait()

    async def ping(self) -> None:
        """Send a ping and wait for its pong (bound it with a timeout)."""
        payload = os.urandom(4)
        answered = self._pings[payload] = trio.Event()
        self._queue(self._protocol.send(Ping(payload=payload)))
        try:
            await answered.wait()
        finally:
            self._pings.pop(payload, None)

    def _queue(self, frame: bytes) -> None:
        self._frame_queued_texts()
        self._outgoing.append(frame)
        self._queued_bytes += len(frame)
        self._has_output.set()

    def _frame_queued_texts(self) -> None:
        if self._texts:
            self._outgoing.append(encode_text_frames(self._texts))
            self._texts.clear()

    async def write(self) -> None:
        """The writer task: sends whatever is queued, in one write per wake-up."""
        while True:
            await self._has_output.wait()
            self._has_output = trio.Event()
            self._frame_queued_texts()
            data = b"".join(self._outgoing)
            self._outgoing.clear()
            self._queued_bytes = 0
            self._drained.set()
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._lost()
                return

    async def read(
        self, on_text: Callable[[str], None], on_binary: Callable[[bytes], None],
        on_texts: Callable[[list[str]], None] | None = None,
    ) -> None:
        """The reader task: hands every message to the callbacks (sync, non-blocking), answers
        pings, and returns when the connection ends (``close_code`` says how). A message over
        :data:`MAX_MESSAGE_SIZE` ends it with close code 1009. With ``on_texts``, the texts a
        read decodes itself (all of them, usually) go to it as one list per read, in order;
        ``on_text`` gets those wsproto assembles (fragmented ones)."""
        if on_texts is None:
            on_texts = _one_by_one(on_text)
        frames = IncomingFrames(MAX_MESSAGE_SIZE)
        events = _WsprotoEvents(self, on_text, on_binary)
        while True:
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._lost()
                return
            try:
                texts: list[str] = []
                for item in frames.receive(bytes(data)):
                    if isinstance(item, str):
                        texts.append(item)
                        continue
                    if texts:  # before the frame: the order stays the stream's
                        on_texts(texts)
                        texts = []
                    if events.feed(item):
                        break
                if texts:
                    on_texts(texts)
            except (RemoteProtocolError, LocalProtocolError):
                self._lost()
                return
            if events.closed:
                return
            if events.oversized:
                break
        with trio.move_on_after(CLOSE_SEND_TIMEOUT):
            await self.close(MESSAGE_TOO_BIG)

    async def close(self, code: int = 1000) -> None:
        """Send a close frame (best effort); the caller closes the stream."""
        if self.close_code is not None:
            return
        self.close_code = code
        # The writer may be gone (cancelled in a blocked send): a sender waiting for it to
        # drain the queue would wait forever.
        self._drained.set()
        try:
            self._frame_queued_texts()
            data = b"".join(self._outgoing) + self._protocol.send(CloseConnection(code=code))
            self._outgoing.clear()
            await self.stream.send_all(data)
        except (LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def ended(self) -> None:
        """The connection is over for its owner (however it ended): nothing more is queued,
        and no sender waits for a writer that will not run again."""
        self._lost()

    def _lost(self) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL_CLOSURE
        self._drained.set()


def _one_by_one(on_text: Callable[[str], None]) -> Callable[[list[str]], None]:
    def each(texts: list[str]) -> None:
        for text in texts:
            on_text(text)
    return each


class _WsprotoEvents:
    """What wsproto makes of the frames ``ws_frames`` hands on: messages (in parts, with the
    size limit), pings answered, pongs matched, the close frame."""

    def __init__(
        self, connection: WsConnection, on_text: Callable[[str], None],
        on_binary: Callable[[bytes], None],
    ) -> None:
        self.connection = connection
        self.on_text = on_text
        self.on_binary = on_binary
        self.oversized = False
        self.closed = False  # by the peer's close frame
        self._text_parts: list[str] = []
        self._byte_parts: list[bytes] = []
        self._pending = 0  # size of the message being received so far

    def feed(self, data: bytes) -> bool:
        """Parse ``data``; True when reading must stop (a close frame, or an oversized
        message)."""
        connection = self.connection
        protocol = connection._protocol
        protocol.receive_data(data)
        for event in protocol.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._pending += len(event.data)
                if self._pending > MAX_MESSAGE_SIZE:
                    self.oversized = True
                    return True
                if event.message_finished:
                    self._pending = 0
            if isinstance(event, TextMessage):
                if event.message_finished and not self._text_parts:
                    self.on_text(event.data)
                else:
                    self._text_parts.append(event.data)
                    if event.message_finished:
                        self.on_text("".join(self._text_parts))
                        self._text_parts.clear()
            elif isinstance(event, BytesMessage):
                self._byte_parts.append(bytes(event.data))
                if event.message_finished:
                    self.on_binary(b"".join(self._byte_parts))
                    self._byte_parts.clear()
            elif isinstance(event, Ping):
                connection._queue(protocol.send(event.response()))
            elif isinstance(event, Pong):
                waiter = connection._pings.get(bytes(event.payload))
                if waiter is not None:
                    waiter.set()
            elif isinstance(event, CloseConnection):
                connection.close_code = event.code
                connection._queue(protocol.send(event.response()))
                self.closed = True
                return True
        return False
