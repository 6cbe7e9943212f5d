"""The HTTP fallback's keep-alive client (chatsight/http_pool.py) against real loopback servers.

Keep-alive reuse, a server closing idle connections (noticed before reuse, or at the moment
of reuse), timeouts, oversized and invalid answers; and a property: whatever bytes a server
answers, the client returns an answer or raises ExchangeFailed, never anything else.
Examples per property: 200, or 10,000 with ``HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable

import h11
import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.chatsight import http_pool
from chatmod.chatsight.http import ChatsightHttp
from chatmod.chatsight.http_connection import Connection
from chatmod.chatsight.http_pool import (
    ExchangeFailed,
    ExchangeTimedOut,
    KeepAlivePoster,
)
from chatmod.errors import EngineError
from chatmod.sandbox.answers import moderation_reply

KEY = "c.test.0123456789abcdef"
OK_BODY = moderation_reply("pass", 0.1, None)
TIMEOUT = 5.0  # seconds a request may take in tests that expect an answer

# What a server does with one connection: read requests, answer (or not), maybe close.
Handler = Callable[[trio.SocketStream, int], Awaitable[None]]


async def read_request(stream: trio.SocketStream, server: h11.Connection) -> bytes | None:
    """One whole request's body, or None when the client closed the connection."""
    body = b""
    while True:
        event = server.next_event()
        if event is h11.NEED_DATA:
            server.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return body
        elif isinstance(event, h11.ConnectionClosed):
            return None


def answer(server: h11.Connection, status: int = 200, body: bytes = OK_BODY,
           extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    return (server.send(h11.Response(status_code=status, headers=[
        (b"content-length", str(len(body)).encode()), *(extra or [])]))
        + server.send(h11.Data(data=body)) + server.send(h11.EndOfMessage()))


async def keep_alive_server(stream: trio.SocketStream, _connection: int) -> None:
    server = h11.Connection(h11.SERVER)
    while await read_request(stream, server) is not None:
        await stream.send_all(answer(server))
        server.start_next_cycle()


async def serve(nursery: trio.Nursery, handler: Handler) -> tuple[str, list[int]]:
    """A loopback server running ``handler`` per connection; its URL and a list that counts
    connections."""
    accepted: list[int] = []

    async def on_connection(stream: trio.SocketStream) -> None:
        accepted.append(len(accepted))
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     h11.RemoteProtocolError):
                await handler(stream, len(accepted))

    listeners = await nursery.start(trio.serve_tcp, on_connection, 0)
    port = listeners[0].socket.getsockname()[1]
    return f"http://127.0.0.1:{port}/text/moderation", accepted


def plain_socket(sock: trio.socket.SocketType) -> socket.socket:
    """The stdlib socket under a trio one, non-blocking, as the pool drives it."""
    plain = socket.socket(fileno=sock.detach())
    plain.setblocking(False)
    return plain


def poster(url: str, timeout: float = TIMEOUT) -> KeepAlivePoster:
    return KeepAlivePoster(url, [(b"x-chatsight-api-auth", KEY.encode())], timeout)


async def test_connections_are_kept_alive_and_reused(nursery: trio.Nursery) -> None:
    url, accepted = await serve(nursery, keep_alive_server)
    client = poster(url)
    for _ in range(20):
        reply = await client.post(b'{"sample":"hi"}')
        assert (reply.status, reply.body) == (200, OK_BODY)
    assert (client.connections_opened, len(accepted)) == (1, 1)
    async with trio.open_nursery() as callers:  # 8 at once: 8 connections, then reused
        for _ in range(8):
            callers.start_soon(client.post, b'{"sample":"hi"}')
    opened = client.connections_opened
    assert 1 < opened <= 9
    async with trio.open_nursery() as callers:
        for _ in range(8):
            callers.start_soon(client.post, b'{"sample":"hi"}')
    assert client.connections_opened == opened
    await client.aclose()


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    nursery: trio.Nursery,
) -> None:
    async def one_answer_then_close(stream: trio.SocketStream, _n: int) -> None:
        server = h11.Connection(h11.SERVER)
        await read_request(stream, server)
        await stream.send_all(answer(server))  # keep-alive announced, then closed anyway

    url, accepted = await serve(nursery, one_answer_then_close)
    client = poster(url)
    for count in range(1, 4):
        assert (await client.post(b"{}")).status == 200
        assert len(accepted) == count
        (idle,) = client._idle
        with trio.fail_after(TIMEOUT):
            await trio.lowlevel.wait_readable(idle.sock)  # the server's close
            await trio.testing.wait_all_tasks_blocked()  # seen by the watchdog too
        assert idle.closed_while_idle()  # so the next post() opens a new one
    assert client._take_idle() is None
    assert client.connections_opened == 3
    await client.aclose()


async def test_a_connection_closed_as_it_is_reused_is_replaced_once(
    nursery: trio.Nursery,
) -> None:
    async def close_on_second_request(stream: trio.SocketStream, _n: int) -> None:
        server = h11.Connection(h11.SERVER)
        await read_request(stream, server)
        await stream.send_all(answer(server))
        server.start_next_cycle()
        await read_request(stream, server)  # then closed without an answer

    url, accepted = await serve(nursery, close_on_second_request)
    client = poster(url)
    assert (await client.post(b"{}")).status == 200
    assert (await client.post(b"{}")).status == 200  # on a fresh connection
    assert (client.connections_opened, len(accepted)) == (2, 2)
    await client.aclose()


