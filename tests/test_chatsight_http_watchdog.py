"""The lean HTTP client's watchdog: every exchange ends at its time (``timeout``, or the
caller's deadline when sooner) without a cancel scope of its own, on real loopback sockets."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import h11
import pytest
import trio
import trio.lowlevel
import trio.testing

from chatmod.chatsight import http_pool
from chatmod.chatsight.http_connection import Connection
from chatmod.errors import ExchangeFailed, ExchangeTimedOut

from .test_chatsight_http_pool import (
    TIMEOUT,
    Handler,
    answer,
    keep_alive_server,
    plain_socket,
    poster,
    read_request,
    serve,
)

WATCHDOG = "chatmod HTTP watchdog"


def watchdog_tasks() -> list[trio.lowlevel.Task]:
    """The watchdog tasks running in this run (they are system tasks)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    return [task for nursery in root.child_nurseries for task in nursery.child_tasks
            if task.name == WATCHDOG]


async def connected_socket(url: str) -> socket.socket:
    """A plain socket connected to ``url``'s server, as the pool drives its connections."""
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
    return plain_socket(sock)


def never_answering(request_read: trio.Event) -> Handler:
    """A server handler that reads the request, sets ``request_read``, and never answers."""
    async def never_answer(stream: trio.SocketStream, _n: int) -> None:
        await read_request(stream, h11.Connection(h11.SERVER))
        request_read.set()
        await trio.sleep_forever()
    return never_answer


async def answers_once_then_never(stream: trio.SocketStream, _n: int) -> None:
    server = h11.Connection(h11.SERVER)
    await read_request(stream, server)
    await stream.send_all(answer(server))
    server.start_next_cycle()
    await read_request(stream, server)
    await trio.sleep_forever()


async def test_a_reused_connection_that_stops_answering_times_out_and_is_closed(
        nursery: trio.Nursery) -> None:
    url, accepted = await serve(nursery, answers_once_then_never)
    client = poster(url, timeout=0.2)
    with trio.fail_after(TIMEOUT):
        assert (await client.post(b"{}")).status == 200
        with pytest.raises(ExchangeTimedOut, match=r"no answer within 0\.2 s"):
            await client.post(b"{}")  # the idle connection, reused
    assert client._idle == []  # the expired connection is closed, not kept for reuse
    assert client._watchdog.busy == {}
    assert len(accepted) == 1


async def test_a_sooner_deadline_wakes_the_watchdog_sooner(nursery: trio.Nursery) -> None:
    # The first exchange sets the watchdog's wake at its own end, 60 s away; the second must
    # end at its deadline, 0.2 s away, not then.
    first_request_read = trio.Event()
    url, _ = await serve(nursery, never_answering(first_request_read))
    client = poster(url, timeout=60.0)
    first_done = trio.Event()

    async def first() -> None:
        with pytest.raises(ExchangeTimedOut):
            await client.post(b"{}")
        first_done.set()

    nursery.start_soon(first)
    with trio.fail_after(TIMEOUT):
        await first_request_read.wait()
        started = trio.current_time()
        with pytest.raises(ExchangeTimedOut):
            await client.post(b"{}", deadline=started + 0.2)
    assert trio.current_time() - started < TIMEOUT / 2
    assert not first_done.is_set()  # the first keeps its own, later end
    assert len(client._watchdog.busy) == 1
    await client.aclose()


async def test_an_answer_in_time_is_not_cut_when_others_expire(nursery: trio.Nursery) -> None:
    first_request_read = trio.Event()

    async def slow_then_fine(stream: trio.SocketStream, n: int) -> None:
        server = h11.Connection(h11.SERVER)
        await read_request(stream, server)
        if n == 1:
            first_request_read.set()
            await trio.sleep_forever()  # the first connection never answers
        await stream.send_all(answer(server))

    url, _ = await serve(nursery, slow_then_fine)
    client = poster(url, timeout=0.3)
    outcomes: list[str] = []

    async def one() -> None:
        try:
            outcomes.append(str((await client.post(b"{}")).status))
        except ExchangeTimedOut:
            outcomes.append("timed out")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as requests:
            requests.start_soon(one)
            await first_request_read.wait()  # the second request gets its own connection
            requests.start_soon(one)
    assert sorted(outcomes) == ["200", "timed out"]
    await client.aclose()


async def test_a_connection_expired_as_its_answer_came_is_not_reused(
        nursery: trio.Nursery) -> None:
    # The watchdog flags a connection whose answer has already arrived, before the
    # exchange's task runs again: the answer stands, the connection is closed.
    class ExpiresAsItsAnswerComes(Connection):
        async def receive(self, wait_first: bool = False) -> bytes:
            data = await super().receive(wait_first)
            self.expired = True
            return data

    url, accepted = await serve(nursery, keep_alive_server)
    client = poster(url)
    connection = ExpiresAsItsAnswerComes(await connected_socket(url))
    with trio.fail_after(TIMEOUT):
        assert (await client._exchange(connection, b"{}")).status == 200
    assert client._idle == []
    assert connection.sock.fileno() == -1  # closed
    with trio.fail_after(TIMEOUT):
        assert (await client.post(b"{}")).status == 200  # on a new connection
    assert len(accepted) == 2
    await client.aclose()


async def test_the_watchdog_ends_after_aclose_once_nothing_is_under_way(
        nursery: trio.Nursery) -> None:
    url, _ = await serve(nursery, keep_alive_server)
    client = poster(url)
    with trio.fail_after(TIMEOUT):
        assert (await client.post(b"{}")).status == 200
        assert len(watchdog_tasks()) == 1
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
    assert watchdog_tasks() == []


