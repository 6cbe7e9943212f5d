"""A small HTTP/1.1 server: h11 for the protocol, trio at the edges. Used by the daemon's own
endpoints (health, readiness, metrics, stats, webhooks) and by the sandbox.

One handler takes every request. What a peer can do to it is bounded:

- a request head must arrive within ``header_timeout`` and its body within ``body_timeout``
  (else 408 and close); a keep-alive connection idle for ``keep_alive_timeout`` is closed; a
  peer that does not read its response is dropped after ``send_timeout``;
- a body over ``max_body`` bytes is refused (413) before it is read whole; a malformed request
  is answered 400 (or h11's hint, e.g. 431); a handler that fails is answered 500 and logged;
- at ``max_connections``, the connection that has waited longest for its request is closed to
  make room (slow or idle peers go first; a request being answered is never cut); when every
  connection is answering a request, the new one is answered 503 and closed;
- HEAD is answered as GET without the body;
- nothing one connection does ends the server: its errors are logged and it is closed.

Refusals, evictions and failures are logged at most once per
:data:`~chatmod.http.limits.LOG_INTERVAL` for each
kind, with the number left out. On cancellation the server stops accepting, closes idle
connections and lets the responses under way finish within ``shutdown_grace`` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h11
import trio

from chatmod.http.limits import (
    ACCEPT_RETRY_DELAY,
    RateLimitedLog,
    ServerCounters,
    ServerLimits,
)

log = logging.getLogger("chatmod.http")

RECEIVE_SIZE = 65536
MAX_HEAD_SIZE = 16384
DEFAULT_MAX_BODY = 1024 * 1024
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_BUSY_BODY = b'{"error": "server too busy"}'
_BUSY_REPLY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\nconnection: close\r\n\r\n%s"
               % (len(_BUSY_BODY), _BUSY_BODY))


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # without the query string
    query: str
    headers: Mapping[str, str]  # names lower-cased
    body: bytes


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


async def serve_http(
    handler: Handler, host: str, port: int, *, max_body: int = DEFAULT_MAX_BODY,
    limits: ServerLimits | None = None, counters: ServerCounters | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the port (useful with port 0).
    ``counters``, when given, counts what the server did (see :class:`ServerCounters`)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    server = _Server(handler, max_body, limits or ServerLimits(), listeners,
                     counters or ServerCounters())
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(server.accept_loop, listener, nursery)
            task_status.started(bound)
            try:
                await trio.sleep_forever()
            finally:
                server.stop()
    finally:
        for listener in listeners:
            listener.socket.close()


class _Connection:
    def __init__(self, stream: trio.SocketStream, peer: str) -> None:
        self.stream = stream
        self.peer = peer
        self.scope = trio.CancelScope()
        self.answering: trio.CancelScope | None = None  # while the handler runs or we send

    def close_now(self) -> None:
        """From another task: free the descriptor at once and end the connection's task."""
        self.scope.cancel()
        self.stream.socket.close()


