"""One keep-alive HTTP connection driven with trio's low-level waits, and the watchdog that
ends its exchanges at their time.

:class:`Connection` is a plain non-blocking socket (an ``ssl.SSLSocket`` for https): a read is
one wait for the socket to be readable and one ``recv``. trio's streams cost about 25 µs more
per request (a checkpoint around every call, conflict detectors, context managers).

:class:`ExchangeWatchdog` bounds every exchange's time without a cancel scope per request
(entering and leaving one with a deadline cost about 7 µs, near a tenth of a request's CPU on
the bench): an exchange notes its connection and end time (:meth:`ExchangeWatchdog.watch`),
and one task sleeps until the earliest end. At an end it flags the connection ``expired`` and
wakes the task waiting on its socket with ``trio.lowlevel.notify_closing``; that wait, and any
later one on the connection, raises ``trio.ClosedResourceError``, and the exchange closes the
connection. Under load the task wakes about once per timeout: an exchange that ends in time
only adds and removes its entry.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import ssl
from collections.abc import Awaitable, Callable

import trio
from trio.lowlevel import current_root_task

log = logging.getLogger("chatmod.engine.chatsight.http")

RECEIVE_SIZE = 64 * 1024


class Connection:
    """One keep-alive connection: a connected non-blocking socket (``ssl.SSLSocket`` over
    TLS, its handshake done)."""

    __slots__ = ("_readable", "expired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        # Set by the poster's watchdog when an exchange on it ran past its time: every wait
        # on the socket then ends in trio.ClosedResourceError.
        self.expired = False
        # Made once: a poll object and its registration per reuse cost 2% of a request.
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)

    def closed_while_idle(self) -> bool:
        """An idle keep-alive connection has nothing to read: if it has, the server closed
        it (or sent something unasked), so it cannot be reused."""
        sock = self.sock
        tls = isinstance(sock, ssl.SSLSocket)
        if isinstance(sock, ssl.SSLSocket) and sock.pending():  # narrowed for mypy
            return True
        if not self._readable.poll(0):
            return False
        if not tls:
            return True
        # TLS 1.3 servers send session tickets after the handshake: readable, yet nothing
        # for us. Reading consumes such records; only data or the end means closed.
        try:
            sock.recv(1)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True
        return True

    def close(self) -> None:
        """Close without waiting: no TLS goodbye, which a failed or abandoned connection could
        block on."""
        self.sock.close()

    async def send_all(self, data: bytes) -> None:
        """Write ``data``; waits only when the socket's buffer is full."""
        sock = self.sock
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view):]
            except (BlockingIOError, ssl.SSLWantWriteError):
                await self._wait(trio.lowlevel.wait_writable)
            except ssl.SSLWantReadError:  # TLS renegotiation
                await self._wait(trio.lowlevel.wait_readable)

    async def receive(self, wait_first: bool = False) -> bytes:
        """The next bytes read (``b""``: closed by the server). ``wait_first``: nothing can
        have arrived yet (the request was just sent), so wait before trying. Any later read
        of an answer lets other tasks run first: a server that keeps the socket full would
        otherwise never make this task wait, and nothing else (the watchdog included) would
        run until it stopped."""
        sock = self.sock
        if wait_first:
            await self._wait(trio.lowlevel.wait_readable)
        else:
            await self._wait(_let_others_run)
        while True:
            try:
                return sock.recv(RECEIVE_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                await self._wait(trio.lowlevel.wait_readable)
            except ssl.SSLWantWriteError:  # TLS renegotiation
                await self._wait(trio.lowlevel.wait_writable)

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[object]]) -> None:
        # The watchdog may have expired the exchange while this task was not waiting (it
        # was about to run): its notice reached no one, so look before waiting again.
        if self.expired:
            raise trio.ClosedResourceError("exchange expired")
        await wait(self.sock)


async def _let_others_run(_sock: socket.socket) -> None:
    await trio.lowlevel.checkpoint()


class ExchangeWatchdog:
    """Ends each exchange in :attr:`busy` (connection -> trio time) at its time. Its task is
    a trio system task, started in the run of the first exchange that needs it (and again in
    a later run): the poster that owns it has no nursery, and the task must outlive any one
    request. It ends with its run, or after :meth:`close` once no exchange is under way."""

    def __init__(self) -> None:
        self.busy: dict[Connection, float] = {}
        # When the task wakes next; inf also when it does not run (in this run). An exchange
        # that must end before then moves it (:meth:`watch`).
        self.wakes_at = math.inf
        self._run: object = None  # the root task of the run the task runs in
        self._scope: trio.CancelScope | None = None
        self._closed = False

    def watch(self, connection: Connection, until: float) -> None:
        """``connection``'s exchange must end at ``until`` (trio time)."""
        self.busy[connection] = until
        if until < self.wakes_at:
            self._wake_by(until)

    def _wake_by(self, until: float) -> None:
        """Look at the exchanges by ``until`` at the latest (the task started first, if it
        does not run in this run)."""
        run = current_root_task()
        if self._run is not run:
            self._run, self._scope = run, None
            trio.lowlevel.spawn_system_task(self._watch, run, name="chatmod HTTP watchdog")
        elif self._scope is not None:
            self._scope.deadline = until
        self.wakes_at = until

    def finished(self, connection: Connection) -> None:
        """``connection``'s exchange ended (in time or not)."""
        busy = self.busy
        del busy[connection]
        if self._closed and not busy:
            self._wake_to_end()

    def close(self) -> None:
        """Let the task end once no exchange is under way (those under way keep their
        bounds)."""
        self._closed = True
        self._wake_to_end()

    def _wake_to_end(self) -> None:
        if self._scope is not None and self._run is current_root_task():
            self._scope.cancel()

    async def _watch(self, run: object) -> None:
        try:
            while self._run is run and not (self._closed and not self.busy):
                now = trio.current_time()
                earliest = math.inf
                for connection, until in self.busy.items():
                    if until <= now:
                        if not connection.expired:
                            connection.expired = True
                            _notify_closing(connection)
                    elif until < earliest:
                        earliest = until
                self.wakes_at = earliest
                with trio.CancelScope(deadline=earliest) as self._scope:
                    await trio.sleep_forever()
                self._scope = None
        finally:
            if self._run is run:  # the next exchange (in another run) starts another task
                self._run, self._scope, self.wakes_at = None, None, math.inf


def _notify_closing(connection: Connection) -> None:
    """Wake the task waiting on ``connection``'s socket. The watchdog is a system task: an
    exception from it would end the whole run, so none may leave here (a socket closed
    meanwhile, a defect) -- the exchange then still sees ``expired`` at its next wait."""
    try:
        trio.lowlevel.notify_closing(connection.sock)
    except Exception as exc:
        log.error("HTTP watchdog: could not wake an expired exchange: %r", exc)
