"""The lean HTTP client's sockets watched by its watchdog (one edge-triggered epoll set): an
exchange waits for the watchdog's word instead of trio's per-read registration, and an idle
connection known to hold nothing is reused after a look at the whole set, not a ``poll`` of
its own. On real loopback sockets, in both modes (the trio waits are what a machine without
epoll gets)."""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Callable

import h11
import pytest
import trio
import trio.testing

from chatmod.chatsight.http_connection import Connection, ExchangeWatchdog
from chatmod.chatsight.http_pool import KeepAlivePoster

from .test_chatsight_http_pool import (
    OK_BODY,
    TIMEOUT,
    Handler,
    answer,
    keep_alive_server,
    poster,
    read_request,
    serve,
)

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")

ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(OK_BODY)) + OK_BODY


class CountingPoll:
    """Stands in for a connection's ``select.poll`` object, counting the looks."""

    def __init__(self, real: select.poll) -> None:
        self.real = real
        self.calls = 0

    def poll(self, timeout: int) -> list[tuple[int, int]]:
        self.calls += 1
        return self.real.poll(timeout)


async def serving_poster(nursery: trio.Nursery, handler: Handler, watched: bool
                         ) -> tuple[KeepAlivePoster, list[int]]:
    """A poster for a loopback server running ``handler``, its sockets watched by its
    watchdog or (``watched`` False) waited on through trio, as on a machine without epoll;
    and the server's list of connections."""
    url, accepted = await serve(nursery, handler)
    client = poster(url)
    if not watched:
        client._watchdog = ExchangeWatchdog(watch_sockets=False)
    return client, accepted


@pytest.mark.parametrize("watched", [True, False], ids=["watched", "trio-waits"])
async def test_a_connection_known_to_be_empty_is_not_polled_on_reuse(
        nursery: trio.Nursery, watched: bool) -> None:
    # Watched, a reuse looks at the whole set (one epoll_wait) instead of polling the socket.
    client, accepted = await serving_poster(nursery, keep_alive_server, watched)
    with trio.fail_after(TIMEOUT):
        assert (await client.post(b"{}")).status == 200
        (connection,) = client._idle
        looks = CountingPoll(connection._readable)
        connection._readable = looks  # type: ignore[assignment]
        for _ in range(3):
            assert (await client.post(b"{}")).status == 200
    assert (len(accepted), client.connections_opened) == (1, 1)
    assert looks.calls == (0 if watched else 3)
    await client.aclose()


@pytest.mark.parametrize("watched", [True, False], ids=["watched", "trio-waits"])
async def test_bytes_sent_unasked_to_an_idle_connection_are_noticed(
        nursery: trio.Nursery, watched: bool) -> None:
    send_unasked = trio.Event()

    async def answers_then_sends_more(stream: trio.SocketStream, n: int) -> None:
        server = h11.Connection(h11.SERVER)
        while await read_request(stream, server) is not None:
            await stream.send_all(answer(server))
            server.start_next_cycle()
            if n == 1:
                await send_unasked.wait()
                await stream.send_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")

    client, accepted = await serving_poster(nursery, answers_then_sends_more, watched)
    with trio.fail_after(TIMEOUT):
        assert (await client.post(b"{}")).status == 200
        (idle,) = client._idle
        assert not idle.closed_while_idle()
        send_unasked.set()
        await trio.lowlevel.wait_readable(idle.sock)  # the bytes are there
        await trio.testing.wait_all_tasks_blocked()  # and the watchdog has run
        assert idle.closed_while_idle()
        assert (await client.post(b"{}")).body == OK_BODY  # on a new connection
    assert len(accepted) == 2
    await client.aclose()


async def exchange_then(ours: socket.socket, theirs: socket.socket,
                        after_request: Callable[[socket.socket], None]) -> KeepAlivePoster:
    """One exchange on a connected pair, ``theirs`` the server: once the request is read,
    ``after_request(theirs)`` sends what it sends without a checkpoint, so that the watchdog's
    one look sees all of it. The poster, its connection idle after the answer."""
    client = poster("http://127.0.0.1:1/text/moderation")
    ours.setblocking(False)
    theirs.setblocking(False)
    connection = Connection(ours, client._watchdog)

    async def server() -> None:
        request = b""
        while not request.endswith(b"\r\n\r\n{}"):
            await trio.lowlevel.wait_readable(theirs)
            request += theirs.recv(65536)
        after_request(theirs)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server)
        until = trio.current_time() + TIMEOUT
        assert (await client._timed_exchange(connection, b"{}", until)).body == OK_BODY
    assert client._idle == [connection]
    return client


