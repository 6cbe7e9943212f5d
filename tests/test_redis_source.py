"""The Redis source in process, against a real redis-server: what it submits, what Redis
counts, what it dead-letters. The daemon-level runs are in test_redis.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio
from coredis.tokens import PureToken

from chatmod.plugins.redis_streams import RedisSource, RedisSourceConfig

from .helpers import CollectingIntake, eventually
from .servers import RedisServer

# A test never waits longer than this for the source to do something.
WITHIN = 20.0
# An idle time no entry reaches by itself during a test, in milliseconds.
AGES_AGO = 3_600_000


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class HoldingIntake(CollectingIntake):
    """Takes every message and never decides any: they stay in flight in the source."""

    def ids(self) -> Counter[str]:
        return Counter(m.id for m in self.messages)


def source_config(port: int, **overrides: Any) -> RedisSourceConfig:
    settings: dict[str, Any] = {"port": port, "stream": "chat", "group": "mods",
                                "consumer": "solo", "block": 0.05, "claim_interval": 0.05,
                                "min_idle": AGES_AGO / 1000, "ack_grace": 0.0}
    return RedisSourceConfig(**{**settings, **overrides})


@asynccontextmanager
async def running(source: RedisSource, intake: HoldingIntake) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run, intake)
        yield
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def redis_client(port: int) -> AsyncIterator[coredis.Redis[bytes]]:
    async with coredis.Redis(host="127.0.0.1", port=port) as client:
        yield client


async def add(client: coredis.Redis[bytes], count: int, start: int = 0) -> list[bytes]:
    return [bytes(await client.xadd("chat", {b"id": f"m-{i}".encode(), b"text": b"hello"}))
            for i in range(start, start + count)]


async def read_as(client: coredis.Redis[bytes], consumer: str, count: int) -> list[bytes]:
    """Read ``count`` new entries as ``consumer``, never to acknowledge them."""
    await client.xgroup_create("chat", "mods", "0", mkstream=True)
    result = await client.xreadgroup("mods", consumer, streams={"chat": ">"}, count=count)
    assert result is not None
    return [bytes(e.identifier) for e in next(iter(result.values()))]


async def deliveries(client: coredis.Redis[bytes]) -> dict[bytes, tuple[bytes, int]]:
    """Entry id -> (consumer, times delivered), for every pending entry."""
    listed = await client.xpending("chat", "mods", start="-", end="+", count=10_000)
    assert isinstance(listed, tuple)
    return {bytes(p.identifier): (bytes(p.consumer), p.delivered) for p in listed}


async def test_own_pending_entries_are_resumed_once_each_counting_one_delivery(
    redis: RedisServer,
) -> None:
    with trio.fail_after(WITHIN):
        async with redis_client(redis.port) as client:
            await add(client, 250)
            held = await read_as(client, "solo", 250)  # a previous run, killed
            source, intake = RedisSource("redis", source_config(redis.port)), HoldingIntake()
            async with running(source, intake):
                await eventually(lambda: len(intake.messages) >= 250)
                await add(client, 1, start=250)
                await eventually(lambda: len(intake.messages) >= 251)
                # A few more passes of the loop: nothing comes a second time.
                await add(client, 1, start=251)
                await eventually(lambda: len(intake.messages) >= 252)
            assert intake.ids() == Counter(f"m-{i}" for i in range(252))
            counts = await deliveries(client)
            assert {counts[entry] for entry in held} == {(b"solo", 2)}
            assert source.statistics()["resumed"] == 250


async def test_reconnection_submits_nothing_twice_and_counts_no_delivery(
    redis: RedisServer,
) -> None:
    with trio.fail_after(WITHIN):
        async with redis_client(redis.port) as client:
            await add(client, 150)
            source, intake = RedisSource("redis", source_config(redis.port)), HoldingIntake()
            async with running(source, intake):
                await eventually(lambda: len(intake.messages) == 150)
                killed = await client.client_kill(type_=PureToken.NORMAL, skipme=True)
                assert killed
                await eventually(lambda: source.statistics()["reconnects"] >= 1)
                # Read after the reconnection, so after its pass over its own entries.
                await add(client, 1, start=150)
                await eventually(lambda: len(intake.messages) >= 151)
                await add(client, 1, start=151)
                await eventually(lambda: len(intake.messages) >= 152)
            assert intake.ids() == Counter(f"m-{i}" for i in range(152))
            counts = await deliveries(client)
            assert set(counts.values()) == {(b"solo", 1)}
            assert len(counts) == 152


async def test_takeover_skips_its_own_entries_in_flight(redis: RedisServer) -> None:
    with trio.fail_after(WITHIN):
        async with redis_client(redis.port) as client:
            await add(client, 5)
            dead = await read_as(client, "dead", 5)
            await add(client, 10, start=5)
            source, intake = RedisSource("redis", source_config(redis.port)), HoldingIntake()
            async with running(source, intake):
                await eventually(lambda: len(intake.messages) == 10)
                ours = [e for e, (c, _) in (await deliveries(client)).items() if c == b"solo"]
                # Both look idle for an hour, ours first: the pass that sees the dead
                # consumer's entries idle sees ours idle too.
                await client.xclaim("chat", "mods", "solo", 0, ours, idle=AGES_AGO,
                                    justid=True)
                await client.xclaim("chat", "mods", "dead", 0, dead, idle=AGES_AGO,
                                    justid=True)
                await eventually(lambda: len(intake.messages) >= 15)
                await add(client, 1, start=15)
                await eventually(lambda: len(intake.messages) >= 16)
            assert intake.ids() == Counter(f"m-{i}" for i in range(16))
            counts = await deliveries(client)
            assert {counts[e] for e in ours} == {(b"solo", 1)}
            assert {counts[e] for e in dead} == {(b"solo", 2)}
            assert source.statistics()["claimed"] == 5


async def dead_letters(client: coredis.Redis[bytes]) -> dict[bytes, Mapping[bytes, bytes]]:
    """Entry id -> the dead letter's fields."""
    return {bytes(e.field_values[b"entry"]): {bytes(k): bytes(v)
                                              for k, v in e.field_values.items()}
            for e in await client.xrange("chat:dead")}


