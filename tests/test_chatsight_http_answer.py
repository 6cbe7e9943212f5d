"""The HTTP fallback reads a plain answer itself (chatsight/http_answer.py) and anything else
with h11: differentially, whatever a server answers, in any reads, the pool's result (answer,
reusable or not, failed) is what h11 alone makes of it.

Examples per property: 200, or 10,000 with ``HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import itertools
import socket
from typing import Any

import h11
import trio
import trio.lowlevel
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.chatsight.http_answer import parse_plain_head
from chatmod.chatsight.http_connection import Connection
from chatmod.chatsight.http_pool import (
    MAX_ANSWER_SIZE,
    RECEIVE_SIZE,
    ExchangeFailed,
    KeepAlivePoster,
    _NothingReceived,
)

TIMEOUT = 10.0
BODY = b'{"sample":"hi"}'
URL = "http://127.0.0.1:1/text/moderation"


async def h11_alone(stream: trio.SocketStream, client: KeepAlivePoster) -> tuple[Any, ...]:
    """The reference: the whole exchange through h11 (the pool before http_answer)."""
    protocol = h11.Connection(h11.CLIENT, max_incomplete_event_size=RECEIVE_SIZE)
    request = h11.Request(method="POST", target=client.target,
                          headers=[*client.headers, (b"content-length", b"%d" % len(BODY))])
    await stream.send_all(protocol.send(request) + protocol.send(h11.Data(data=BODY))
                          + protocol.send(h11.EndOfMessage()))
    received_any = False
    status, headers, parts, size = 0, [], [], 0
    try:
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(RECEIVE_SIZE)
                received_any = received_any or bool(data)
                protocol.receive_data(data)
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_ANSWER_SIZE:
                    return ("failed", not received_any)
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                return ("failed", not received_any)
    except h11.RemoteProtocolError:
        return ("failed", not received_any)
    reusable = (protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
                and not protocol.trailing_data[0])
    return ("answer", status, headers, b"".join(parts), reusable)


async def ours(stream: trio.SocketStream, client: KeepAlivePoster) -> tuple[Any, ...]:
    plain = socket.socket(fileno=stream.socket.detach())  # the pool drives plain sockets
    plain.setblocking(False)
    connection = Connection(plain)
    try:
        answer = await client._exchange(connection, BODY)
    except _NothingReceived:
        return ("failed", True)
    except ExchangeFailed:
        return ("failed", False)
    reusable = connection in client._idle
    client._idle.clear()
    connection.close()
    return ("answer", answer.status, answer.headers, answer.body, reusable)


async def outcome(reads: list[bytes], reader: str) -> tuple[Any, ...]:
    client = KeepAlivePoster(URL, [(b"x-chatsight-api-auth", b"k")], TIMEOUT)
    near, far = trio.socket.socketpair()
    stream = trio.SocketStream(near)
    with far, trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            async def serve() -> None:
                request = b""
                while not request.endswith(BODY):  # the whole request, then the answer
                    request += await far.recv(65536)
                for data in reads:
                    await far.send(data)
                    await trio.lowlevel.checkpoint()
                # Then closed: a reader that wants more sees the end (neither waits forever;
                # one with a whole answer has returned without reading on).
                far.shutdown(trio.socket.SHUT_WR)

            nursery.start_soon(serve)
            result = await (ours(stream, client) if reader == "ours"
                            else h11_alone(stream, client))
            nursery.cancel_scope.cancel()
    near.close()
    return result


def head(status: bytes, *headers: bytes) -> bytes:
    return status + b"".join(b"\r\n" + h for h in headers) + b"\r\n\r\n"


header_lines = st.one_of(
    st.sampled_from([b"Content-Type: application/json", b"connection: keep-alive",
                     b"Connection: close", b"Keep-Alive: timeout=5", b"transfer-encoding: chunked",
                     b"X-Odd:\tvalue \t", b"x-empty:", b"x-fold: a\r\n b", b"bad header: x",
                     b"x-obs: \xe9t\xe9", b"x-ctl: a\x01b", b"Content-Length: 5",
                     b"content-length: 007", b"content-length: 1, 1", b"upgrade: h2c"]),
    st.builds(lambda n, v: n + b": " + v,
              st.from_regex(rb"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}\Z"),
              st.binary(max_size=20)),
)


@st.composite
def answers(draw: st.DrawFn) -> list[bytes]:
    body = draw(st.binary(max_size=60))
    status = draw(st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Busy", b"HTTP/1.1 200",
                                   b"HTTP/1.1 204 No Content", b"HTTP/1.0 200 OK",
                                   b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
                                   b"HTTP/1.1 404 \xe9", b"HTTP/1.1 20 x", b"HTTP/2 200"]))
    lines = draw(st.lists(header_lines, max_size=4))
    if draw(st.booleans()):
        lines.append(b"content-length: %d" % (len(body) + draw(st.sampled_from([0, 0, 0, -1, 1]))))
    data = head(status, *lines) + body + draw(st.sampled_from([b"", b"", b"HTTP/1.1 200 OK"]))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@given(script=answers())
@example(script=[head(b"HTTP/1.1 200 OK", b"content-length: 2") + b"ok"])
@example(script=[head(b"HTTP/1.1 200 OK", b"Connection: keep-alive", b"content-length: 2")
                  + b"ok"])
@example(script=[head(b"HTTP/1.1 200 OK", b"content-length: 2") + b"okEXTRA"])
@example(script=[head(b"HTTP/1.1 200 OK", b"content-length: 4") + b"ok"])
@example(script=[head(b"HTTP/1.1 200 OK", b"transfer-encoding: chunked") + b"2\r\nok\r\n0\r\n\r\n"])
@example(script=[head(b"HTTP/1.1 200 OK") + b"until close"])
@example(script=[])
@example(script=[b"HTTP/1.1 200 OK\r\ncontent-le"])
async def test_the_pool_reads_answers_as_h11_does(script: list[bytes]) -> None:
    assert await outcome(script, "ours") == await outcome(script, "h11")


def test_a_plain_head_is_read_and_anything_else_left_to_h11() -> None:
    plain = parse_plain_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: keep-alive\r\nContent-Length: 12")
    assert plain is not None
    assert (plain.status, plain.content_length) == (200, 12)
    assert plain.headers == [(b"content-type", b"application/json"),
                             (b"connection", b"keep-alive"), (b"content-length", b"12")]
    for odd in (b"HTTP/1.0 200 OK\r\ncontent-length: 1", b"HTTP/1.1 200 OK",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked",
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1",
                b"HTTP/1.1 204 No Content\r\ncontent-length: 0",
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 1"):
        assert parse_plain_head(odd) is None
