"""The daemon's HTTP server as users run it (a real ``chatmod run``): HEAD on every route, a
flood of idle, slow and HEAD connections, the timeouts from the config, running out of file
descriptors, and generated requests. Through all of it the daemon stays up, /healthz answers
and stdin moderation goes on.

``CHATMOD_FUZZ_SECONDS=60`` makes the generated-request run last a minute.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import trio
from hypothesis import given

from .helpers import WORDLIST_CONFIG, Daemon, chatmod_command, eventually, write_config
from .http_requests import fuzz_settings, peer_bytes
from .raw_http import (
    exchange,
    raise_own_file_limit,
    read_response,
    read_until_closed,
    request,
    statuses,
)
from .servers import free_port

BOUND = 20.0
SECRET = "daemon-http-secret-0123456789"
ROUTES = {"/healthz": 200, "/readyz": 200, "/metrics": 200, "/stats/moderation": 200,
          "/stats/moderation/search": 405, "/webhooks/chatsight": 405, "/nope": 404}
FAILURE_MARKS = ("Traceback", "failed; closed it", "HTTP handler failed", "fatal")


def http_config(tmp_path: Path, port: int, http_keys: str = "") -> Path:
    return write_config(
        tmp_path / "c.toml",
        f"[http]\nenabled = true\nport = {port}\nchatsight_webhook_secret_env = 'ALERT_SECRET'\n"
        + http_keys + WORDLIST_CONFIG.format(format="text", path=tmp_path / "decisions.jsonl"))


def start_daemon(tmp_path: Path, port: int, http_keys: str = "") -> Daemon:
    return Daemon(tmp_path, http_config(tmp_path, port, http_keys),
                  env={"ALERT_SECRET": SECRET})


class FileLimitedDaemon(Daemon):
    """``chatmod run`` allowed only ``files`` open file descriptors (soft and hard)."""

    def __init__(self, tmp: Path, config: Path, files: int) -> None:
        self.out = tmp / "decisions.jsonl"
        self.log = tmp / "stderr.log"
        command = ["sh", "-c", f'ulimit -n {files} && exec "$@"', "sh",
                   *chatmod_command("run", "-c", str(config))]
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                env={**os.environ, "ALERT_SECRET": SECRET})
        self.sent = 0
        self._lock = threading.Lock()


async def answer(port: int, method: str = "GET", path: str = "/healthz") -> tuple[int, float]:
    """One request on a fresh connection: its status (0: none) and seconds to the answer."""
    began = trio.current_time()
    reply = await exchange(port, request(method, path, close=True), within=BOUND)
    found = statuses(reply)
    return (found[0] if found else 0), trio.current_time() - began


async def until_ready(daemon: Daemon, port: int) -> None:
    with trio.fail_after(BOUND):
        while True:
            assert daemon.process.poll() is None, daemon.log.read_text()
            try:
                if (await answer(port, path="/readyz"))[0] == 200:
                    return
            except OSError:
                pass
            await trio.sleep(0.05)


async def moderation_goes_on(daemon: Daemon, port: int) -> None:
    """The daemon is up, /healthz answers, and new stdin lines are decided."""
    assert daemon.process.poll() is None, daemon.log.read_text()
    assert (await answer(port))[0] == 200
    daemon.send("still deciding", "you idiot")
    await eventually(lambda: len(daemon.decisions()) >= daemon.sent, within=BOUND)


def assert_no_failures(log: str) -> None:
    for mark in FAILURE_MARKS:
        assert mark not in log, log


async def test_head_on_every_route_is_answered_and_the_daemon_stays_up(tmp_path: Path) -> None:
    port = free_port()
    with start_daemon(tmp_path, port) as daemon:
        await until_ready(daemon, port)
        for path, status in ROUTES.items():
            reply = await exchange(port, request("HEAD", path, close=True), within=BOUND)
            assert statuses(reply) == [status], (path, reply)
            assert reply.endswith(b"\r\n\r\n"), (path, reply)  # no body
            assert (await answer(port))[0] == 200, daemon.log.read_text()
        await moderation_goes_on(daemon, port)
        assert daemon.finish() == 0
    assert_no_failures(daemon.log.read_text())


async def test_idle_slow_and_head_floods_leave_health_answering(tmp_path: Path) -> None:
    """The issue's "done when": 500 idle connections, 50 slow heads and 1,000 HEADs."""
    raise_own_file_limit(4096)
    port = free_port()
    latencies: list[float] = []
    with start_daemon(tmp_path, port) as daemon:
        await until_ready(daemon, port)
        began = time.monotonic()
        held: list[trio.SocketStream] = []
        try:
            with trio.fail_after(120):
                for _ in range(500):
                    held.append(await trio.open_tcp_stream("127.0.0.1", port))
                async with trio.open_nursery() as nursery:
                    for _ in range(50):
                        slow = await trio.open_tcp_stream("127.0.0.1", port)
                        held.append(slow)
                        nursery.start_soon(trickle_head, slow)
                    heads = await head_flood(port, 1000, workers=25)
                    for _ in range(20):
                        status, seconds = await answer(port)
                        assert status == 200, daemon.log.read_text()
                        latencies.append(seconds)
                    nursery.cancel_scope.cancel()
        finally:
            for stream in held:
                await stream.aclose()
        assert heads == [200] * 1000
        metrics = await exchange(port, request("GET", "/metrics", close=True), within=BOUND)
        counted = dict(line.rsplit(" ", 1) for line in metrics.decode().splitlines()
                       if line.startswith("chatmod_http_server_events_total{"))
        events = {key.split('event="')[1].split('"')[0]: float(value)
                  for key, value in counted.items()}
        assert events["evicted"] >= 290, counted  # 550 held, 256 kept
        assert events["requests"] >= 1020, counted
        assert events["connection_failures"] == 0, counted
        await moderation_goes_on(daemon, port)
        elapsed = time.monotonic() - began
        assert daemon.finish() == 0
    log = daemon.log.read_text()
    assert_no_failures(log)
    # Rate-limited: one line per kind every 10 s, however many connections were closed.
    assert log.count("closed the one waiting longest") <= 2 + elapsed / 10, log
    print(f"/healthz under the flood: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms over {len(latencies)} requests")


