"""One keep-alive HTTP connection driven with low-level waits, and the watchdog that ends its
exchanges at their time and tells them when their sockets are readable.

:class:`Connection` is a plain non-blocking socket (an ``ssl.SSLSocket`` for https): a read is
one wait for the socket to be readable and one ``recv``. trio's streams cost about 25 µs more
per request (a checkpoint around every call, conflict detectors, context managers).

:class:`ExchangeWatchdog` bounds every exchange's time without a cancel scope per request
(entering and leaving one with a deadline cost about 7 µs, near a tenth of a request's CPU on
the bench): an exchange notes its connection and end time (:meth:`ExchangeWatchdog.watch`),
and one task waits until the earliest end. At an end it flags the connection ``expired`` and
wakes the task waiting on its socket (``trio.lowlevel.notify_closing`` for a wait through
trio); that wait, and any later one on the connection, raises ``trio.ClosedResourceError``,
and the exchange closes the connection. Under load the task wakes for that about once per
timeout: an exchange that ends in time only adds and removes its entry.

The same task tells each exchange when its socket has something to read (Linux): the poster's
sockets sit in one edge-triggered ``epoll`` set of their own, registered once per connection,
and the task waits on that set. A wait through trio re-registers the socket with trio's
``epoll`` (a system call) per read; this way one ``epoll_wait`` serves every socket that
became readable at once. A reuse still looks at what the connection holds (a server's close,
bytes nobody asked for): one ``epoll_wait`` on the set, or the ``poll`` of the socket when the
set already told that it became readable.
"""

from __future__ import annotations

import contextlib
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
# epoll's flags for a server's end (of its sending, or of the connection) or an error.
_HUNG_UP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR if hasattr(select, "epoll") else 0
# TCP urgent data: recv() stops short at its mark with bytes still queued behind it, so a
# short read no longer tells that the socket is empty.
_URGENT = select.EPOLLPRI if hasattr(select, "epoll") else 0