async def test_hostile_entries_are_dead_lettered_and_the_group_moves_on(
    redis: RedisServer,
) -> None:
    big = b"x" * 70_000
    hostile: dict[str, dict[bytes, bytes]] = {
        "no text": {b"author": b"al"},
        "text not UTF-8": {b"text": b"caf\xe9"},
        "author not UTF-8": {b"text": b"hi", b"author": b"\xff\xfe"},
        "metadata not JSON": {b"text": b"hi", b"metadata": b"{nope"},
        "metadata binary": {b"text": b"hi", b"metadata": b"\x00\x01\x02"},
        "metadata not an object": {b"text": b"hi", b"metadata": b"[1, 2]"},
        "images not URLs": {b"text": b"hi", b"images": b"[1]"},
        "too many fields": {b"text": b"hi", **{f"f{i}".encode(): b"" for i in range(100)}},
        "oversized": {b"text": big},
    }
    traceable: dict[str, dict[bytes, bytes]] = {
        "empty id": {b"id": b"", b"text": b"hi"},
        "blank id": {b"id": b"  ", b"text": b"hi"},
        "id not UTF-8": {b"id": b"\xc3\x28", b"text": b"hi"},
        "binary field of its own": {b"text": b"hi", b"\x00\xff": b"\xff\x00"},
    }
    with trio.fail_after(WITHIN):
        async with redis_client(redis.port) as client:
            entry_of = {}
            for label, fields in {**hostile, **traceable}.items():
                entry_of[label] = bytes(await client.xadd("chat", fields))
            await add(client, 1, start=0)
            source, intake = RedisSource("redis", source_config(redis.port)), HoldingIntake()
            async with running(source, intake):
                await eventually(lambda: len(intake.messages) == len(traceable) + 1)
                await source.acknowledge(intake.messages)
                await eventually(lambda: source.statistics()["unacked"] == 0)
            assert (await client.xpending("chat", "mods")).pending == 0  # type: ignore[union-attr]
            letters = await dead_letters(client)
            assert set(letters) == {entry_of[label] for label in hostile}
            for label in hostile:
                letter = letters[entry_of[label]]
                assert letter[b"reason"].startswith(b"not a chat message: "), label
                assert letter[b"stream"] == b"chat"
            # Kept whole where it is small; an oversized entry is only pointed at.
            assert letters[entry_of["text not UTF-8"]][b"field:text"] == b"caf\xe9"
            oversized = letters[entry_of["oversized"]]
            assert b"70004 bytes is over max_entry_bytes (65536)" in oversized[b"reason"]
            assert not any(name.startswith(b"field:") for name in oversized)
            assert not any(name.startswith(b"field:")
                           for name in letters[entry_of["too many fields"]])
            assert len(intake.invalid) == len(hostile)
            # Messages whose own id is missing or unusable carry their entry's id instead.
            ids = {m.id for m in intake.messages}
            assert ids == {entry_of[label].decode() for label in traceable} | {"m-0"}


async def test_own_pending_entries_deleted_meanwhile_are_dropped_not_stuck(
    redis: RedisServer,
) -> None:
    with trio.fail_after(WITHIN):
        async with redis_client(redis.port) as client:
            await add(client, 6)
            held = await read_as(client, "solo", 6)
            await client.xdel("chat", held[:3])  # by the producer, or trimmed away
            source, intake = RedisSource("redis", source_config(redis.port)), HoldingIntake()
            async with running(source, intake):
                await eventually(lambda: len(intake.messages) == 3)
                await source.acknowledge(intake.messages)
                await eventually(lambda: source.statistics()["unacked"] == 0)
                latest = await add(client, 1, start=6)
                await eventually(lambda: len(intake.messages) == 4)
            assert intake.ids() == Counter(["m-3", "m-4", "m-5", "m-6"])
            # The deleted ones left the pending list with the claim; only the last is held.
            assert await deliveries(client) == {latest[0]: (b"solo", 1)}


async def test_entries_handed_out_again_by_a_redis_that_forgot_are_not_submitted_again(
    redis: RedisServer,
) -> None:
    with trio.fail_after(WITHIN):
        async with redis_client(redis.port) as client:
            await add(client, 10)
            source, intake = RedisSource("redis", source_config(redis.port)), HoldingIntake()
            async with running(source, intake):
                await eventually(lambda: len(intake.messages) == 10)
                # As after a crash that lost the last second of writes (appendfsync
                # everysec): the group no longer knows it delivered them.
                await client.xgroup_setid("chat", "mods", "0")
                await add(client, 1, start=10)
                await eventually(lambda: len(intake.messages) >= 11)
                await add(client, 1, start=11)
                await eventually(lambda: len(intake.messages) >= 12)
            assert intake.ids() == Counter(f"m-{i}" for i in range(12))
