"""The lean HTTP client's watchdog: every exchange ends at its time (``timeout``, or the
caller's deadline when sooner) without a cancel scope of its own, on real loopback sockets."""

from __future__ import annotations

import socket

import h11
import pytest
import trio
import trio.testing

from chatmod.chatsight.http_connection import Connection
from chatmod.errors import ExchangeTimedOut

from .test_chatsight_http_pool import (
    TIMEOUT,
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

    async def never_answer(stream: trio.SocketStream, _n: int) -> None:
        await read_request(stream, h11.Connection(h11.SERVER))
        first_request_read.set()
        await trio.sleep_forever()

    url, _ = await serve(nursery, never_answer)
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
    port = int(url.split(":")[2].split("/")[0])
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    connection = ExpiresAsItsAnswerComes(plain_socket(sock))
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


def test_one_client_is_watched_in_each_trio_run_it_is_used_in() -> None:
    # A poster outlives a run only in tests, but then its watchdog must start again: the
    # first run's task ended with that run.
    client = poster("http://127.0.0.1:1/text/moderation", timeout=0.2)

    async def one_run() -> None:
        async def never_answer(stream: trio.SocketStream, _n: int) -> None:
            await read_request(stream, h11.Connection(h11.SERVER))
            await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            url, _ = await serve(nursery, never_answer)
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
