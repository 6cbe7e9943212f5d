"""A small HTTP/1.1 server: h11 for the protocol, trio at the edges. Used by the daemon's own
endpoints (health, readiness, metrics) and by the sandbox.

One handler takes every request; a body over ``max_body`` bytes is refused (413) before it is
read whole; a malformed request is answered 400; a handler that fails is answered 500 and
logged. Keep-alive is supported.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import h11
import trio

log = logging.getLogger("chatmod.http")

RECEIVE_SIZE = 65536
DEFAULT_MAX_BODY = 1024 * 1024


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
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``task_status.started`` gets the port (useful with port 0)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound: int = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, partial(_connection, handler, max_body),
                                   listeners))
        task_status.started(bound)


async def _next_event(stream: trio.SocketStream, conn: h11.Connection) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(RECEIVE_SIZE))
            continue
        return event


async def _respond(stream: trio.SocketStream, conn: h11.Connection,
                   response: HttpResponse) -> None:
    headers = [*response.headers, ("content-type", response.content_type),
               ("content-length", str(len(response.body)))]
    await stream.send_all(conn.send(h11.Response(status_code=response.status, headers=headers))
                          + conn.send(h11.Data(data=response.body))
                          + conn.send(h11.EndOfMessage()))


async def _read_request(stream: trio.SocketStream, conn: h11.Connection, max_body: int
                        ) -> HttpRequest | HttpResponse | None:
    """The next request, a response refusing it, or None when the client is gone."""
    request = await _next_event(stream, conn)
    if not isinstance(request, h11.Request):
        return None
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
    declared = headers.get("content-length", "0")
    if not declared.isdigit() or int(declared) > max_body:
        return HttpResponse(413, b'{"error": "body too large"}')
    body = bytearray()
    while True:
        event = await _next_event(stream, conn)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:  # chunked: no length up front
                return HttpResponse(413, b'{"error": "body too large"}')
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            return None
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    return HttpRequest(request.method.decode("latin-1"), path, query, headers, bytes(body))


async def _connection(handler: Handler, max_body: int, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16384)
    async with stream:
        try:
            while True:
                read = await _read_request(stream, conn, max_body)
                if read is None:
                    return
                if isinstance(read, HttpResponse):  # refused: answer and close
                    await _respond(stream, conn, read)
                    return
                try:
                    response = await handler(read)
                except Exception:
                    log.exception("HTTP handler failed for %s %s", read.method, read.path)
                    response = HttpResponse(500, b'{"error": "internal error"}')
                await _respond(stream, conn, response)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(h11.LocalProtocolError, trio.BrokenResourceError):
                    await _respond(stream, conn, HttpResponse(400, b'{"error": "bad request"}'))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
