"""The poster's watchdog and its epoll set over a poster's life: aclose with
exchanges in flight and a new poster in the same run; a retry on a new connection after
aclose; the epoll set's descriptor number reused by the next poster."""

from __future__ import annotations

import select
import socket
import threading

import pytest
import trio
import trio.testing

from chatmod.chatsight.http_pool import KeepAlivePoster
from chatmod.errors import ExchangeFailed, ExchangeTimedOut

from .test_chatsight_http_pool import OK_BODY, TIMEOUT, poster
from .test_chatsight_http_stray_bytes import ANSWER, ThreadServer, read_request

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")


async def test_aclose_with_exchanges_in_flight_then_a_new_poster_in_the_same_run() -> None:
    release = threading.Event()
    read = threading.Semaphore(0)

    def script(conn: socket.socket, number: int) -> None:
        buffer = bytearray()
        while read_request(conn, buffer):
            read.release()
            if number <= 4:
                assert release.wait(TIMEOUT)
            conn.sendall(ANSWER)

    server = ThreadServer(script)
    first = poster(server.url)
    replies: list[bytes] = []
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                async def one(client: KeepAlivePoster) -> None:
                    replies.append((await client.post(b"{}")).body)
                for _ in range(4):
                    nursery.start_soon(one, first)
                for _ in range(4):
                    await trio.to_thread.run_sync(read.acquire)
                await first.aclose()
                old_epoll = first._watchdog._epoll
                assert old_epoll is not None  # exchanges under way keep it
                second = poster(server.url)
                for _ in range(3):
                    nursery.start_soon(one, second)
                for _ in range(3):
                    await trio.to_thread.run_sync(read.acquire)
                await trio.testing.wait_all_tasks_blocked()
                release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert first._watchdog._epoll is None
            assert first._watchdog._sockets == {}
            assert first._idle == []
            # The second poster, its epoll set perhaps on the first one's number, works.
            for _ in range(5):
                assert (await second.post(b"{}")).body == OK_BODY
            await second.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert second._watchdog._epoll is None
    finally:
        server.close()
    assert replies == [OK_BODY] * 7


async def test_a_retry_after_aclose_still_has_its_deadline() -> None:
    # A reused connection fails as it is taken; meanwhile the poster is closed; the retry on
    # a new connection gets no answer: it must still time out (the watchdog had ended).
    request_2_read = threading.Event()
    close_it = threading.Event()

    def script(conn: socket.socket, number: int) -> None:
        buffer = bytearray()
        if number == 1:
            read_request(conn, buffer)
            conn.sendall(ANSWER)
            read_request(conn, buffer)
            request_2_read.set()
            assert close_it.wait(TIMEOUT)
            conn.close()
        else:
            read_request(conn, buffer)  # and never answer
            conn.recv(1)

    server = ThreadServer(script)
    client = poster(server.url, timeout=0.5)
    try:
        with trio.fail_after(TIMEOUT):
            assert (await client.post(b"{}")).body == OK_BODY
            async with trio.open_nursery() as nursery:
                outcome: list[BaseException] = []

                async def second() -> None:
                    try:
                        await client.post(b"{}")
                    except (ExchangeFailed, ExchangeTimedOut) as exc:
                        outcome.append(exc)

                nursery.start_soon(second)
                await trio.to_thread.run_sync(request_2_read.wait)
                await client.aclose()
                close_it.set()
            assert len(outcome) == 1, outcome
            assert isinstance(outcome[0], ExchangeTimedOut), outcome
            await trio.testing.wait_all_tasks_blocked()
            assert client._watchdog.busy == {}
            assert client._watchdog._sockets == {}
    finally:
        server.close()
    assert server.accepted == 2  # the retry took a new connection
