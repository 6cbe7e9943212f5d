"""The HTTP pool's warm connections, and its plain-socket path over TLS.

A websocket cut moves its messages to HTTP all at once; with a cold pool each of them waited
for its own TCP (and TLS) set-up. The engine keeps ``http_warm_connections`` open while the
websocket works, so those messages find connections ready.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import h11
import pytest
import trio

from chatmod.core.model import Message, Verdict
from chatmod.errors import ExchangeFailed

from .helpers import eventually
from .servers import free_port
from .test_chatsight import engine_for, start_sandbox
from .test_chatsight_http_pool import (
    OK_BODY,
    TIMEOUT,
    answer,
    keep_alive_server,
    poster,
    serve,
)


def certificate(directory: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def serve_tls(nursery: trio.Nursery, cert: Path, key: Path) -> str:
    """A keep-alive HTTPS server on loopback; its URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def on_connection(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            server = h11.Connection(h11.SERVER)
            while True:  # keep-alive: a whole request, then its answer
                event = server.next_event()
                if event is h11.NEED_DATA:
                    server.receive_data(bytes(await stream.receive_some(65536)))
                elif isinstance(event, h11.EndOfMessage):
                    await stream.send_all(answer(server))
                    server.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await nursery.start(trio.serve_ssl_over_tcp, on_connection, 0, context)
    port = listeners[0].transport_listener.socket.getsockname()[1]
    return f"https://127.0.0.1:{port}/text/moderation"


async def test_https_requests_share_one_tls_connection(nursery: trio.Nursery,
                                                       tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    client = poster(await serve_tls(nursery, cert, key))
    client.tls = ssl.create_default_context(cafile=str(cert))
    for _ in range(10):
        reply = await client.post(b'{"sample":"hi"}')
        assert (reply.status, reply.body) == (200, OK_BODY)
    assert client.connections_opened == 1
    async with trio.open_nursery() as callers:  # 4 at once: 4 connections, then reused
        for _ in range(4):
            callers.start_soon(client.post, b'{"sample":"hi"}')
    opened = client.connections_opened
    await client.warm(opened)
    assert client.connections_opened == opened
    await client.aclose()


async def test_https_refuses_a_certificate_it_does_not_trust(nursery: trio.Nursery,
                                                             tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    client = poster(await serve_tls(nursery, cert, key))  # the system's trust store only
    with trio.fail_after(TIMEOUT), pytest.raises(
            ExchangeFailed, match=r"TLS.*CERTIFICATE_VERIFY_FAILED"):
        await client.post(b"{}")
    assert client.connections_opened == 0
    await client.aclose()


async def test_a_warm_tls_connection_with_session_tickets_waiting_is_still_open(
        tmp_path: Path) -> None:
    # A TLS 1.3 server (OpenSSL's, through Python's ssl) sends session tickets right after
    # the handshake: an idle connection is readable, yet not closed. Mistaken for closed,
    # every warm connection was thrown away and set up again.
    cert, key = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[ssl.SSLSocket] = []

    def accept_two() -> None:  # handshakes (sending the tickets), then holds the connections
        for _ in range(2):
            accepted, _address = listener.accept()
            held.append(context.wrap_socket(accepted, server_side=True))

    client = poster(f"https://127.0.0.1:{listener.getsockname()[1]}/text/moderation")
    client.tls = ssl.create_default_context(cafile=str(cert))
    try:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as both:
                both.start_soon(trio.to_thread.run_sync, accept_two)
                await client.warm(2)
            for connection in client._idle:
                assert connection.sock.version() == "TLSv1.3"
                await trio.lowlevel.wait_readable(connection.sock)  # the tickets
            assert [c.closed_while_idle() for c in client._idle] == [False, False]
            await client.warm(2)
        assert (client.connections_opened, len(client._idle)) == (2, 2)
        held[0].close()  # the server closes one: that one is closed, the other is not
        with trio.fail_after(TIMEOUT):
            while not client._idle[-1].closed_while_idle():
                await trio.lowlevel.wait_readable(client._idle[-1].sock)
        assert not client._idle[0].closed_while_idle()
    finally:
        await client.aclose()
        for sock in held:
            sock.close()
        listener.close()


async def test_warm_connections_carry_a_burst_without_new_set_up(nursery: trio.Nursery) -> None:
    url, accepted = await serve(nursery, keep_alive_server)
    client = poster(url)
    with trio.fail_after(TIMEOUT):
        await client.warm(4)
    assert (client.connections_opened, len(client._idle), len(accepted)) == (4, 4, 4)
    async with trio.open_nursery() as callers:
        for _ in range(4):
            callers.start_soon(client.post, b'{"sample":"hi"}')
    assert client.connections_opened == 4
    await client.warm(2)  # enough are open already
    assert client.connections_opened == 4
    await client.aclose()
    await client.warm(4)  # closed: nothing opened
    assert client.connections_opened == 4


async def test_warm_replaces_connections_the_server_closed(nursery: trio.Nursery) -> None:
    async def close_the_first(stream: trio.SocketStream, number: int) -> None:
        if number > 1:
            await keep_alive_server(stream, number)

    url, _ = await serve(nursery, close_the_first)
    client = poster(url)
    await client.warm(2)
    assert client.connections_opened == 2
    first = client._idle[-1]  # opened first: the server closes it
    with trio.fail_after(TIMEOUT):
        await trio.lowlevel.wait_readable(first.sock)
    await client.warm(2)
    assert (client.connections_opened, len(client._idle)) == (3, 2)
    assert first not in client._idle
    assert (await client.post(b"{}")).status == 200
    await client.aclose()


async def test_warm_gives_up_quietly_when_nothing_listens() -> None:
    client = poster(f"http://127.0.0.1:{free_port()}/text/moderation")
    with trio.fail_after(TIMEOUT):
        await client.warm(4)
    assert (client.connections_opened, client._idle) == (0, [])
    await client.aclose()


async def test_a_cut_moves_its_messages_onto_warm_connections(nursery: trio.Nursery) -> None:
    # The websocket holds its requests unanswered until the sandbox cuts it: they move to
    # HTTP at once, and find the warm connections open (none is set up for them).
    sandbox = await start_sandbox(nursery, cut_every=1.0)
    sandbox.half_open = True
    engine = engine_for(sandbox, http_warm_connections=4, auth_cut_window=0.1)
    await nursery.start(engine.run)
    http = engine._http
    assert http is not None
    client = http._poster
    assert client is not None
    await eventually(lambda: len(client._idle) == 4)
    assert client.connections_opened == 4
    await eventually(lambda: engine.socket.is_open)
    verdicts: list[Verdict] = []

    async def moderate(number: int) -> None:
        verdicts.append(await engine.moderate(Message(id=f"m-{number}", text="hello",
                                                      source="t")))

    for number in range(4):
        nursery.start_soon(moderate, number)
    await eventually(lambda: len(engine.table) == 4)  # sent over the websocket
    await eventually(lambda: len(verdicts) == 4)
    assert {v.route for v in verdicts} == {"http"}
    assert engine.statistics()["ws.requests_moved_on_close"] == 4
    assert client.connections_opened == 4
