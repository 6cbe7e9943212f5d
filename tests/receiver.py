"""A real HTTP server on loopback that records what it receives (trio + h11)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import h11
import trio


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each request with the next status of ``statuses`` (then 200)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._connection, listeners, task_status=task_status)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request = await self._next(stream, conn)
                if not isinstance(request, h11.Request):
                    return
                body = b""
                while True:
                    event = await self._next(stream, conn)
                    if isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return
                self.requests.append(Received(
                    {k.decode().lower(): v.decode() for k, v in request.headers}, body))
                status = self.statuses.pop(0) if self.statuses else 200
                await stream.send_all(
                    conn.send(h11.Response(status_code=status,
                                           headers=[("content-length", "0")]))
                    + conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    @staticmethod
    async def _next(stream: trio.SocketStream, conn: h11.Connection) -> object:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                conn.receive_data(await stream.receive_some(65536))
            except trio.BrokenResourceError:
                return None


async def start_receiver(nursery: trio.Nursery, statuses: list[int] | None = None) -> Receiver:
    receiver = Receiver(statuses=list(statuses or []))
    await nursery.start(partial(receiver.serve))
    return receiver
