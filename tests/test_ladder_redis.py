"""Strikes shared through Redis: two real daemons in one consumer group count one author's
offences as one daemon would, and a message redelivered after a SIGKILL adds no strike."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import coredis
import orjson
import pytest
import trio

from .helpers import chatmod_command
from .servers import RedisServer

pytestmark = pytest.mark.slow

LADDER = ["warn", "timeout 10m", "timeout 1h", "ban"]
EXPECTED = [(1, "warn"), (2, "timeout 10m"), (3, "timeout 1h"), (4, "ban"), (5, "ban"),
            (6, "ban")]
# A long block: each daemon waits in XREADGROUP until served, and Redis serves blocked
# clients first come, first served, so entries sent one at a time alternate between them.
CONFIG = """
[daemon]
drain_timeout = 2.0
stats_interval = 0
[engine]
primary = "wordlist"
[engines.wordlist]
delete = ["idiot"]
[policy.ladder]
steps = {ladder}
window = 3600
[state]
backend = "redis"
port = {port}
[dead_letters]
path = "{dir}/dead.jsonl"
[[sources]]
type = "redis"
port = {port}
stream = "chat"
group = "mods"
consumer = "{consumer}"
block = 20
min_idle = 600
[[sinks]]
{sink}
"""
JSONL_SINK = 'type = "jsonl"\npath = "{path}"'
# A webhook that accepts the connection and never answers: the sink holds the decision.
STUCK_SINK = ('type = "webhook"\nurl = "http://127.0.0.1:{port}/"\nsecret_env = "HOOK_SECRET"\n'
              'timeout = 120\nretries = 0')


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def call(port: int, operation: Callable[[coredis.Redis[bytes]], Any]) -> Any:
    async def run() -> Any:
        async with coredis.Redis(host="127.0.0.1", port=port) as client:
            return await operation(client)
    return trio.run(run)


def say(port: int, message_id: str, text: str = "you idiot", author: str = "bob") -> None:
    async def add(client: coredis.Redis[bytes]) -> None:
        await client.xadd("chat", {b"id": message_id.encode(), b"text": text.encode(),
                                   b"author": author.encode(), b"channel": b"#lobby"})
    call(port, add)


def consumers_reading(port: int) -> int:
    """Clients blocked in a read: each daemon's XREADGROUP (a consumer is listed by XINFO
    only once it was served, so that cannot tell)."""
    async def read(client: coredis.Redis[bytes]) -> int:
        return sum("b" in str(c.get("flags", "")) for c in await client.client_list())
    return int(call(port, read))


def start(directory: Path, port: int, consumer: str, sink: str) -> subprocess.Popen[bytes]:
    directory.mkdir(exist_ok=True)
    config = directory / "chatmod.toml"
    config.write_text(CONFIG.format(ladder=orjson.dumps(LADDER).decode(), port=port,
                                    consumer=consumer, dir=directory, sink=sink))
    with (directory / "stderr.log").open("wb") as log:
        return subprocess.Popen(chatmod_command("run", "-c", str(config)),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                env={**os.environ, "HOOK_SECRET": "hook-secret-for-tests"})


def decisions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return [orjson.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines()]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def test_two_daemons_in_one_group_give_one_ladder(redis: RedisServer, tmp_path: Path) -> None:
    outputs = {name: tmp_path / name / "decisions.jsonl" for name in ("a", "b")}
    daemons = {name: start(tmp_path / name, redis.port, name,
                           JSONL_SINK.format(path=outputs[name])) for name in ("a", "b")}
    try:
        wait_until(lambda: consumers_reading(redis.port) == 2, "both daemons reading")
        taken_by: list[str] = []
        for n in range(1, 7):
            say(redis.port, f"m{n}")

            def decided(n: int = n) -> bool:
                return sum(len(decisions(p)) for p in outputs.values()) == n
            wait_until(decided, f"decision {n}")
            taken_by += [name for name, p in outputs.items()
                         if any(d["id"] == f"m{n}" for d in decisions(p))]
    finally:
        for process in daemons.values():
            stop(process)
    lines = sorted((d for p in outputs.values() for d in decisions(p)), key=lambda d: d["id"])
    assert [(d["strikes"], d["step"]) for d in lines] == EXPECTED
    assert lines[2]["reason"] == "ladder default: strike 3 within 1h -> timeout 1h"
    # The author's messages really went to both daemons, one after the other.
    assert taken_by == ["a", "b", "a", "b", "a", "b"] or taken_by == [
        "b", "a", "b", "a", "b", "a"]


def test_a_message_redelivered_after_sigkill_adds_no_strike(
        redis: RedisServer, tmp_path: Path) -> None:
    output = tmp_path / "a" / "decisions.jsonl"
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(16)
        stuck = start(tmp_path / "a", redis.port, "a",
                      STUCK_SINK.format(port=blackhole.getsockname()[1]))
        try:
            wait_until(lambda: consumers_reading(redis.port) == 1, "the daemon reading")
            say(redis.port, "m1")

            def counted() -> bool:
                async def exists(client: coredis.Redis[bytes]) -> int:
                    return await client.exists(["chatmod:strike-msg:m1"])
                return bool(call(redis.port, exists))
            # The strike is counted before any sink is asked; the webhook never answers.
            wait_until(counted, "m1's strike counted")
            stuck.send_signal(signal.SIGKILL)
            stuck.wait(timeout=10)
        finally:
            stop(stuck)
    again = start(tmp_path / "a", redis.port, "a", JSONL_SINK.format(path=output))
    try:
        wait_until(lambda: len(decisions(output)) == 1, "m1 decided again")
        say(redis.port, "m2")
        wait_until(lambda: len(decisions(output)) == 2, "m2 decided")
    finally:
        stop(again)
    first, second = decisions(output)
    # m1 was counted once, and its step never reached a sink, so it is taken now.
    assert (first["id"], first["strikes"], first["step"], "repeated" in first) == (
        "m1", 1, "warn", False)
    assert (second["id"], second["strikes"], second["step"]) == ("m2", 2, "timeout 10m")