async def test_the_watchdog_ends_after_aclose_once_the_last_exchange_times_out(
        nursery: trio.Nursery) -> None:
    request_read = trio.Event()
    url, _ = await serve(nursery, never_answering(request_read))
    client = poster(url, timeout=0.3)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as requests:

            async def one() -> None:
                with pytest.raises(ExchangeTimedOut):
                    await client.post(b"{}")

            requests.start_soon(one)
            await request_read.wait()
            await client.aclose()  # the exchange under way keeps its bound
        await trio.testing.wait_all_tasks_blocked()
    assert client._watchdog.busy == {}
    assert watchdog_tasks() == []


async def test_an_exchange_expired_as_its_caller_cancels_it_is_cancelled(
        nursery: trio.Nursery) -> None:
    # A websocket reply wins the race as the request's time runs out: the caller's
    # cancellation, not a timeout (which the engine would count as an HTTP failure).
    url, _ = await serve(nursery, keep_alive_server)
    client = poster(url)
    connection = Connection(await connected_socket(url))
    with trio.fail_after(TIMEOUT):
        with trio.CancelScope() as caller:
            caller.cancel()
            connection.expired = True  # flagged by the watchdog in the same moment
            await client._timed_exchange(connection, b"{}", trio.current_time())
    assert caller.cancelled_caught
    assert client._watchdog.busy == {}
    await client.aclose()


def flooding_server(flood: tuple[bytes, bytes], seconds: float
                    ) -> tuple[int, threading.Thread]:
    """A server on its own thread (the client's run may not let a trio one run): reads one
    request, sends ``flood``'s first part, then its second over and over for ``seconds``
    or until the client goes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve_one() -> None:
        with listener:
            listener.settimeout(TIMEOUT)
            connection, _ = listener.accept()
            with connection, contextlib.suppress(OSError):
                connection.recv(65536)
                first, repeated = flood
                connection.sendall(first)
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    connection.sendall(repeated)

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


FLOODS = {  # what is sent first, then what is sent again and again
    "endless-1xx": (b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 4000),  # informational, no end
    "padded-chunks": (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                      (b"1;" + b"x" * 60000 + b"\r\na\r\n") * 4),  # a byte, long extension
}


async def post_to_a_flood(flood: tuple[bytes, bytes]) -> tuple[Exception, float, int]:
    """What ``post`` raised, how long it took, and how often another task ran meanwhile."""
    port, thread = flooding_server(flood, seconds=10.0)
    client = poster(f"http://127.0.0.1:{port}/text/moderation", timeout=0.3)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tick)
        with pytest.raises((ExchangeTimedOut, ExchangeFailed)) as raised:
            await client.post(b"{}")
        nursery.cancel_scope.cancel()
    took = time.monotonic() - started
    await client.aclose()
    thread.join(TIMEOUT + 10.0)  # the server stops writing once the client has closed
    assert not thread.is_alive()
    return raised.value, took, ticks


@pytest.mark.parametrize("flood", FLOODS.values(), ids=FLOODS.keys())
async def test_an_endless_answer_is_cut_at_the_size_limit(
        flood: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    # Every byte of an answer counts against MAX_ANSWER_SIZE, framing and 1xx included
    # (lowered here so that it, not the 0.3 s timeout, ends the exchange).
    monkeypatch.setattr(http_pool, "MAX_ANSWER_SIZE", 300_000)
    error, took, _ = await post_to_a_flood(flood)
    assert isinstance(error, ExchangeFailed)
    assert "answer over" in str(error)
    assert took < TIMEOUT


@pytest.mark.parametrize("flood", FLOODS.values(), ids=FLOODS.keys())
async def test_a_server_that_keeps_the_socket_full_cannot_hold_the_run(
        flood: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    # recv never has to wait: without a pause per read, neither the watchdog nor any other
    # task would run until the server stopped (10 s here). The size limit is lifted so that
    # only the time bounds it.
    monkeypatch.setattr(http_pool, "MAX_ANSWER_SIZE", 1 << 40)
    error, took, ticks = await post_to_a_flood(flood)
    assert isinstance(error, ExchangeTimedOut)
    assert took < TIMEOUT  # its 0.3 s timeout, not the flood's 10 s
    assert ticks > 10  # the other task ran all along


def test_one_client_is_watched_in_each_trio_run_it_is_used_in() -> None:
    # A poster outlives a run only in tests, but then its watchdog must start again: the
    # first run's task ended with that run.
    client = poster("http://127.0.0.1:1/text/moderation", timeout=0.2)

    async def one_run() -> None:
        async with trio.open_nursery() as nursery:
            url, _ = await serve(nursery, never_answering(trio.Event()))
            port = url.split(":")[2].split("/")[0]
            client.port = int(port)  # the same client, this run's server
            with trio.fail_after(TIMEOUT), pytest.raises(ExchangeTimedOut):
                await client.post(b"{}")
            nursery.cancel_scope.cancel()

    trio.run(one_run)
    trio.run(one_run)


async def test_a_wait_after_expiry_raises_at_once() -> None:
    # Expired while its task was about to run, not waiting: the notice reached no one, so
    # the next wait must not block.
    ours, theirs = socket.socketpair()
    with theirs:
        connection = Connection(plain_socket(trio.socket.from_stdlib_socket(ours)))
        connection.expired = True
        with trio.fail_after(TIMEOUT), pytest.raises(trio.ClosedResourceError):
            await connection.receive(wait_first=True)
        connection.close()