async def test_a_close_that_came_with_the_answer_is_noticed() -> None:
    # The answer and the server's end arrive together, before the watchdog looks: the read
    # that takes the answer empties the socket of data, yet the end is still to come.
    def answer_and_end(theirs: socket.socket) -> None:
        theirs.sendall(ANSWER)
        theirs.shutdown(socket.SHUT_WR)

    ours, theirs = socket.socketpair()
    with theirs, trio.fail_after(TIMEOUT):
        client = await exchange_then(ours, theirs, answer_and_end)
        (connection,) = client._idle
        assert connection.hung_up
        assert connection.closed_while_idle()
    await client.aclose()


async def test_a_short_read_at_an_urgent_mark_does_not_hide_the_rest() -> None:
    # recv() stops at TCP's urgent mark: a short read with more bytes queued behind it, for
    # which no event will come. A connection that got urgent data is not reused.
    def answer_urgent_and_more(theirs: socket.socket) -> None:
        theirs.sendall(ANSWER)
        theirs.send(b"!", socket.MSG_OOB)
        theirs.sendall(b"stray")

    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    theirs, _ = listener.accept()
    listener.close()
    with theirs, trio.fail_after(TIMEOUT):
        client = await exchange_then(ours, theirs, answer_urgent_and_more)
        (connection,) = client._idle
        await trio.testing.wait_all_tasks_blocked()  # the watchdog has looked
        assert connection.urgent
        assert connection.closed_while_idle(), "stray bytes behind the urgent mark missed"
    await client.aclose()


async def test_a_failing_socket_watch_falls_back_to_trio_waits(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    class BrokenEpoll:
        def __init__(self, real: select.epoll) -> None:
            self.real = real

        def fileno(self) -> int:
            return self.real.fileno()

        def register(self, fd: int, flags: int) -> None:
            self.real.register(fd, flags)

        def unregister(self, fd: int) -> None:
            self.real.unregister(fd)

        def poll(self, timeout: float) -> list[tuple[int, int]]:
            raise OSError("simulated failure")

        def close(self) -> None:
            self.real.close()

    url, accepted = await serve(nursery, keep_alive_server)
    client = poster(url)
    watchdog = client._watchdog
    assert watchdog._epoll is not None
    watchdog._epoll = BrokenEpoll(watchdog._epoll)  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="chatmod.engine.chatsight.http"), \
            trio.fail_after(TIMEOUT):
        for _ in range(3):  # the first waits on the watch as it fails
            assert (await client.post(b"{}")).status == 200
    assert not watchdog.watches_sockets
    assert (len(accepted), client.connections_opened) == (1, 1)
    assert any("watching sockets failed" in r.getMessage() for r in caplog.records)
    await client.aclose()


async def test_the_socket_set_is_closed_with_the_poster(nursery: trio.Nursery) -> None:
    unused = poster("http://127.0.0.1:1/text/moderation")
    await unused.aclose()
    assert unused._watchdog._epoll is None  # closed at once: no task ever ran

    url, _ = await serve(nursery, keep_alive_server)
    client = poster(url)
    with trio.fail_after(TIMEOUT):
        assert (await client.post(b"{}")).status == 200
        assert client._watchdog.watches_sockets
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()  # the task ends, closing the set
    assert client._watchdog._epoll is None
    assert client._watchdog._sockets == {}


async def test_a_poster_without_an_epoll_set_waits_through_trio(
        nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_descriptors() -> select.epoll:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(select, "epoll", out_of_descriptors)
    url, _ = await serve(nursery, keep_alive_server)
    client = poster(url)
    monkeypatch.undo()
    with trio.fail_after(TIMEOUT):
        for _ in range(2):
            assert (await client.post(b"{}")).status == 200
    assert client._watchdog._epoll is None
    assert not client._watchdog.watches_sockets
    await client.aclose()
