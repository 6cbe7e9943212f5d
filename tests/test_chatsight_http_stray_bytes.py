"""Bytes an idle connection holds are seen before its reuse, however long ago the watchdog's
task last looked (the lean HTTP client's epoll readiness). Real loopback sockets; servers on
their own threads with blocking sockets, so that the client's trio run can be kept from
running its watchdog where a test needs that (a blocking look at the client's socket)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable

import pytest
import trio
import trio.testing

from .test_chatsight_http_pool import OK_BODY, TIMEOUT, poster

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")


def http_answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


ANSWER = http_answer(OK_BODY)
STALE_BODY = b'{"stale":"answer to nobody"}'
STALE = http_answer(STALE_BODY)


def read_one(conn: socket.socket, buffer: bytearray) -> bytes | None:
    """The body of the next whole request (head and content-length body) off ``buffer`` and
    ``conn``; None at the end or on an error."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).lower()
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if len(buffer) >= end + 4 + length:
                body = bytes(buffer[end + 4:end + 4 + length])
                del buffer[:end + 4 + length]
                return body
        try:
            data = conn.recv(65536)
        except OSError:
            return None
        if not data:
            return None
        buffer += data


def read_request(conn: socket.socket, buffer: bytearray) -> bool:
    """Whether a whole request came (:func:`read_one`)."""
    return read_one(conn, buffer) is not None


class ThreadServer:
    """Accepts on 127.0.0.1; runs ``script(conn, number)`` per connection on its own thread."""

    def __init__(self, script: Callable[[socket.socket, int], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self._stop = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/text/moderation"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            thread = threading.Thread(target=self._run, args=(conn, self.accepted), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket, number: int) -> None:
        with contextlib.suppress(Exception):
            self.script(conn, number)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.close()
        self._acceptor.join(TIMEOUT)
        for thread in self.threads:
            thread.join(TIMEOUT)


def block_until_readable(sock: socket.socket) -> None:
    """A look at the socket that lets no trio task run (the watchdog included)."""
    looker = select.poll()
    looker.register(sock.fileno(), select.POLLIN)
    assert looker.poll(TIMEOUT * 1000), "the server's bytes never came"


# An idle connection holding bytes, reused before the watchdog's task has looked.

async def test_a_stray_answer_already_in_an_idle_socket_is_not_taken_as_the_next_answer(
        ) -> None:
    # The server answers, then (the client idle) sends a second answer nobody asked for --
    # a duplicate, or a 408 before its idle close. The bytes are in the client's socket
    # before the next post, but the watchdog's task has not run since they came: the reuse
    # must look (one epoll_wait), not trust ``ready``.
    send_stray = threading.Event()

    def script(conn: socket.socket, number: int) -> None:
        buffer = bytearray()
        first = True
        while read_request(conn, buffer):
            conn.sendall(ANSWER)
            if number == 1 and first:
                first = False
                assert send_stray.wait(TIMEOUT)
                conn.sendall(STALE)

    server = ThreadServer(script)
    client = poster(server.url)
    try:
        with trio.fail_after(TIMEOUT):
            assert (await client.post(b"{}")).body == OK_BODY
            (idle,) = client._idle
            send_stray.set()
            block_until_readable(idle.sock)  # the stray answer is in the socket now
            # No checkpoint since: the caller posts at once, as a busy caller may.
            reply = await client.post(b"{}")
        assert reply.body == OK_BODY, "the stray answer was taken as this request's"
    finally:
        await client.aclose()
        server.close()


# A poster used in a second trio run, its connections' ``ready`` from the first.

def test_ready_from_an_earlier_run_is_not_trusted() -> None:
    # Two connections idle after run 1 (ready False). Between the runs the server sends a
    # stray answer on one. In run 2 two posts start at once: the first one's watch() marks
    # the watchdog as running in this run before its task has looked, so the second one's
    # reuse must not trust the ``ready`` of run 1: its own look finds the event that waited
    # in the set since.
    send_stray: dict[int, threading.Event] = {}
    ports: dict[int, int] = {}
    both_read = threading.Barrier(2)

    def script(conn: socket.socket, number: int) -> None:
        ports[conn.getpeername()[1]] = number
        send_stray[number] = event = threading.Event()
        buffer = bytearray()
        first = True
        while read_request(conn, buffer):
            if number <= 2 and first:
                both_read.wait(TIMEOUT)  # run 1: two connections for sure
            conn.sendall(ANSWER)
            if first:
                first = False
                if number <= 2 and event.wait(TIMEOUT) and not getattr(event, "skip", False):
                    conn.sendall(STALE)

    server = ThreadServer(script)
    client = poster(server.url)

    async def run_1() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(client.post, b"{}")
        assert len(client._idle) == 2
        assert [getattr(c, "ready", False) for c in client._idle] == [False, False]

    replies: list[bytes] = []

    async def run_2() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    async def one() -> None:
                        replies.append((await client.post(b"{}")).body)
                    nursery.start_soon(one)
        await client.aclose()

    try:
        trio.run(run_1)
        second_taken = client._idle[-2]  # the second post of run 2 takes this one
        number = ports[second_taken.sock.getsockname()[1]]
        for n, event in send_stray.items():
            if n != number:
                event.skip = True  # type: ignore[attr-defined]
            event.set()
        block_until_readable(second_taken.sock)
        trio.run(run_2)
        assert replies == [OK_BODY, OK_BODY], replies
    finally:
        server.close()
