"""A raw HTTP/1.1 client for tests: exact bytes out, whatever comes back, and when the server
closes. For what httpx would not send (half requests, garbage, trickles) or would hide."""

from __future__ import annotations

import contextlib
import re
import resource

import trio

STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")
READ_SIZE = 65536


def request(method: str, path: str, *headers: str, body: bytes = b"",
            close: bool = False) -> bytes:
    """One well-formed request (HTTP/1.1, with Host and, for a body, Content-Length)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_until_closed(stream: trio.SocketStream, within: float) -> bytes:
    """Everything the server sends until it closes; fails the test if it has not closed
    within ``within`` seconds."""
    received = bytearray()
    with trio.fail_after(within):
        while True:
            try:
                chunk = await stream.receive_some(READ_SIZE)
            except trio.BrokenResourceError:  # reset: closed all the same
                return bytes(received)
            if not chunk:
                return bytes(received)
            received += chunk


async def read_response(stream: trio.SocketStream, within: float = 5.0) -> bytes:
    """One response with a Content-Length body, from a connection kept open."""
    received = bytearray()
    with trio.fail_after(within):
        while True:
            head, sep, rest = bytes(received).partition(b"\r\n\r\n")
            if sep:
                found = re.search(rb"(?i)content-length: *(\d+)", head)
                length = int(found.group(1)) if found else 0
                if len(rest) >= length:
                    return bytes(received)
            chunk = await stream.receive_some(READ_SIZE)
            assert chunk, f"closed before a whole response: {bytes(received)!r}"
            received += chunk


async def exchange(port: int, data: bytes, within: float = 5.0) -> bytes:
    """Send ``data``, say we are done sending, and return all the server answered."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError):  # it may have closed already
            await stream.send_eof()
        return await read_until_closed(stream, within)


def statuses(reply: bytes) -> list[int]:
    """The status codes of every response in ``reply``, in order (100 included)."""
    return [int(code) for code in STATUS_LINE.findall(reply)]


def raise_own_file_limit(needed: int) -> None:
    """Let this test process hold ``needed`` descriptors (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