async def trickle_head(stream: trio.SocketStream) -> None:
    """A slowloris: a header line a second, never the end of the head."""
    try:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        for i in range(1000):
            await trio.sleep(1)
            await stream.send_all(b"X-Slow-%d: 1\r\n" % i)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def head_flood(port: int, count: int, workers: int) -> list[int]:
    """``count`` HEAD /healthz requests, each on its own connection, ``workers`` at a time."""
    found: list[int] = []

    async def worker(share: int) -> None:
        for _ in range(share):
            found.append((await answer(port, "HEAD"))[0])

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker, count // workers)
    return found


async def test_the_configured_timeouts_close_idle_and_slow_connections(tmp_path: Path) -> None:
    port = free_port()
    keys = "header_timeout = 0.5\nkeep_alive_timeout = 0.5\nbody_timeout = 0.5\n"
    with start_daemon(tmp_path, port, keys) as daemon:
        await until_ready(daemon, port)
        with trio.fail_after(BOUND):
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            async with idle:
                await idle.send_all(request("GET", "/healthz"))
                assert statuses(await read_response(idle)) == [200]
                assert await read_until_closed(idle, BOUND) == b""  # keep-alive ended
            slow = await trio.open_tcp_stream("127.0.0.1", port)
            async with slow:
                await slow.send_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
                assert statuses(await read_until_closed(slow, BOUND)) == [408]
        await moderation_goes_on(daemon, port)
        assert daemon.finish() == 0


async def test_out_of_file_descriptors_the_daemon_still_answers_health(tmp_path: Path) -> None:
    raise_own_file_limit(4096)
    port = free_port()
    # 100 descriptors: far below the default cap of 256 connections, so accept runs out.
    with FileLimitedDaemon(tmp_path, http_config(tmp_path, port), files=100) as daemon:
        await until_ready(daemon, port)
        held = []
        try:
            with trio.fail_after(60):
                for _ in range(300):
                    held.append(await trio.open_tcp_stream("127.0.0.1", port))
                for _ in range(10):
                    status, _seconds = await answer(port)
                    assert status == 200, daemon.log.read_text()
                await moderation_goes_on(daemon, port)
        finally:
            for stream in held:
                await stream.aclose()
        assert daemon.finish() == 0
    log = daemon.log.read_text()
    assert_no_failures(log)
    assert log.count("accepting a connection failed") <= 3, log  # not ten lines a second


def send_raw(port: int, data: bytes) -> bytes:
    """``data`` on a fresh blocking socket, then end of input; all the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer and close before it has read it all
            pass
        received = bytearray()
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                return bytes(received)
            if not chunk:
                return bytes(received)
            received += chunk


def test_generated_requests_leave_the_daemon_up_and_moderating(tmp_path: Path) -> None:
    seconds = float(os.environ.get("CHATMOD_FUZZ_SECONDS", "0"))
    port = free_port()
    sent = 0
    with start_daemon(tmp_path, port, "header_timeout = 2.0\nbody_timeout = 2.0\n") as daemon:
        trio.run(until_ready, daemon, port)

        @fuzz_settings(150)
        @given(data=peer_bytes)
        def one_request(data: bytes) -> None:
            nonlocal sent
            reply = send_raw(port, data)
            sent += 1
            assert all(s < 500 or s == 501 for s in statuses(reply)), reply[:300]
            assert daemon.process.poll() is None, daemon.log.read_text()

        began = time.monotonic()
        one_request()
        while time.monotonic() - began < seconds:
            one_request()
        elapsed = time.monotonic() - began
        trio.run(moderation_goes_on, daemon, port)
        assert daemon.finish() == 0
    assert_no_failures(daemon.log.read_text())
    print(f"sent the daemon {sent} generated requests in {elapsed:.1f} s")