async def test_an_answer_with_bytes_after_it_is_not_reused(nursery: trio.Nursery) -> None:
    """Two answers to one request: the second must not be taken for the next request's
    (an HTTP answer does not say which request it answers)."""
    async def two_answers(stream: trio.SocketStream, _n: int) -> None:
        server = h11.Connection(h11.SERVER)
        while await read_request(stream, server) is not None:
            first = answer(server)
            server.start_next_cycle()
            await stream.send_all(first + first.replace(OK_BODY, OK_BODY.replace(
                b'"pass"', b'"xxxx"')))  # one write: both answers in one read

    url, accepted = await serve(nursery, two_answers)
    client = poster(url)
    for _ in range(2):
        assert (await client.post(b"{}")).body == OK_BODY
    assert len(accepted) == 2
    await client.aclose()


async def test_a_fresh_connection_closed_without_an_answer_fails(nursery: trio.Nursery) -> None:
    async def close_at_once(stream: trio.SocketStream, _n: int) -> None:
        await read_request(stream, h11.Connection(h11.SERVER))

    url, accepted = await serve(nursery, close_at_once)
    with pytest.raises(ExchangeFailed, match="connection"):
        await poster(url).post(b"{}")
    assert len(accepted) == 1  # not retried here: ChatsightHttp's retries decide


async def test_no_answer_times_out(nursery: trio.Nursery) -> None:
    async def never_answer(stream: trio.SocketStream, _n: int) -> None:
        await read_request(stream, h11.Connection(h11.SERVER))
        await trio.sleep_forever()

    url, _ = await serve(nursery, never_answer)
    with pytest.raises(ExchangeTimedOut):
        await poster(url, timeout=0.2).post(b"{}")


async def test_an_oversized_answer_fails(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.setattr(http_pool, "MAX_ANSWER_SIZE", 1000)

    async def big_answer(stream: trio.SocketStream, _n: int) -> None:
        server = h11.Connection(h11.SERVER)
        await read_request(stream, server)
        await stream.send_all(answer(server, body=b"x" * 5000))

    url, _ = await serve(nursery, big_answer)
    with pytest.raises(ExchangeFailed, match="over 1000 bytes"):
        await poster(url).post(b"{}")


async def test_chatsight_http_retries_statuses_with_retry_after_on_the_lean_path(
    nursery: trio.Nursery,
) -> None:
    statuses = [503, 200]

    async def flaky(stream: trio.SocketStream, _n: int) -> None:
        server = h11.Connection(h11.SERVER)
        while await read_request(stream, server) is not None:
            status = statuses.pop(0)
            body = OK_BODY if status == 200 else b"busy"
            await stream.send_all(answer(server, status, body, [(b"Retry-After", b"0")]))
            server.start_next_cycle()

    url, accepted = await serve(nursery, flaky)
    base = url.removesuffix("/text/moderation")
    async with ChatsightHttp(base, KEY, retries=2) as http:
        assert http._poster is not None  # no proxy, no transport: the lean path
        result = await http.moderate("hello")
    assert result.action == "pass"
    assert http.stats["status_503"] == 1
    assert http.stats["retries"] == 1
    assert len(accepted) == 1  # the 503 kept the connection alive


async def test_chatsight_http_reports_an_unreachable_server_as_engine_error() -> None:
    async with ChatsightHttp("http://127.0.0.1:9", KEY, retries=0) as http:
        with pytest.raises(EngineError, match=r"connect to 127\.0\.0\.1:9 failed"):
            await http.moderate("hello")
    assert http.stats["network_errors"] == 1


def test_a_proxy_in_the_environment_keeps_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert http_pool.proxy_configured("https://api.chatsight.ai/text/moderation")
    assert ChatsightHttp("https://api.chatsight.ai", KEY)._poster is None


@given(answer_bytes=st.one_of(
    st.binary(max_size=400),
    st.builds(lambda head, body: head + b"\r\n\r\n" + body,
              st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK\r\ncontent-length: 5",
                               b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked",
                               b"HTTP/1.0 503 x\r\nretry-after: 1", b"HTTP/9 200 OK",
                               b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2"]),
              st.binary(max_size=100)),
))
@example(answer_bytes=b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
@example(answer_bytes=b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
@example(answer_bytes=b"")
async def test_any_answer_is_an_answer_or_exchange_failed(answer_bytes: bytes) -> None:
    ours, theirs = trio.socket.socketpair()
    client = poster("http://127.0.0.1:1/text/moderation")
    with theirs, trio.fail_after(TIMEOUT):
        await theirs.send(answer_bytes) if answer_bytes else None
        theirs.shutdown(trio.socket.SHUT_WR)
        try:
            reply = await client._exchange(Connection(plain_socket(ours)), b"{}")
        except ExchangeFailed:
            return
        finally:
            await client.aclose()  # a connection left reusable is idle: closed here
    assert isinstance(reply.status, int)
    assert isinstance(reply.body, bytes)


def test_a_key_the_lean_path_cannot_send_keeps_httpx() -> None:
    assert ChatsightHttp("http://127.0.0.1:1", "bad\nkey")._poster is None
    assert ChatsightHttp("http://127.0.0.1:1", KEY)._poster is not None


async def test_a_remembered_head_is_used_only_for_the_same_bytes(nursery: trio.Nursery) -> None:
    # The pool remembers the last plain head it parsed (heads repeat but for the Date).
    statuses = [200, 200, 503, 200]

    async def alternating(stream: trio.SocketStream, _n: int) -> None:
        server = h11.Connection(h11.SERVER)
        while statuses and await read_request(stream, server) is not None:
            await stream.send_all(answer(server, statuses.pop(0)))
            server.start_next_cycle()

    url, _ = await serve(nursery, alternating)
    client = poster(url)
    seen = [(await client.post(b"{}")).status for _ in range(4)]
    assert seen == [200, 200, 503, 200]
    assert client.connections_opened == 1
    remembered = client._last_head[1]
    assert remembered is not None
    assert remembered.status == 200
    await client.aclose()
