"""The embedded HTTP server in-process: HEAD, the timeouts, the connection cap, containment of
a connection's failure, graceful shutdown, and the rate-limited log of refusals."""

from __future__ import annotations

import logging
from functools import partial

import httpx
import pytest
import trio

from chatmod.http.api import StatusApi
from chatmod.http.limits import RateLimitedLog, ServerCounters, ServerLimits
from chatmod.http.server import HttpRequest, HttpResponse, serve_http

from .raw_http import exchange, read_response, read_until_closed, request, statuses

# Short enough for quick tests, long enough that a loaded machine never trips them by mistake.
SHORT = 0.5
BOUND = 10.0  # no test here waits longer than this for anything


def status_api() -> StatusApi:
    return StatusApi(lambda: True, lambda: b"chatmod_messages_received_total 1\n")


async def start(nursery: trio.Nursery, handler: object = None,
                counters: ServerCounters | None = None, **limits: float) -> int:
    serve = partial(serve_http, handler or status_api().handle, "127.0.0.1", 0,
                    max_body=1024, limits=ServerLimits(**limits),  # type: ignore[arg-type]
                    counters=counters)
    port: int = await nursery.start(serve)
    return port


async def start_stoppable(nursery: trio.Nursery, handler: object, **limits: float
                          ) -> tuple[int, trio.CancelScope, trio.Event]:
    """A server to stop: its port, the scope to cancel, and an event set once it ended."""
    scope, ended = trio.CancelScope(), trio.Event()

    async def run(*, task_status: trio.TaskStatus[int]) -> None:
        with scope:
            await serve_http(handler, "127.0.0.1", 0,  # type: ignore[arg-type]
                             limits=ServerLimits(**limits), task_status=task_status)
        ended.set()

    port: int = await nursery.start(run)
    return port, scope, ended


async def healthz(port: int) -> int:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code


async def test_head_is_answered_as_get_without_a_body(nursery: trio.Nursery) -> None:
    port = await start(nursery)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for path in ("/healthz", "/readyz", "/metrics", "/nope", "/webhooks/chatsight"):
            get = await client.get(path)
            head = await client.head(path)  # the same connection: keep-alive after a HEAD
            assert (head.status_code, head.content) == (get.status_code, b""), path
            assert head.headers["content-length"] == str(len(get.content)), path
    with trio.fail_after(BOUND):
        # Pipelined: the HEAD response has no body, so the GET after it is read right.
        reply = await exchange(port, request("HEAD", "/healthz")
                               + request("GET", "/healthz", close=True))
    assert statuses(reply) == [200, 200]
    assert reply.endswith(b'\r\n\r\n{"status": "alive"}')
    assert reply.count(b'{"status": "alive"}') == 1


