"""A lean HTTP/1.1 keep-alive client for one endpoint: ``POST`` a body, get the answer.

Chatsight's HTTP fallback carries every verdict while the websocket is down, so its cost per
request matters as much as the websocket's per message. Through httpx a request cost about
3 ms of CPU on loopback (bench/vs_node.py): its pool scans every connection for every request
it assigns, and each request builds a request model, a response model, streams and timeouts.
Here one request is one ``send_all`` of head and body, the answer read by http_answer when
it is a plain one (h11 otherwise), and the connection back on an idle stack. httpx stays for
everything else (and for this endpoint too when a proxy is configured, or a test injects a
transport).

At most as many connections as callers at once: the caller bounds that (ChatsightHttp's
semaphore). Idle connections are reused newest first; one the server closed while idle is
noticed before reuse (it is readable), and a reused connection that fails before any answer
arrives is replaced by a fresh one once, as a server may close it at the moment it is taken.
"""

from __future__ import annotations

import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass

import h11
import trio

from chatmod.chatsight.http_answer import parse_plain_head
from chatmod.errors import ExchangeFailed, ExchangeTimedOut

RECEIVE_SIZE = 64 * 1024
# Bytes an answer's body may hold; Chatsight's are a few KB. A peer must not grow memory
# without bound.
MAX_ANSWER_SIZE = 4 * 1024 * 1024
USER_AGENT = b"chatmod"

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), decoded as Latin-1."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


def proxy_configured(url: str) -> bool:
    """Whether the environment sends ``url`` through a proxy (httpx honours that; this
    client does not, so the caller keeps httpx then)."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


class _Connection:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def closed_while_idle(self) -> bool:
        """An idle keep-alive connection has nothing to read: if it has, the server closed
        it (or sent something unasked), so it cannot be reused."""
        stream = self.stream
        raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        return raw.socket.is_readable()


class KeepAlivePoster:
    """``POST`` to one URL over keep-alive connections. Close with :meth:`aclose`."""

    def __init__(self, url: str, headers: list[tuple[bytes, bytes]], timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        self.host = parts.hostname
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self.port = parts.port or (443 if self.tls else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = 443 if self.tls else 80
        host_header = self.host if self.port == default_port else f"{self.host}:{self.port}"
        self.headers = [(b"host", host_header.encode()), (b"user-agent", USER_AGENT),
                        (b"accept", b"*/*"), *headers]
        try:  # h11 checks the headers once; the head is then written without it
            h11.Request(method="POST", target=self.target, headers=self.headers)
        except h11.LocalProtocolError as exc:
            raise ValueError(f"invalid request header: {exc}") from None
        self._head = (f"POST {self.target} HTTP/1.1\r\n".encode() + b"".join(
            name + b": " + value + b"\r\n" for name, value in self.headers))
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._closed = False
        self.connections_opened = 0

    async def post(self, body: bytes) -> Answer:
        """The answer to ``POST body``; :class:`ExchangeTimedOut` after ``timeout`` seconds,
        :class:`ExchangeFailed` when the connection fails or the answer is invalid."""
        if self._closed:
            raise ExchangeFailed("client closed")
        try:
            with trio.fail_after(self.timeout):
                connection = self._take_idle()
                if connection is not None:
                    try:
                        return await self._exchange(connection, body)
                    except _NothingReceived:
                        pass  # closed by the server as we took it: once more, on a new one
                try:
                    return await self._exchange(await self._open(), body)
                except _NothingReceived as exc:
                    raise ExchangeFailed(str(exc)) from None
        except trio.TooSlowError:
            raise ExchangeTimedOut(f"no answer within {self.timeout:g} s") from None

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed_while_idle():
                return connection
            _close_now(connection.stream)
        return None

    async def _open(self) -> _Connection:
        try:
            if self.tls is None:
                stream: Stream = await trio.open_tcp_stream(self.host, self.port)
            else:
                stream = await trio.open_ssl_over_tcp_stream(
                    self.host, self.port, ssl_context=self.tls, https_compatible=True)
        except OSError as exc:
            raise ExchangeFailed(f"connect to {self.host}:{self.port} failed: "
                                 f"{exc.strerror or exc}") from None
        self.connections_opened += 1
        return _Connection(stream)

    async def _exchange(self, connection: _Connection, body: bytes) -> Answer:
        stream = connection.stream
        received = bytearray()
        reusable = False
        try:
            await stream.send_all(b"%scontent-length: %d\r\n\r\n%s" % (self._head, len(body),
                                                                        body))
            head_end = -1
            while len(received) <= RECEIVE_SIZE:
                head_end = received.find(b"\r\n\r\n")
                if head_end >= 0:
                    break
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                received += data
            head = parse_plain_head(bytes(received[:head_end])) if head_end >= 0 else None
            if head is None:
                answer, reusable = await self._read_with_h11(stream, body, received)
            else:
                if head.content_length > MAX_ANSWER_SIZE:
                    raise ExchangeFailed(f"answer over {MAX_ANSWER_SIZE} bytes")
                end = head_end + 4 + head.content_length
                while len(received) < end:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        raise ExchangeFailed("connection closed before the answer ended")
                    received += data
                answer = Answer(head.status, head.headers, bytes(received[head_end + 4:end]))
                # Bytes after the answer (a second answer?) would be read as the next
                # request's, and an HTTP answer does not say which request it answers.
                reusable = len(received) == end and not self._closed
            if reusable:
                self._idle.append(connection)
            return answer
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if not received:
                raise _NothingReceived(f"connection failed: {exc}") from None
            raise ExchangeFailed(f"connection failed: {exc}") from None
        except h11.RemoteProtocolError as exc:
            if not received:
                raise _NothingReceived(f"connection closed: {exc}") from None
            raise ExchangeFailed(f"invalid answer: {exc}") from None
        finally:
            if not reusable:
                _close_now(stream)

    async def _read_with_h11(self, stream: Stream, body: bytes, received: bytearray
                             ) -> tuple[Answer, bool]:
        """Any answer that is not a plain one, read by h11 from what ``received`` holds on;
        the answer and whether the connection can be reused. ``received`` grows with what is
        read."""
        protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=RECEIVE_SIZE)
        protocol.send(h11.Request(method="POST", target=self.target, headers=[
            *self.headers, (b"content-length", str(len(body)).encode())]))
        protocol.send(h11.Data(data=body))
        protocol.send(h11.EndOfMessage())
        protocol.receive_data(bytes(received))
        status, headers, parts, size = 0, [], [], 0
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECEIVE_SIZE)
                received += data
                protocol.receive_data(bytes(data))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_ANSWER_SIZE:
                    raise ExchangeFailed(f"answer over {MAX_ANSWER_SIZE} bytes")
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ExchangeFailed("connection closed before the answer ended")
            # InformationalResponse (1xx): skipped.
        reusable = (protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
                    and not protocol.trailing_data[0] and not self._closed)
        return Answer(status, headers, b"".join(parts)), reusable

    async def aclose(self) -> None:
        """Close every idle connection; a request still running closes its own."""
        self._closed = True
        while self._idle:
            _close_now(self._idle.pop().stream)
        await trio.lowlevel.checkpoint()


class _NothingReceived(ExchangeFailed):
    """The connection failed before any byte of an answer (maybe closed while idle)."""


def _close_now(stream: Stream) -> None:
    """Close without waiting: no TLS goodbye, which a failed or abandoned connection could
    block on. The socket is closed, so nothing leaks."""
    raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    raw.socket.close()