class _Refusal(Exception):
    """A request answered with an error, then the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class _Server:
    def __init__(self, handler: Handler, max_body: int, limits: ServerLimits,
                 listeners: list[trio.SocketListener], counters: ServerCounters) -> None:
        self.handler = handler
        self.max_body = max_body
        self.limits = limits
        self.listeners = listeners
        self.counters = counters
        # Insertion order is the order connections started waiting for their request: the
        # first one not answering is the one to close when the table is full.
        self.waiting: dict[_Connection, None] = {}
        self.answering: set[_Connection] = set()
        self.stopping = False
        self.stop_deadline = math.inf
        self.say = RateLimitedLog(log)

    def stop(self) -> None:
        """Stop accepting, close idle connections, give the answering ones a grace period."""
        self.stopping = True
        self.stop_deadline = trio.current_time() + self.limits.shutdown_grace
        for listener in self.listeners:
            listener.socket.close()
        for conn in list(self.waiting):
            self._drop(conn)
        for conn in self.answering:
            if conn.answering is not None:
                conn.answering.deadline = self.stop_deadline

    def _drop(self, conn: _Connection) -> None:
        self.waiting.pop(conn, None)
        conn.close_now()

    def _make_room(self) -> bool:
        """At the cap: close the connection waiting longest for its request; False when
        every connection is answering one."""
        for conn in self.waiting:
            self._drop(conn)
            self.counters.add("evicted")
            self.say.log(logging.WARNING, "evicted", "HTTP: %d connections (the limit); "
                         "closed the one waiting longest for a request (%s)",
                         self.limits.max_connections, conn.peer)
            return True
        return False

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                self.counters.add("accept_errors")
                self.say.log(logging.WARNING, "accept", "HTTP: accepting a connection failed "
                             "(%s)", exc.strerror or exc)
                if not (exc.errno in _OUT_OF_RESOURCES and self._make_room()):
                    await trio.sleep(ACCEPT_RETRY_DELAY)
                continue
            peer = _peer_name(stream)
            if len(self.waiting) + len(self.answering) >= self.limits.max_connections \
                    and not self._make_room():
                self.counters.add("refused_busy")
                self.say.log(logging.WARNING, "refused", "HTTP: %d connections, all answering "
                             "requests; refused %s with 503", self.limits.max_connections, peer)
                with trio.move_on_after(self.limits.send_timeout):
                    await _send_quietly(stream, _BUSY_REPLY)
                await trio.aclose_forcefully(stream)
                continue
            conn = _Connection(stream, peer)
            self.waiting[conn] = None
            self.counters.add("accepted")
            self.counters.open += 1
            nursery.start_soon(self._serve_connection, conn)

    async def _serve_connection(self, conn: _Connection) -> None:
        try:
            with conn.scope:
                await self._converse(conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer left, or we closed it to make room
        except Exception as exc:
            self.counters.add("connection_failures")
            self.say.log(logging.ERROR, "failed", "HTTP connection from %s failed; closed it",
                         conn.peer, exc_info=exc)
        finally:
            self.waiting.pop(conn, None)
            self.answering.discard(conn)
            self.counters.open -= 1
            await trio.aclose_forcefully(conn.stream)

    async def _converse(self, conn: _Connection) -> None:
        protocol = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_SIZE)
        keep_alive = False
        while not self.stopping:
            try:
                request = await self._read_request(conn, protocol, keep_alive)
            except _Refusal as refusal:
                self.counters.add("refused_requests")
                self.say.log(logging.INFO, f"refused {refusal.status}",
                             "HTTP: answered %s with %d: %s", conn.peer, refusal.status, refusal)
                await self._answer_refusal(conn, protocol, refusal)
                return
            if request is None:
                return
            self.waiting.pop(conn, None)  # answering: never closed to make room
            self.counters.add("requests")
            self.answering.add(conn)
            # Shielded: a stop lets it finish, until the grace deadline (inf until a stop).
            with trio.CancelScope(shield=True, deadline=self.stop_deadline) as conn.answering:
                response = await self._call_handler(request)
                await self._respond(conn, protocol, response, head=request.method == "HEAD")
            conn.answering = None
            self.answering.discard(conn)
            if protocol.our_state is not h11.DONE or protocol.their_state is not h11.DONE:
                return
            protocol.start_next_cycle()
            self.waiting[conn] = None  # at the end: the most recent to start waiting
            keep_alive = True

    async def _receive(self, conn: _Connection, protocol: h11.Connection, deadline: float
                       ) -> bool:
        """Feed h11 what the peer sends next; False when ``deadline`` passed first."""
        with trio.move_on_at(deadline) as scope:
            data = await conn.stream.receive_some(RECEIVE_SIZE)
        if scope.cancelled_caught:
            return False
        protocol.receive_data(data)
        return True

    async def _read_request(self, conn: _Connection, protocol: h11.Connection,
                            keep_alive: bool) -> HttpRequest | None:
        """The next request (a HEAD keeps its method), or None when the connection is done
        (peer gone, idle too long); refusals are raised as :class:`_Refusal`."""
        limits = self.limits
        deadline = trio.current_time() + (
            limits.keep_alive_timeout if keep_alive else limits.header_timeout)
        started = False
        while (event := _next_event(protocol)) is h11.NEED_DATA:
            if not await self._receive(conn, protocol, deadline):
                if started:
                    raise _Refusal(408, "request head not received in time")
                self.counters.add("idle_closed")
                return None  # idle: close without a word
            if not started:
                started = True
                deadline = trio.current_time() + limits.header_timeout
        if not isinstance(event, h11.Request):
            return None  # ConnectionClosed
        head = event
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in head.headers}
        if int(headers.get("content-length", "0")) > self.max_body:  # h11 checked it is a number
            raise _Refusal(413, "body too large")
        if protocol.they_are_waiting_for_100_continue:
            await self._send(conn, protocol.send(h11.InformationalResponse(
                status_code=100, headers=[])))
        body = bytearray()
        deadline = trio.current_time() + limits.body_timeout
        while not isinstance(event := _next_event(protocol), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                if not await self._receive(conn, protocol, deadline):
                    raise _Refusal(408, "request body not received in time")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:  # chunked: no length up front
                    raise _Refusal(413, "body too large")
            else:
                return None  # ConnectionClosed mid-body
        path, _, query = head.target.decode("latin-1").partition("?")
        return HttpRequest(head.method.decode("latin-1"), path, query, headers, bytes(body))

    async def _call_handler(self, request: HttpRequest) -> HttpResponse:
        as_get = request
        if request.method == "HEAD":  # the handler answers it as GET; the body is left out
            as_get = HttpRequest("GET", request.path, request.query, request.headers,
                                 request.body)
        try:
            return await self.handler(as_get)
        except Exception as exc:
            self.counters.add("handler_failures")
            self.say.log(logging.ERROR, "handler", "HTTP handler failed for %s %s",
                         request.method, request.path[:200], exc_info=exc)
            return HttpResponse(500, b'{"error": "internal error"}')

    async def _respond(self, conn: _Connection, protocol: h11.Connection,
                       response: HttpResponse, *, head: bool = False) -> None:
        headers = [*response.headers, ("content-type", response.content_type),
                   ("content-length", str(len(response.body)))]
        if self.stopping:
            headers.append(("connection", "close"))
        data = protocol.send(h11.Response(status_code=response.status, headers=headers))
        if not head:  # h11 knows a HEAD response has no body and would refuse one
            data += protocol.send(h11.Data(data=response.body))
        data += protocol.send(h11.EndOfMessage())
        await self._send(conn, data)

    async def _answer_refusal(self, conn: _Connection, protocol: h11.Connection,
                              refusal: _Refusal) -> None:
        if protocol.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = b'{"error": "%s"}' % str(refusal).encode()
        headers = [("content-type", "application/json"), ("content-length", str(len(body))),
                   ("connection", "close")]
        with trio.CancelScope(shield=True) as scope:  # even while stopping: a short answer
            scope.deadline = trio.current_time() + self.limits.send_timeout
            await self._send(conn, protocol.send(h11.Response(
                status_code=refusal.status, headers=headers)) + protocol.send(
                h11.Data(data=body)) + protocol.send(h11.EndOfMessage()))

    async def _send(self, conn: _Connection, data: bytes) -> None:
        with trio.move_on_after(self.limits.send_timeout) as scope:
            await conn.stream.send_all(data)
        if scope.cancelled_caught:
            raise trio.BrokenResourceError("the peer does not read its response")


def _next_event(protocol: h11.Connection) -> Any:
    """h11's next event; a peer's protocol error as a refusal with h11's status hint."""
    try:
        return protocol.next_event()
    except h11.RemoteProtocolError as exc:
        raise _Refusal(exc.error_status_hint, "bad request") from None


def _peer_name(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except (OSError, ValueError):
        return "a peer that left"
    return f"{host}:{port}"


async def _send_quietly(stream: trio.SocketStream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)