async def test_a_failing_connection_is_closed_and_logged_and_the_server_goes_on(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        if request.path == "/bad-header":  # h11 refuses to send it: fails inside the server
            return HttpResponse(200, b"{}", headers=(("x-split", "a\r\nb"),))
        if request.path == "/raises":
            raise RuntimeError("handler bug")
        return HttpResponse(200, b"{}")

    port = await start(nursery, handler)
    with trio.fail_after(BOUND):
        for _ in range(3):
            assert await exchange(port, request("GET", "/bad-header")) == b""
            assert statuses(await exchange(port, request("GET", "/raises"))) == [500]
            assert await healthz(port) == 200
    failed = [r for r in caplog.records if "failed; closed it" in r.getMessage()]
    assert len(failed) == 1  # three failures, one line: the others are counted in the next
    assert failed[0].exc_info is not None
    assert sum("HTTP handler failed" in r.getMessage() for r in caplog.records) == 1


async def test_an_idle_keep_alive_connection_is_closed(nursery: trio.Nursery) -> None:
    port = await start(nursery, keep_alive_timeout=SHORT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request("GET", "/healthz"))
        assert statuses(await read_response(stream)) == [200]
        began = trio.current_time()
        assert await read_until_closed(stream, BOUND) == b""  # closed without a word
        assert trio.current_time() - began >= SHORT * 0.9


async def test_a_connection_that_sends_nothing_is_closed(nursery: trio.Nursery) -> None:
    port = await start(nursery, header_timeout=SHORT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        assert await read_until_closed(stream, BOUND) == b""


async def trickle(stream: trio.SocketStream, chunks: list[bytes], pause: float) -> None:
    """A slowloris: one piece every ``pause`` seconds, until the server hangs up."""
    for chunk in chunks:
        try:
            await stream.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        await trio.sleep(pause)


async def test_a_trickling_request_head_gets_408_and_is_closed(nursery: trio.Nursery) -> None:
    port = await start(nursery, header_timeout=SHORT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        # Each piece arrives well within any per-read timeout; the head as a whole does not.
        pieces = [b"GET /healthz HTTP/1.1\r\n"] + [b"X-Slow: %d\r\n" % i for i in range(1000)]
        nursery.start_soon(trickle, stream, pieces, SHORT / 10)
        reply = await read_until_closed(stream, BOUND)
    assert statuses(reply) == [408]
    assert await healthz(port) == 200


async def test_a_trickling_body_gets_408_and_is_closed(nursery: trio.Nursery) -> None:
    port = await start(nursery, body_timeout=SHORT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = b"POST /webhooks/chatsight HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
        nursery.start_soon(trickle, stream, [head] + [b"x"] * 999, SHORT / 10)
        reply = await read_until_closed(stream, BOUND)
    assert statuses(reply) == [408]


async def test_a_peer_that_does_not_read_its_response_is_dropped(
        nursery: trio.Nursery) -> None:
    async def big(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, b"x" * 64_000_000)  # far more than the socket buffers hold

    port = await start(nursery, big, send_timeout=SHORT)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request("GET", "/big"))
        await trio.sleep(SHORT * 4)  # not reading: the server's send must give up meanwhile
        received = len(await read_until_closed(stream, BOUND))
    assert 0 < received < 64_000_000


async def test_an_expected_100_continue_is_sent(nursery: trio.Nursery) -> None:
    port = await start(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                              b"Expect: 100-continue\r\n\r\n")
        with trio.fail_after(BOUND):
            assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 100 ")
        await stream.send_all(b"{}")
        assert statuses(await read_response(stream)) == [405]


async def test_at_the_cap_the_connection_waiting_longest_makes_room(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    counters = ServerCounters()
    port = await start(nursery, counters=counters, max_connections=3)
    held = []
    for _ in range(3):  # each served once, so the server has them, in this order
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(request("GET", "/healthz"))
        assert statuses(await read_response(stream)) == [200]
        held.append(stream)
    try:
        assert await healthz(port) == 200  # a fourth: the first one held is closed for it
        assert await read_until_closed(held[0], BOUND) == b""
        await held[1].send_all(request("GET", "/readyz"))
        assert statuses(await read_response(held[1])) == [200]  # the others were not
        counted = counters.statistics()
        # Open: held[1] and held[2], and the health check's until the server reads its end.
        assert counted.pop("open") in (2, 3)
        assert counted == {**dict.fromkeys(ServerCounters.KEYS, 0),
                           "accepted": 4, "requests": 5, "evicted": 1}
    finally:
        for stream in held:
            await stream.aclose()
    assert any("closed the one waiting longest" in r.getMessage() for r in caplog.records)


async def test_slow_peers_cannot_crowd_out_a_health_check(nursery: trio.Nursery) -> None:
    port = await start(nursery, max_connections=20)
    with trio.fail_after(BOUND):
        slow = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(60)]
        for stream in slow:  # half a head each, then nothing
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost:")
        assert await healthz(port) == 200
    for stream in slow:
        await stream.aclose()


async def test_at_the_cap_with_every_connection_answering_a_new_one_gets_503(
        nursery: trio.Nursery) -> None:
    entered, release = trio.Semaphore(0), trio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        if request.path == "/slow":
            entered.release()
            await release.wait()
        return HttpResponse(200, b"{}")

    port = await start(nursery, handler, max_connections=2)
    replies: list[bytes] = []

    async def slow() -> None:
        replies.append(await exchange(port, request("GET", "/slow"), within=BOUND))

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as clients:
            for _ in range(2):
                clients.start_soon(slow)
            await entered.acquire()
            await entered.acquire()
            assert statuses(await exchange(port, request("GET", "/healthz"))) == [503]
            release.set()
    assert [statuses(r) for r in replies] == [[200], [200]]
    assert await healthz(port) == 200


async def test_a_stop_lets_responses_under_way_finish(nursery: trio.Nursery) -> None:
    entered, release = trio.Event(), trio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        entered.set()
        await release.wait()
        return HttpResponse(200, b'{"done": true}')

    with trio.fail_after(BOUND):
        port, server, ended = await start_stoppable(nursery, handler)
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        await busy.send_all(request("POST", "/work", body=b"{}"))
        await entered.wait()
        server.cancel()
        assert await read_until_closed(idle, BOUND) == b""  # idle: closed at once
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream("127.0.0.1", port)  # no longer accepting
        assert not ended.is_set()  # the response under way holds the stop
        release.set()
        reply = await read_until_closed(busy, BOUND)
        await ended.wait()
    assert statuses(reply) == [200]
    assert b"connection: close" in reply.lower()
    assert reply.endswith(b'{"done": true}')
    await idle.aclose()
    await busy.aclose()


async def test_a_stop_waits_for_a_stuck_handler_only_for_the_grace(
        nursery: trio.Nursery) -> None:
    entered = trio.Event()

    async def stuck(request: HttpRequest) -> HttpResponse:
        entered.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    with trio.fail_after(BOUND):
        port, server, ended = await start_stoppable(nursery, stuck, shutdown_grace=SHORT)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(request("GET", "/stuck"))
        await entered.wait()
        began = trio.current_time()
        server.cancel()
        await ended.wait()
        assert trio.current_time() - began >= SHORT * 0.9
        assert await read_until_closed(stream, BOUND) == b""
    await stream.aclose()


def test_rate_limited_log_says_how_many_lines_it_left_out(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    say = RateLimitedLog(logging.getLogger("test.rate"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "test.rate"):
        for _ in range(5):
            say.log(logging.WARNING, "refused", "refused %s", "a")
        say.log(logging.WARNING, "other", "another kind")  # its own allowance
        now[0] += 10.0
        say.log(logging.WARNING, "refused", "refused %s", "b")
    assert [r.getMessage() for r in caplog.records] == [
        "refused a", "another kind", "refused b (and 4 more like this since)"]