class Connection:
    """One keep-alive connection: a connected non-blocking socket (``ssl.SSLSocket`` over
    TLS, its handshake done). With a ``watchdog`` that can watch sockets, it learns from the
    watchdog when it has something to read; without, it waits through trio."""

    __slots__ = ("_fd", "_plain", "_readable", "_watchdog", "expired", "hung_up", "reader",
                 "ready", "sock", "urgent")

    def __init__(self, sock: socket.socket, watchdog: ExchangeWatchdog | None = None) -> None:
        self.sock = sock
        self._fd = sock.fileno()
        self._plain = not isinstance(sock, ssl.SSLSocket)
        # Set by the poster's watchdog when an exchange on it ran past its time: every wait
        # on the socket then ends in trio.ClosedResourceError.
        self.expired = False
        # Made once: a poll object and its registration per reuse cost 2% of a request.
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        # False only while the socket is known to hold nothing to read: a read found it
        # empty, and the watchdog has not seen it become readable since. Until then a wait
        # tries a read first, and a reuse looks (``poll``) for a server's close.
        self.ready = True
        # The watchdog saw the server's end (or an error): that stays. A short read clears
        # ``ready``, yet an end that came with the data it read is still to be read.
        self.hung_up = False
        # The server sent TCP urgent data (never in HTTP): not reused, short reads prove
        # nothing.
        self.urgent = False
        self.reader: trio.lowlevel.Task | None = None  # the task waiting to read, if any
        self._watchdog = watchdog if watchdog is not None and watchdog.add(self) else None

    def closed_while_idle(self) -> bool:
        """An idle keep-alive connection has nothing to read: if it has, the server closed
        it (or sent something unasked), so it cannot be reused."""
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():  # narrowed for mypy
            return True
        watchdog = self._watchdog
        watched = watchdog is not None and watchdog.watches_sockets
        if watchdog is not None and watched and not self.ready and not self.hung_up:
            # What arrived since the watchdog's task last looked (a duplicate answer, a 408
            # before an idle close) is known only by looking: one epoll_wait for every
            # socket of the poster.
            watchdog.look()
            if not self.ready and not self.hung_up and not self.urgent:
                return False
        if self.urgent:
            return True
        if not self._readable.poll(0):
            if watched:
                self.ready = False  # anything arriving from now on is an event
            return False
        if self._plain:
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
        if self._watchdog is not None:
            self._watchdog.remove(self._fd, self)
            self._watchdog = None
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
                self.ready = False
                await self._wait_readable()

    async def receive(self, wait_first: bool = False) -> bytes:
        """The next bytes read (``b""``: closed by the server). ``wait_first``: nothing can
        have arrived yet (the request was just sent), so wait before trying. Any later read
        of an answer lets other tasks run first: a server that keeps the socket full would
        otherwise never make this task wait, and nothing else (the watchdog included) would
        run until it stopped."""
        sock = self.sock
        if wait_first:
            await self._wait_readable()
        else:
            await self._wait(_let_others_run)
        while True:
            try:
                data = sock.recv(RECEIVE_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                self.ready = False
                await self._wait_readable()
                continue
            except ssl.SSLWantWriteError:  # TLS renegotiation
                await self._wait(trio.lowlevel.wait_writable)
                continue
            if self._plain and len(data) < RECEIVE_SIZE and not self.urgent:
                # A short read took all there was (TLS may keep more in its own buffer).
                self.ready = False
            return data

    async def _wait_readable(self) -> None:
        """Until the socket may have something to read (at once if it may already)."""
        watchdog = self._watchdog
        if watchdog is None or not watchdog.watches_sockets:
            await self._wait(trio.lowlevel.wait_readable)
            return
        if self.expired:
            raise trio.ClosedResourceError("exchange expired")
        if self.ready or self.hung_up:
            return
        self.reader = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self.reader = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if self.expired:  # woken by the watchdog at the exchange's end
            raise trio.ClosedResourceError("exchange expired")

    async def _wait(self, wait: Callable[[socket.socket], Awaitable[object]]) -> None:
        # The watchdog may have expired the exchange while this task was not waiting (it
        # was about to run): its notice reached no one, so look before waiting again.
        if self.expired:
            raise trio.ClosedResourceError("exchange expired")
        await wait(self.sock)


async def _let_others_run(_sock: socket.socket) -> None:
    await trio.lowlevel.checkpoint()


class ExchangeWatchdog:
    """Ends each exchange in :attr:`busy` (connection -> trio time) at its time, and wakes
    the exchanges waiting to read on the sockets it watches (:meth:`add`). Its task is a trio
    system task, started in the run of the first exchange that needs it (and again in a later
    run): the poster that owns it has no nursery, and the task must outlive any one request.
    It ends with its run, or after :meth:`close` once no exchange is under way."""

    def __init__(self, watch_sockets: bool = True) -> None:
        self.busy: dict[Connection, float] = {}
        # When the task wakes next; inf also when it does not run (in this run). An exchange
        # that must end before then moves it (:meth:`watch`).
        self.wakes_at = math.inf
        self._run: object = None  # the root task of the run the task runs in
        self._scope: trio.CancelScope | None = None
        self._closed = False
        # The sockets whose readiness the task reports (edge-triggered: an event each time
        # data or the end arrives), by file descriptor. None without epoll (not Linux), once
        # closed, or after a failure: connections then wait through trio.
        self._epoll: select.epoll | None = None
        self._sockets: dict[int, Connection] = {}
        if watch_sockets and hasattr(select, "epoll"):
            try:
                self._epoll = select.epoll()
            except OSError as exc:  # out of file descriptors, say
                log.warning("HTTP: cannot make an epoll set, waiting through trio: %s", exc)

    @property
    def watches_sockets(self) -> bool:
        """Whether the sockets' readiness is known: the task reports it only while it runs
        (from an exchange's start until :meth:`close`, in a run); events wait in the set
        meanwhile."""
        return self._epoll is not None and self._run is not None

    def add(self, connection: Connection) -> bool:
        """Watch ``connection``'s socket for reading; False if this watchdog cannot."""
        if self._epoll is None:
            return False
        fd = connection.sock.fileno()
        try:
            self._epoll.register(fd, select.EPOLLIN | select.EPOLLPRI | select.EPOLLRDHUP
                                 | select.EPOLLET)
        except OSError as exc:  # an fd limit, say: this connection waits through trio
            log.warning("HTTP: cannot watch a connection's socket: %s", exc)
            return False
        self._sockets[fd] = connection
        return True

    def remove(self, fd: int, connection: Connection) -> None:
        """Stop watching ``connection`` (before its socket closes: its number will be
        reused)."""
        if self._sockets.get(fd) is not connection:
            return
        del self._sockets[fd]
        if self._epoll is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
        self._close_epoll_when_done()

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
        self._close_epoll_when_done()

    def _wake_to_end(self) -> None:
        if self._scope is not None and self._run is current_root_task():
            self._scope.cancel()

    def _close_epoll_when_done(self) -> None:
        """Close the set once closed, nothing is watched and the task is not running: the
        last of those three to happen (close, a connection's removal, the task's end)
        calls this."""
        if self._closed and not self._sockets and self._run is None:
            self._close_epoll()

    def _close_epoll(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    async def _watch(self, run: object) -> None:
        try:
            while self._run is run and not (self._closed and not self.busy):
                now = trio.current_time()
                earliest = math.inf
                for connection, until in self.busy.items():
                    if until <= now:
                        if not connection.expired:
                            connection.expired = True
                            _wake_expired(connection)
                    elif until < earliest:
                        earliest = until
                self.wakes_at = earliest
                with trio.CancelScope(deadline=earliest) as self._scope:
                    if self._epoll is None:
                        await trio.sleep_forever()
                    else:
                        await self._report_readable(self._epoll)
                self._scope = None
        finally:
            if self._run is run:  # the next exchange (in another run) starts another task
                self._run, self._scope, self.wakes_at = None, None, math.inf
                self._close_epoll_when_done()

    def look(self) -> None:
        """Harvest the set's events now, without waiting (a reuse about to trust
        ``ready``). A failure is left for the task to meet."""
        epoll = self._epoll
        if epoll is None:
            return
        try:
            self._harvest(epoll)
        except Exception as exc:
            log.warning("HTTP: looking at the sockets failed: %r", exc)

    def _harvest(self, epoll: select.epoll) -> None:
        sockets = self._sockets
        reschedule = trio.lowlevel.reschedule
        for fd, events in epoll.poll(0):
            connection = sockets.get(fd)
            if connection is not None:
                connection.ready = True
                if events & _HUNG_UP:
                    connection.hung_up = True
                if events & _URGENT:
                    connection.urgent = True
                task = connection.reader
                if task is not None:
                    connection.reader = None
                    reschedule(task)

    async def _report_readable(self, epoll: select.epoll) -> None:
        """Mark each watched socket that became readable, and wake its reader; until
        cancelled. The task is a system task: an exception from it would end the whole run,
        so a failure (a defect) is logged and the connections go back to trio's waits."""
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll)
                self._harvest(epoll)
        except Exception as exc:
            log.error("HTTP: watching sockets failed, waiting through trio from now: %r", exc)
            self._stop_watching_sockets()
            await trio.sleep_forever()

    def _stop_watching_sockets(self) -> None:
        for connection in self._sockets.values():
            connection.ready = True  # unknown from now on
            task, connection.reader = connection.reader, None
            if task is not None:  # its next wait goes through trio
                trio.lowlevel.reschedule(task)
        self._sockets.clear()
        self._close_epoll()


def _wake_expired(connection: Connection) -> None:
    """Wake the task waiting on ``connection``'s socket. The watchdog is a system task: an
    exception from it would end the whole run, so none may leave here (a socket closed
    meanwhile, a defect) -- the exchange then still sees ``expired`` at its next wait."""
    task, connection.reader = connection.reader, None
    if task is not None:
        trio.lowlevel.reschedule(task)
    try:  # a wait through trio (a full socket, or no epoll)
        trio.lowlevel.notify_closing(connection.sock)
    except Exception as exc:
        log.error("HTTP watchdog: could not wake an expired exchange: %r", exc)
