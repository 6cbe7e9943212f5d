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
:meth:`KeepAlivePoster.warm` opens connections ahead of need, so that a burst (the websocket
just closed) does not wait for TCP and TLS set-up.

A request is one ``send`` and, per read, one wait for the socket to be readable
(http_connection: a plain non-blocking socket; the poster's watchdog says when it is readable,
from one epoll set for all of them), bounded in time by that watchdog, not a cancel scope of
its own; only connecting has one.
"""

from __future__ import annotations

import socket
import ssl
import urllib.parse
import urllib.request
from dataclasses import dataclass

import h11
import trio

from chatmod.chatsight.http_answer import PlainHead, parse_plain_head
from chatmod.chatsight.http_connection import RECEIVE_SIZE, Connection, ExchangeWatchdog
from chatmod.errors import ExchangeFailed, ExchangeTimedOut

# Bytes an answer's body may hold; Chatsight's are a few KB. A peer must not grow memory
# without bound.
MAX_ANSWER_SIZE = 4 * 1024 * 1024
USER_AGENT = b"chatmod"



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
        self._idle: list[Connection] = []
        self._closed = False
        self.connections_opened = 0
        self._last_head: tuple[bytes, PlainHead | None] = (b"", None)
        # Ends exchanges past their time (a cancel scope per request cost about a tenth of
        # the request's CPU) and tells them when their sockets are readable (trio's own
        # wait re-registered the socket per read: a system call).
        self._watchdog = ExchangeWatchdog()

    async def post(self, body: bytes, deadline: float | None = None, now: float | None = None
                   ) -> Answer:
        """The answer to ``POST body``; :class:`ExchangeTimedOut` after ``timeout`` seconds
        (from ``now``, trio's time if the caller just read it) or at ``deadline`` (trio
        time) if that comes first, :class:`ExchangeFailed` when the connection fails or the
        answer is invalid."""
        if self._closed:
            raise ExchangeFailed("client closed")
        until = (trio.current_time() if now is None else now) + self.timeout
        if deadline is not None and deadline < until:
            until = deadline
        connection = self._take_idle()
        if connection is not None:
            try:
                return await self._timed_exchange(connection, body, until)
            except _NothingReceived:
                pass  # closed by the server as we took it: once more, on a new one
        opened: Connection | None = None
        with trio.CancelScope(deadline=until):  # connecting: rare, so a scope is cheap
            opened = await self._open()
        if opened is None:
            raise ExchangeTimedOut(f"no answer within {self.timeout:g} s")
        try:
            return await self._timed_exchange(opened, body, until)
        except _NothingReceived as exc:
            raise ExchangeFailed(str(exc)) from None

    async def _timed_exchange(self, connection: Connection, body: bytes, until: float
                              ) -> Answer:
        """:meth:`_exchange`, ended by the watchdog at ``until`` (trio time)."""
        watchdog = self._watchdog
        watchdog.watch(connection, until)
        try:
            return await self._exchange(connection, body)
        except trio.ClosedResourceError:
            if not connection.expired:
                raise
            # Expired and cancelled at once (a websocket reply won the race as the time
            # ran out): the caller's cancellation, not a timeout it would count as a failure.
            await trio.lowlevel.checkpoint_if_cancelled()
            raise ExchangeTimedOut(f"no answer within {self.timeout:g} s") from None
        finally:
            watchdog.finished(connection)

    def _take_idle(self) -> Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed_while_idle():
                return connection
            connection.close()
        return None

    async def warm(self, count: int) -> None:
        """Open connections until ``count`` are idle (replacing those the server closed), so
        that a burst of requests does not wait for connection set-up. Gives up quietly at
        the first failure or after ``timeout`` seconds: a request opens its own then."""
        for connection in list(self._idle):
            if connection.closed_while_idle():
                self._idle.remove(connection)
                connection.close()
        with trio.move_on_after(self.timeout):
            while len(self._idle) < count and not self._closed:
                try:
                    self._add_warm(await self._open())
                except ExchangeFailed:
                    break
        await trio.lowlevel.checkpoint()

    def _add_warm(self, connection: Connection) -> None:
        if self._closed:  # closed while it was opening
            connection.close()
        else:
            self._idle.insert(0, connection)  # behind the connections used last

    async def _open(self) -> Connection:
        """A new connection; cancelled, it leaves nothing open."""
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as exc:
            raise ExchangeFailed(f"connect to {self.host}:{self.port} failed: "
                                 f"{exc.strerror or exc}") from None
        # trio made the connection (happy eyeballs, TCP_NODELAY); the socket is driven
        # directly from here on (see the module's doc).
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        if self.tls is not None:
            sock = await self._tls_handshake(sock)
        self.connections_opened += 1
        return Connection(sock, self._watchdog)

    async def _tls_handshake(self, raw: socket.socket) -> ssl.SSLSocket:
        assert self.tls is not None
        try:
            sock = self.tls.wrap_socket(raw, server_hostname=self.host,
                                        do_handshake_on_connect=False)
        except BaseException:
            raw.close()
            raise
        try:
            while True:
                try:
                    sock.do_handshake()
                    return sock
                except ssl.SSLWantReadError:
                    await trio.lowlevel.wait_readable(sock)
                except ssl.SSLWantWriteError:
                    await trio.lowlevel.wait_writable(sock)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise ExchangeFailed(f"TLS with {self.host}:{self.port} failed: {exc}") from None
        except BaseException:
            sock.close()
            raise

    async def _exchange(self, connection: Connection, body: bytes) -> Answer:
        # The usual answer comes whole in the first read: it is taken from those bytes as
        # they are; more reads gather in a bytearray (bytes joined again and again would
        # cost the square of their length).
        received: bytes | bytearray = b""
        reusable = False
        try:
            await connection.send_all(b"%scontent-length: %d\r\n\r\n%s" % (
                self._head, len(body), body))
            received = await connection.receive(wait_first=True)
            head_end = received.find(b"\r\n\r\n")
            if head_end < 0 and received:
                received = bytearray(received)
                while len(received) <= RECEIVE_SIZE:
                    data = await connection.receive()
                    if not data:
                        break
                    received += data
                    head_end = received.find(b"\r\n\r\n")
                    if head_end >= 0:
                        break
            head = self._plain_head(bytes(received[:head_end])) if head_end >= 0 else None
            if head is None:
                if isinstance(received, bytes):  # it grows as h11 reads on
                    received = bytearray(received)
                answer, reusable = await self._read_with_h11(connection, body, received)
            else:
                if head.content_length > MAX_ANSWER_SIZE:
                    raise ExchangeFailed(f"answer over {MAX_ANSWER_SIZE} bytes")
                end = head_end + 4 + head.content_length
                if len(received) < end and isinstance(received, bytes):
                    received = bytearray(received)
                while len(received) < end:
                    data = await connection.receive()
                    if not data:
                        raise ExchangeFailed("connection closed before the answer ended")
                    received += data
                answer = Answer(head.status, list(head.headers),
                                bytes(received[head_end + 4:end]))
                # Bytes after the answer (a second answer?) would be read as the next
                # request's, and an HTTP answer does not say which request it answers.
                reusable = len(received) == end and not self._closed
            if reusable and isinstance(connection.sock, ssl.SSLSocket):
                reusable = not connection.sock.pending()
            # Expired as its answer came in (the watchdog ran before this task did): the
            # answer stands, but the watchdog told trio the socket is closing.
            if reusable and not connection.expired:
                self._idle.append(connection)
            else:
                reusable = False
            return answer
        except OSError as exc:  # ssl.SSLError included
            if not received:
                raise _NothingReceived(f"connection failed: {exc}") from None
            raise ExchangeFailed(f"connection failed: {exc}") from None
        except h11.RemoteProtocolError as exc:
            if not received:
                raise _NothingReceived(f"connection closed: {exc}") from None
            raise ExchangeFailed(f"invalid answer: {exc}") from None
        finally:
            if not reusable:
                connection.close()

    def _plain_head(self, head: bytes) -> PlainHead | None:
        """:func:`parse_plain_head`, remembering the last plain head: a server's heads differ
        only by their ``Date``, which changes once a second."""
        if head == self._last_head[0]:
            return self._last_head[1]
        parsed = parse_plain_head(head)
        if parsed is not None:
            self._last_head = (head, parsed)
        return parsed

    async def _read_with_h11(self, connection: Connection, body: bytes, received: bytearray
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
                data = await connection.receive()
                received += data
                # Every byte counts, not only the body's: endless 1xx answers or chunk
                # extensions must not grow memory either.
                if len(received) > MAX_ANSWER_SIZE:
                    raise ExchangeFailed(f"answer over {MAX_ANSWER_SIZE} bytes")
                protocol.receive_data(data)
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
            self._idle.pop().close()
        self._watchdog.close()
        await trio.lowlevel.checkpoint()


class _NothingReceived(ExchangeFailed):
    """The connection failed before any byte of an answer (maybe closed while idle)."""
