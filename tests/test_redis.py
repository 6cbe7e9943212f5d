"""Redis Streams with a real redis-server: at-least-once through crashes and outages."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import coredis
import orjson
import pytest
import trio

from .helpers import Daemon, chatmod_command, write_config
from .servers import RedisServer

pytestmark = pytest.mark.slow

CONFIG = """
[daemon]
drain_timeout = 5.0
stats_interval = 0
[engine]
primary = "wordlist"
[engines.wordlist]
delete = ["idiot"]
[dead_letters]
path = "{dead}"
[[sources]]
type = "redis"
port = {port}
stream = "chat"
group = "mods"
consumer = "{consumer}"
block = 0.2
min_idle = 1.0
claim_interval = 0.3
max_deliveries = 3
[[sinks]]
type = "redis"
port = {port}
stream = "decisions"
"""


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


def add_entries(port: int, entries: list[dict[bytes, bytes]]) -> None:
    async def add(client: coredis.Redis[bytes]) -> None:
        for fields in entries:
            await client.xadd("chat", fields)
    call(port, add)


def decided_ids(port: int) -> Counter[str]:
    async def read(client: coredis.Redis[bytes]) -> list[Any]:
        return list(await client.xrange("decisions"))
    return Counter(e.field_values[b"id"].decode() for e in call(port, read))


def pending(port: int) -> int:
    async def count(client: coredis.Redis[bytes]) -> int:
        return (await client.xpending("chat", "mods")).pending  # type: ignore[union-attr]
    return int(call(port, count))


def start_daemon(tmp_path: Path, port: int, consumer: str) -> subprocess.Popen[bytes]:
    config = tmp_path / f"{consumer}.toml"
    config.write_text(CONFIG.format(port=port, consumer=consumer,
                                    dead=tmp_path / f"{consumer}-dead.jsonl"))
    with (tmp_path / f"{consumer}.log").open("wb") as log:
        return subprocess.Popen(chatmod_command("run", "-c", str(config)),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=15)


def entries(count: int, start: int = 0) -> list[dict[bytes, bytes]]:
    return [{b"id": f"m-{i}".encode(),
             b"text": (b"you idiot" if i % 5 == 0 else b"hello"),
             b"author": b"al", b"metadata": orjson.dumps({"n": i})}
            for i in range(start, start + count)]


def test_entries_are_decided_acked_and_poison_is_dead_lettered(
    redis: RedisServer, tmp_path: Path,
) -> None:
    poison = [{b"author": b"no-text-here"}, {b"text": b"x", b"metadata": b"{not json"}]
    add_entries(redis.port, entries(200) + poison)
    daemon = start_daemon(tmp_path, redis.port, "solo")
    try:
        wait_until(lambda: len(decided_ids(redis.port)) == 200, "200 decisions")
        wait_until(lambda: pending(redis.port) == 0, "nothing pending")
    finally:
        assert stop(daemon) == 0
    decided = decided_ids(redis.port)
    assert set(decided) == {f"m-{i}" for i in range(200)}

    async def dead(client: coredis.Redis[bytes]) -> list[Any]:
        return list(await client.xrange("chat:dead"))
    reasons = sorted(e.field_values[b"reason"].decode() for e in call(redis.port, dead))
    assert len(reasons) == 2
    assert all(r.startswith("not a chat message") for r in reasons)

    async def first(client: coredis.Redis[bytes]) -> Any:
        return (await client.xrange("decisions", count=1))[0]
    record = orjson.loads(call(redis.port, first).field_values[b"json"])
    assert record["source"] == "redis"
    assert record["author"] == "al"


def decision_count(port: int) -> int:
    async def length(client: coredis.Redis[bytes]) -> int:
        return await client.xlen("decisions")
    return int(call(port, length))


def pending_of(port: int, consumer: str) -> int:
    async def count(client: coredis.Redis[bytes]) -> int:
        summary = await client.xpending("chat", "mods")
        return int(summary.consumers.get(consumer.encode(), 0))  # type: ignore[union-attr]
    return int(call(port, count))


def test_three_daemons_one_killed_every_entry_decided(redis: RedisServer, tmp_path: Path) -> None:
    count = 20_000
    add_entries(redis.port, entries(count))
    daemons = {name: start_daemon(tmp_path, redis.port, name) for name in ("a", "b", "c")}
    try:
        wait_until(lambda: decision_count(redis.port) > 1000, "some decisions")
        # Kill b while it holds entries it has read and not acknowledged.
        wait_until(lambda: pending_of(redis.port, "b") > 0, "b holding entries", timeout=10)
        daemons["b"].send_signal(signal.SIGKILL)
        daemons["b"].wait(timeout=10)
        held = pending_of(redis.port, "b")
        wait_until(lambda: pending(redis.port) == 0, "nothing pending", timeout=60)
        wait_until(lambda: len(decided_ids(redis.port)) == count, "every entry decided")
    finally:
        exits = {name: stop(process) for name, process in daemons.items()}
    assert exits["a"] == 0
    assert exits["c"] == 0
    decided = decided_ids(redis.port)
    duplicates = sum(n - 1 for n in decided.values())
    print(f"\n{count} entries, {sum(decided.values())} decisions, {duplicates} duplicates "
          f"(at-least-once: b held {held} entries when it was killed)")
    assert set(decided) == {f"m-{i}" for i in range(count)}
    logs = (tmp_path / "a.log").read_text() + (tmp_path / "c.log").read_text()
    if held:
        assert "took over" in logs


def test_redis_restart_under_load_loses_nothing(redis: RedisServer, tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, redis.port, "solo")
    try:
        add_entries(redis.port, entries(300))
        wait_until(lambda: len(decided_ids(redis.port)) >= 100, "decisions before the restart")
        add_entries(redis.port, entries(300, start=300))
        redis.stop()  # appendfsync always: what was written survives
        log = tmp_path / "solo.log"
        wait_until(lambda: "reconnecting" in log.read_text(), "the daemon to see redis go")
        redis.start()
        add_entries(redis.port, entries(300, start=600))
        wait_until(lambda: len(decided_ids(redis.port)) == 900, "every entry decided")
        wait_until(lambda: pending(redis.port) == 0, "nothing pending")
    finally:
        assert stop(daemon) == 0
    assert os.path.exists(tmp_path / "appendonlydir")


def test_entry_delivered_too_often_is_dead_lettered(redis: RedisServer, tmp_path: Path) -> None:
    add_entries(redis.port, entries(3))

    async def poison_one(client: coredis.Redis[bytes]) -> None:
        await client.xgroup_create("chat", "mods", "0", mkstream=True)
        read = await client.xreadgroup("mods", "crashed", streams={"chat": ">"}, count=1)
        assert read is not None
        entry_id = next(iter(read.values()))[0].identifier
        # As if daemons had died on it again and again: its delivery count is past the limit.
        await client.xclaim("chat", "mods", "crashed", 0, [entry_id], retrycount=10)
    call(redis.port, poison_one)
    daemon = start_daemon(tmp_path, redis.port, "solo")
    try:
        wait_until(lambda: pending(redis.port) == 0, "nothing pending")
        wait_until(lambda: len(decided_ids(redis.port)) == 2, "the other two decided")
    finally:
        assert stop(daemon) == 0

    async def dead(client: coredis.Redis[bytes]) -> list[Any]:
        return list(await client.xrange("chat:dead"))
    letters = call(redis.port, dead)
    assert len(letters) == 1
    assert letters[0].field_values[b"reason"].startswith(b"delivered 1")
    assert letters[0].field_values[b"field:id"] == b"m-0"
    assert set(decided_ids(redis.port)) == {"m-1", "m-2"}


def test_sigterm_acknowledges_everything_it_decided(redis: RedisServer, tmp_path: Path) -> None:
    add_entries(redis.port, entries(20_000))
    daemon = start_daemon(tmp_path, redis.port, "solo")
    try:
        wait_until(lambda: decision_count(redis.port) > 2000, "decisions under way")
        daemon.send_signal(signal.SIGTERM)  # mid-stream: entries read, not all decided yet
        assert daemon.wait(timeout=20) == 0
    finally:
        stop(daemon)
    decided = decided_ids(redis.port)
    assert 2000 < len(decided) < 20_000
    # Everything read before the signal was decided and acknowledged: nothing is pending.
    assert pending(redis.port) == 0


# The daemon writing its decisions to a file, so that every decision is counted exactly as
# the pipeline made it (a Redis sink could itself repeat a write across a Redis outage).
JSONL_CONFIG = """
[daemon]
drain_timeout = 10.0
stats_interval = 0
[engine]
primary = "wordlist"
[engines.wordlist]
delete = ["idiot"]
[dead_letters]
path = "{directory}/dead-letters.jsonl"
[[sources]]
type = "redis"
port = {port}
stream = "chat"
group = "mods"
consumer = "solo"
block = 0.2
claim_interval = 0.3
{source_extra}
[[sinks]]
type = "jsonl"
path = "{directory}/decisions.jsonl"
"""


def start_jsonl_daemon(directory: Path, port: int, source_extra: str = "") -> Daemon:
    directory.mkdir()
    config = write_config(directory / "chatmod.toml", JSONL_CONFIG.format(
        directory=directory, port=port, source_extra=source_extra))
    return Daemon(directory, config)


def decision_ids(*daemons: Daemon) -> Counter[str]:
    return Counter(str(d["id"]) for daemon in daemons for d in daemon.decisions())


def hold_as_crashed_consumer(port: int, consumer: str, count: int) -> None:
    """Read ``count`` entries as ``consumer`` and never acknowledge them: the pending list a
    daemon killed mid-stream leaves behind (each delivered once)."""
    async def read(client: coredis.Redis[bytes]) -> None:
        await client.xgroup_create("chat", "mods", "0", mkstream=True)
        result = await client.xreadgroup("mods", consumer, streams={"chat": ">"}, count=count)
        assert result is not None
        assert len(next(iter(result.values()))) == count
    call(port, read)


def pending_message_ids(port: int, consumer: str) -> set[str]:
    """The ``id`` fields of the entries ``consumer`` holds unacknowledged."""
    async def read(client: coredis.Redis[bytes]) -> set[str]:
        listed = await client.xpending("chat", "mods", start="-", end="+", count=1_000_000,
                                       consumer=consumer)
        assert isinstance(listed, tuple)
        held = {bytes(item.identifier) for item in listed}
        return {bytes(e.field_values[b"id"]).decode() for e in await client.xrange("chat")
                if bytes(e.identifier) in held}
    result: set[str] = call(port, read)
    return result


def dead_stream_length(port: int) -> int:
    async def length(client: coredis.Redis[bytes]) -> int:
        return await client.xlen("chat:dead")
    return int(call(port, length))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL],
                         ids=["sigterm", "sigkill"])
def test_restart_under_own_name_with_5000_pending_decides_each_entry_once(
    redis: RedisServer, tmp_path: Path, stop_signal: signal.Signals,
) -> None:
    total, held = 6_000, 5_000
    add_entries(redis.port, entries(total))
    hold_as_crashed_consumer(redis.port, "solo", held)
    with start_jsonl_daemon(tmp_path / "first", redis.port) as first:
        first.wait_for(lambda: len(first.decisions()) >= 500, "decisions before the stop")
        first.process.send_signal(stop_signal)
        exit_code = first.process.wait(timeout=30)
    if stop_signal == signal.SIGTERM:
        assert exit_code == 0, first.log.read_text()
    decided_first = decision_ids(first)
    # Decided but killed before its XACK: the only entries that may be decided again.
    left_pending = pending_message_ids(redis.port, "solo")
    decided_unacked = set(decided_first) & left_pending
    with start_jsonl_daemon(tmp_path / "second", redis.port) as second:
        second.wait_for(lambda: len(decision_ids(first, second)) == total,
                        "every entry decided", timeout=60)
        second.wait_for(lambda: pending(redis.port) == 0, "nothing pending")
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=30) == 0, second.log.read_text()
    decided = decision_ids(first, second)
    repeated = {entry for entry, times in decided.items() if times > 1}
    print(f"\n{held} pending at the first start, {len(left_pending)} at the second; "
          f"{sum(decided.values())} decisions for {total} entries, {len(repeated)} decided "
          f"twice ({len(decided_unacked)} were decided and unacknowledged at the "
          f"{stop_signal.name})")
    assert set(decided) == {f"m-{i}" for i in range(total)}
    assert dead_stream_length(redis.port) == 0
    assert "dead-lettered" not in first.log.read_text() + second.log.read_text()
    assert max(decided.values()) <= 2
    assert repeated <= decided_unacked
    if stop_signal == signal.SIGTERM:
        assert not repeated


def test_redis_killed_and_restarted_every_entry_decided_once(
    redis: RedisServer, tmp_path: Path,
) -> None:
    total = 10_000
    add_entries(redis.port, entries(total))
    with start_jsonl_daemon(tmp_path / "daemon", redis.port) as daemon:
        daemon.wait_for(lambda: len(daemon.decisions()) >= 1000, "decisions under way")
        # Killed while the daemon holds entries it read and has not acknowledged yet.
        daemon.wait_for(lambda: pending(redis.port) > 0, "entries held")
        assert redis.process is not None
        redis.process.kill()  # appendfsync always: what Redis answered is on disk
        redis.process.wait(timeout=10)
        daemon.wait_for_log("reconnecting")
        redis.start()
        add_entries(redis.port, entries(1000, start=total))
        daemon.wait_for(lambda: len(daemon.decisions()) >= total + 1000, "every entry decided",
                        timeout=60)
        daemon.wait_for(lambda: pending(redis.port) == 0, "nothing pending")
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0, daemon.log.read_text()
    decided = decision_ids(daemon)
    repeated = sorted(entry for entry, times in decided.items() if times > 1)
    print(f"\n{sum(decided.values())} decisions for {total + 1000} entries across a Redis "
          f"kill and restart; {len(repeated)} decided more than once")
    assert set(decided) == {f"m-{i}" for i in range(total + 1000)}
    assert not repeated, repeated[:10]
    assert dead_stream_length(redis.port) == 0
