"""Redis Streams: a source reading through a consumer group (at-least-once), and a sink.

Source: entries are read with ``XREADGROUP`` (own pending entries first, after a restart,
then new ones) and acknowledged with ``XACK`` only once every sink has taken their
decisions. Entries left pending by a consumer that died are taken over with ``XAUTOCLAIM``
after ``min_idle`` seconds. An entry delivered more than ``max_deliveries`` times, or one that
cannot become a message at all, goes to the dead-letter stream with the reason, and is acked.
Fields map to the input line: ``text`` (required), ``id`` (else the entry id), ``author``,
``channel``, ``metadata`` (JSON), ``images`` (JSON array).

Sink: ``XADD`` each decision to a stream: ``json`` (the decision line), ``id``, ``action``,
trimmed to about ``max_length`` entries.

Client: coredis, which runs natively under trio (through anyio) and is typed.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import coredis
import coredis.exceptions
import orjson
import trio
from coredis.tokens import PureToken

from chatmod.backoff import Backoff
from chatmod.errors import InputError, SinkError
from chatmod.interfaces import Intake, Sink, Source
from chatmod.lines import parse_input_record
from chatmod.model import Decision, Message
from chatmod.schema import Secret, setting

# What a lost or restarting Redis raises; anything else is a bug or a real refusal.
CONNECTION_ERRORS = (coredis.exceptions.ConnectionError, coredis.exceptions.BusyLoadingError,
                     TimeoutError, OSError)


@dataclass(frozen=True)
class RedisConnection:
    host: str = setting("127.0.0.1", nonempty=True)
    port: int = setting(6379, min=1, max=65535)
    db: int = setting(0, min=0)
    password: Secret | None = None


def is_connection_error(exc: BaseException) -> bool:
    """A connection error, or a group (coredis's task groups) holding nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        _matched, rest = exc.split(CONNECTION_ERRORS)
        return rest is None
    return isinstance(exc, CONNECTION_ERRORS)


def describe_connection_error(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


def connect(config: RedisConnection) -> coredis.Redis[bytes]:
    return coredis.Redis(
        host=config.host, port=config.port, db=config.db,
        password=config.password.reveal() if config.password else None,
        decode_responses=False, connect_timeout=5.0, stream_timeout=30.0)


@dataclass(frozen=True)
class RedisSourceConfig(RedisConnection):
    stream: str = setting("chat", nonempty=True)
    group: str = setting("chatmod", nonempty=True)
    consumer: str = setting("", help="this daemon's name in the group; default host-pid")
    batch: int = setting(100, min=1, max=10_000, help="entries read at once")
    block: float = setting(1.0, min=0.001, help="seconds a read waits for new entries")
    min_idle: float = setting(60.0, min=0.001, help="seconds before another consumer's "
                                                     "pending entry is taken over")
    claim_interval: float = setting(10.0, min=0.01)
    max_deliveries: int = setting(5, min=1)
    dead_letter_stream: str = setting("", help="default: <stream>:dead")
    channel: str | None = None


class RedisSource(Source):
    Config = RedisSourceConfig
    config: RedisSourceConfig

    def __init__(self, name: str, config: RedisSourceConfig) -> None:
        super().__init__(name, config)
        self.consumer = config.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_stream = config.dead_letter_stream or f"{config.stream}:dead"
        self._client: coredis.Redis[bytes] | None = None
        self._entry_ids: dict[int, bytes] = {}  # id(message) -> entry id, until acked
        self.stats: dict[str, int] = {"read": 0, "acked": 0, "claimed": 0, "dead_lettered": 0,
                                      "reconnects": 0}

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        backoff = Backoff(0.2, 10.0)
        started = False
        while True:
            try:
                async with connect(self.config) as client:
                    self._client = client
                    await self._ensure_group(client)
                    if not started:
                        started = True
                        task_status.started()
                    backoff.reset()
                    await self._consume(client, intake)
            except (*CONNECTION_ERRORS, BaseExceptionGroup) as exc:
                if not is_connection_error(exc):
                    raise
                self._client = None
                self.stats["reconnects"] += 1
                delay = backoff.next_delay()
                self.log.warning("redis %s:%d: %s; reconnecting in %.1f s", self.config.host,
                                 self.config.port, describe_connection_error(exc), delay)
                await trio.sleep(delay)

    async def _ensure_group(self, client: coredis.Redis[bytes]) -> None:
        # Another daemon of the group (or an earlier run) may have created it.
        with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
            await client.xgroup_create(self.config.stream, self.config.group, "0",
                                       mkstream=True)

    async def _consume(self, client: coredis.Redis[bytes], intake: Intake) -> None:
        config = self.config
        # Own pending entries first: what this consumer read before a restart and never acked.
        while await self._read(client, intake, "0", block=None):
            pass
        next_claim = trio.current_time()
        while True:
            if trio.current_time() >= next_claim:
                await self._claim_stale(client, intake)
                next_claim = trio.current_time() + config.claim_interval
            await self._read(client, intake, ">", block=config.block)

    async def _read(self, client: coredis.Redis[bytes], intake: Intake, start: str,
                    block: float | None) -> int:
        result = await client.xreadgroup(
            self.config.group, self.consumer, streams={self.config.stream: start},
            count=self.config.batch, block=int(block * 1000) if block is not None else None)
        entries = next(iter(result.values())) if result else ()
        await self._submit(client, intake, entries, redelivered=start != ">")
        return len(entries)

    async def _claim_stale(self, client: coredis.Redis[bytes], intake: Intake) -> None:
        start = "0-0"
        while True:
            reply = await client.xautoclaim(
                self.config.stream, self.config.group, self.consumer,
                int(self.config.min_idle * 1000), start=start, count=self.config.batch)
            start, entries = reply[0], reply[1]
            if entries:
                self.stats["claimed"] += len(entries)
                self.log.info("took over %d entries idle for %g s", len(entries),
                              self.config.min_idle)
                await self._submit(client, intake, entries, redelivered=True)
            if start in (b"0-0", "0-0"):
                return

    async def _submit(self, client: coredis.Redis[bytes], intake: Intake,
                      entries: Sequence[Any], redelivered: bool) -> None:
        deliveries = await self._delivery_counts(client, entries) if redelivered else {}
        for entry in entries:
            entry_id: bytes = entry.identifier
            if entry.field_values is None:  # deleted meanwhile: nothing left to decide
                await self._ack(client, [entry_id])
                continue
            times = deliveries.get(entry_id, 1)
            if times > self.config.max_deliveries:
                await self._dead_letter(client, entry, f"delivered {times} times without a "
                                                       "decision every sink took")
                continue
            try:
                message = self._to_message(entry_id, entry.field_values)
            except InputError as exc:
                intake.report_invalid(self.name, f"entry {entry_id.decode()}: {exc}")
                await self._dead_letter(client, entry, f"not a chat message: {exc}")
                continue
            self._entry_ids[id(message)] = entry_id
            self.stats["read"] += 1
            await intake.submit(message)

    async def _delivery_counts(self, client: coredis.Redis[bytes],
                               entries: Sequence[Any]) -> dict[bytes, int]:
        if not entries:
            return {}
        first, last = entries[0].identifier, entries[-1].identifier
        pending = await client.xpending(self.config.stream, self.config.group, start=first,
                                        end=last, count=len(entries) * 2 + 10)
        counts: dict[bytes, int] = {}
        for item in pending:
            identifier = item.identifier  # type: ignore[union-attr]
            counts[identifier if isinstance(identifier, bytes) else str(identifier).encode()] = (
                item.delivered)  # type: ignore[union-attr]
        return counts

    def _to_message(self, entry_id: bytes, fields: Mapping[bytes, bytes]) -> Message:
        record: dict[str, Any] = {}
        for key, value in fields.items():
            name = key.decode("utf-8", "replace")
            text = value.decode("utf-8", "replace")
            if name in ("metadata", "images"):
                try:
                    record[name] = orjson.loads(value)
                except orjson.JSONDecodeError:
                    raise InputError(f"{name!r} is not JSON") from None
            else:
                record[name] = text
        record.setdefault("id", entry_id.decode())
        return parse_input_record(record, self.name, self.config.channel)

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        ids = [i for m in messages if (i := self._entry_ids.pop(id(m), None)) is not None]
        client = self._client
        if ids and client is not None:
            try:
                await self._ack(client, ids)
            except CONNECTION_ERRORS as exc:
                # Still pending: claimed and decided again later (at least once).
                self.log.warning("could not XACK %d entries: %s", len(ids), exc)

    async def _ack(self, client: coredis.Redis[bytes], ids: Sequence[bytes]) -> None:
        await client.xack(self.config.stream, self.config.group, ids)
        self.stats["acked"] += len(ids)

    async def _dead_letter(self, client: coredis.Redis[bytes], entry: Any, reason: str) -> None:
        fields = {b"entry": entry.identifier, b"reason": reason.encode(),
                  b"stream": self.config.stream.encode()}
        for key, value in (entry.field_values or {}).items():
            fields[b"field:" + key] = value
        await client.xadd(self.dead_stream, fields)
        await self._ack(client, [entry.identifier])
        self.stats["dead_lettered"] += 1
        self.log.warning("entry %s dead-lettered to %s: %s", entry.identifier.decode(),
                         self.dead_stream, reason)

    def statistics(self) -> dict[str, float]:
        return {**self.stats, "unacked": len(self._entry_ids)}


@dataclass(frozen=True)
class RedisSinkConfig(RedisConnection):
    stream: str = setting("chatmod:decisions", nonempty=True)
    max_length: int = setting(1_000_000, min=0, help="approximate cap on the stream; 0: none")
    include_text: bool = True
    retry_for: float = setting(30.0, min=0.0, help="seconds to keep retrying through an "
                                                    "outage before giving up (dead letters)")


class RedisSink(Sink):
    Config = RedisSinkConfig
    config: RedisSinkConfig

    def __init__(self, name: str, config: RedisSinkConfig) -> None:
        super().__init__(name, config)
        self._client = connect(config)
        self.written = 0
        self.retries = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self._client:
            task_status.started()
            await trio.sleep_forever()

    async def write(self, decisions: Sequence[Decision]) -> None:
        config = self.config
        trim: dict[str, Any] = {}
        if config.max_length:
            trim = {"trim_strategy": PureToken.MAXLEN, "threshold": config.max_length,
                    "trim_operator": PureToken.APPROXIMATELY}
        give_up_at = trio.current_time() + config.retry_for
        backoff = Backoff(0.1, 2.0)
        records = [{b"json": d.to_line(include_text=config.include_text).rstrip(),
                    b"id": d.message.id.encode(), b"action": d.action.encode()}
                   for d in decisions]
        while True:
            try:
                # One round trip for the batch, applied whole (MULTI/EXEC) or not at all.
                async with self._client.pipeline(transaction=True) as pipe:
                    for fields in records:
                        pipe.xadd(config.stream, fields, **trim)
                break
            except (*CONNECTION_ERRORS, BaseExceptionGroup) as exc:
                if not is_connection_error(exc):
                    raise
                if trio.current_time() >= give_up_at:
                    raise SinkError(f"redis XADD to {config.stream}: "
                                    f"{describe_connection_error(exc)}") from None
                self.retries += 1
                await trio.sleep(backoff.next_delay())
        self.written += len(records)

    def statistics(self) -> dict[str, float]:
        return {"written": self.written, "retries": self.retries}
