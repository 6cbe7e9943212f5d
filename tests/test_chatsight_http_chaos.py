"""The lean HTTP client under chaos, on its epoll readiness path: a threaded loopback server
that, per request, answers or misbehaves at random (split writes, FIN, RST, half-close, stray
bytes) while many callers post at once, some cancelled at random. No post may time out
(an exchange left waiting on a socket that holds its answer or its close would, at 4 s), no
answer returned may be another request's (the server echoes each body), and nothing stays
watched once the poster is closed."""

from __future__ import annotations

import random
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from chatmod.chatsight.http_pool import KeepAlivePoster
from chatmod.errors import ExchangeFailed, ExchangeTimedOut

from .test_chatsight_http_pool import poster
from .test_chatsight_http_stray_bytes import ThreadServer, http_answer, read_one
from .test_chatsight_http_warm import certificate

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux's")

# What the server may do with a request: each name once (TLS leaves out what TCP alone can
# do: a half-close under TLS is not HTTP's, urgent data is not TLS's).
BEHAVIOURS = ["ok", "ok", "ok", "split", "in_two", "close_before", "rst_before",
              "half_close_before", "answer_close", "answer_rst", "answer_half_close",
              "answer_stray", "answer_then_stray", "last_byte_with_stray", "stray_before",
              "partial_close", "partial_rst"]
TLS_BEHAVIOURS = ["ok", "ok", "split", "in_two", "close_before", "rst_before", "answer_close",
                  "answer_rst", "answer_stray", "answer_then_stray", "last_byte_with_stray",
                  "partial_close"]


def rst(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def misbehave(conn: socket.socket, how: str, answer: bytes, cut: int, buffer: bytearray
              ) -> bool:
    """Answer (or not) as ``how`` says; whether the connection is still served."""
    if how == "ok":
        conn.sendall(answer)
    elif how == "split":  # a write (under TLS a record) a byte
        for i in range(len(answer)):
            conn.send(answer[i:i + 1])
    elif how == "in_two":
        conn.sendall(answer[:cut])
        conn.sendall(answer[cut:])
    elif how == "half_close_before":
        conn.shutdown(socket.SHUT_WR)
        read_one(conn, buffer)
        return False
    elif how == "answer_half_close":
        conn.sendall(answer)
        conn.shutdown(socket.SHUT_WR)
    elif how == "answer_stray":  # in the same write
        conn.sendall(answer + b"x" * cut)
    elif how == "answer_then_stray":
        conn.sendall(answer)
        conn.sendall(b"x" * cut)
    elif how == "last_byte_with_stray":
        conn.sendall(answer[:-1])
        conn.sendall(answer[-1:] + b"z" * cut)
    elif how == "stray_before":
        conn.sendall(b"\r\n" * cut + answer)
    else:  # what ends the connection: before, after or amid the answer
        sent = {"answer_close": answer, "answer_rst": answer, "partial_close": answer[:cut],
                "partial_rst": answer[:cut]}.get(how, b"")
        conn.sendall(sent)
        if how.endswith("_rst"):
            rst(conn)
        else:
            conn.close()
        return False
    return True


def chaotic(seed: int, behaviours: list[str], tls: ssl.SSLContext | None = None
            ) -> Callable[[socket.socket, int], None]:
    """A :class:`ThreadServer` script that meets each request with a behaviour chosen at
    random (the server's threads share one generator)."""
    lock = threading.Lock()
    rng = random.Random(seed)

    def script(raw: socket.socket, _number: int) -> None:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = raw if tls is None else tls.wrap_socket(raw, server_side=True)
        buffer = bytearray()
        try:
            while (body := read_one(conn, buffer)) is not None:
                with lock:
                    how = rng.choice(behaviours)
                    cut = rng.randrange(1, 30)
                if not misbehave(conn, how, http_answer(body), cut, buffer):
                    return
        finally:
            conn.close()
    return script


async def post_chaotically(client: KeepAlivePoster, server: ThreadServer, seed: int,
                           callers: int, posts: int, cancel_share: float, cancel_within: float
                           ) -> None:
    """``callers`` tasks post ``posts`` bodies each, a ``cancel_share`` of the posts cancelled
    within ``cancel_within`` seconds; then the poster and the server are closed. No post may
    time out (4 s), none may get another's answer, and nothing may stay watched."""
    rng = random.Random(seed + 1000)
    outcomes: dict[str, int] = {}
    mixed: list[tuple[bytes, bytes]] = []

    async def caller(number: int) -> None:
        for attempt in range(posts):
            body = b'{"id":"%d-%d"}' % (number, attempt)
            with trio.CancelScope() as scope:
                if rng.random() < cancel_share:
                    scope.deadline = trio.current_time() + rng.random() * cancel_within
                try:
                    reply = await client.post(body)
                    if reply.body != body:
                        mixed.append((body, reply.body))
                    kind = "answer"
                except ExchangeTimedOut:
                    kind = "timed out"
                except ExchangeFailed:
                    kind = "failed"
            if scope.cancelled_caught:
                kind = "cancelled"
            outcomes[kind] = outcomes.get(kind, 0) + 1

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for number in range(callers):
                    nursery.start_soon(caller, number)
    finally:
        await client.aclose()
        server.close()
    assert mixed == []
    assert outcomes.get("timed out", 0) == 0, outcomes
    assert outcomes.get("answer", 0) > 0, outcomes
    assert client._watchdog._sockets == {}


@pytest.mark.parametrize("seed", range(3))
async def test_chaos_never_hangs_and_never_mixes_answers(seed: int) -> None:
    server = ThreadServer(chaotic(seed, BEHAVIOURS))
    client = poster(server.url, timeout=4.0)
    await post_chaotically(client, server, seed, callers=8, posts=150, cancel_share=0.15,
                           cancel_within=0.002)


# The same over TLS 1.3: session tickets, split records, OpenSSL's own buffer.
@pytest.mark.parametrize("seed", range(2))
async def test_tls_chaos_never_hangs_and_never_mixes_answers(seed: int, tmp_path: Path
                                                              ) -> None:
    cert, key = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.num_tickets = 4
    server = ThreadServer(chaotic(seed, TLS_BEHAVIOURS, context))
    client = poster(server.url.replace("http://", "https://"), timeout=4.0)
    client.tls = ssl.create_default_context(cafile=str(cert))
    await post_chaotically(client, server, seed, callers=6, posts=60, cancel_share=0.1,
                           cancel_within=0.005)
