"""Redis Streams: a source reading through a consumer group (at-least-once), and a sink.

Source: entries are read with ``XREADGROUP`` and acknowledged with ``XACK`` only once every
sink has taken their decisions. At each (re)connection it first takes back the entries its
consumer name holds unacknowledged (a previous run's, or a read whose reply the dropped
connection lost); entries left pending by a consumer that died are taken over after
``min_idle`` seconds. Both go through :meth:`RedisSource._take_over`. An entry delivered more
than ``max_deliveries`` times, or one that cannot become a message at all
(:mod:`chatmod.plugins.redis_entries`), goes to the dead-letter stream with the reason, and is
acked.

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

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.response.types import StreamEntry, StreamPending, StreamPendingExt
from coredis.retry import NoRetryPolicy
from coredis.tokens import PureToken

from chatmod.config.schema import Secret, setting
from chatmod.core.backoff import Backoff
from chatmod.core.interfaces import Intake, Sink, Source
from chatmod.core.model import Decision, Message
from chatmod.errors import InputError, SinkError
from chatmod.plugins.redis_entries import DEFAULT_MAX_ENTRY_BYTES, entry_to_message, over_limits

# Seconds between looks at the acknowledgements still outstanding when reading has stopped.
ACK_RECHECK = 0.05
# Seconds between attempts to reach a Redis that went away, doubling up to the maximum.
RECONNECT_INITIAL = 0.2
RECONNECT_MAX = 10.0
# What a lost or restarting Redis raises; anything else is a bug or a real refusal.
CONNECTION_ERRORS = (coredis.exceptions.ConnectionError, coredis.exceptions.BusyLoadingError,
                     TimeoutError, OSError, anyio.ClosedResourceError,
                     anyio.BrokenResourceError, trio.ClosedResourceError,
                     trio.BrokenResourceError)


@dataclass(frozen=True)
class RedisConnection:
    host: str = setting("127.0.0.1", nonempty=True, help="the Redis server")
    port: int = setting(6379, min=1, max=65535, help="its port")
    db: int = setting(0, min=0, help="the database number")
    password: Secret | None = setting(None, help="its password")


def is_connection_error(exc: BaseException) -> bool:
    """A connection error, or a group (coredis's task groups) holding nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        _matched, rest = exc.split(lambda e: is_connection_error(e)
                                   if not isinstance(e, BaseExceptionGroup) else False)
        return rest is None
    return isinstance(exc, CONNECTION_ERRORS) or _pool_gone(exc)


def _pool_gone(exc: BaseException) -> bool:
    # coredis' word for a client whose connection pool was shut down (its task group was
    # cancelled with the read that stopped): for us, the connection is gone.
    return isinstance(exc, RuntimeError) and "connection pool is not initialized" in str(
        exc).lower()


def describe_connection_error(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


def connect(config: RedisConnection) -> coredis.Redis[bytes]:
    """A client that does not retry by itself: coredis would re-send a command whose
    connection dropped (an XREADGROUP that Redis may already have answered) without telling
    us; the source's and the sink's own loops reconnect, and know what to do again."""
    return coredis.Redis(
        host=config.host, port=config.port, db=config.db,
        password=config.password.reveal() if config.password else None,
        decode_responses=False, connect_timeout=5.0, stream_timeout=30.0,
        retry_policy=NoRetryPolicy())


@dataclass(frozen=True)
class RedisSourceConfig(RedisConnection):
    """A Redis Stream read through a consumer group, at least once: entries are acknowledged
    (`XACK`) only after every sink took their decisions. Several daemons in one group share the
    stream; entries a dead daemon left pending are taken over (`XCLAIM`) after `min_idle`. A
    daemon never submits an entry twice itself: after a restart under the same `consumer` name,
    or when a lost connection comes back (retried with jittered backoff, 0.2 s doubling to
    10 s), it resumes the entries its name holds unacknowledged, each once, and skips those it
    is still deciding; only such a redelivery counts towards `max_deliveries`. Entry fields map
    to the input line: `text` (required), `id` (the entry id when it is missing, blank or not
    UTF-8), `author`, `channel` (`text`, `author`, `channel` in UTF-8), `metadata` (a JSON
    object), `images` (a JSON array); other fields are ignored. An entry that is not a chat
    message (also: over `max_entry_bytes`, or more than 64 fields) is reported, dead-lettered
    with the reason and acknowledged: it never holds up the group. The dead-letter stream's
    entries have the fields `entry`, `reason`, `stream`, and the entry's own as `field:<name>`
    (not for an entry over the limits: it stays in its stream, found by `entry`). Needs Redis
    6.2 or later."""

    stream: str = setting("chat", nonempty=True, help="the stream read")
    group: str = setting(
        "chatmod", nonempty=True, help="the consumer group reading it (created if missing)")
    consumer: str = setting("", help="this daemon's name in the group; default host-pid")
    batch: int = setting(100, min=1, max=10_000, help="entries read at once")
    block: float = setting(1.0, min=0.001, help="seconds a read waits for new entries")
    min_idle: float = setting(60.0, min=0.001, help="seconds before another consumer's "
                                                     "pending entry is taken over")
    claim_interval: float = setting(
        10.0, min=0.01, help="seconds between looks for entries to take over")
    max_deliveries: int = setting(
        5, min=1,
        help="an entry delivered more often goes to the dead-letter stream with the "
             "reason, and is acked; so does an entry that is not a chat message at all")
    dead_letter_stream: str = setting("", help="default: `<stream>:dead`")
    channel: str | None = setting(None, help="channel for entries that name none")
    max_entry_bytes: int = setting(
        DEFAULT_MAX_ENTRY_BYTES, min=16, max=64 * 1024 * 1024,
        help="an entry whose field names and values add up to more is not a chat message (as "
             "stdin's max_line_bytes): reported, dead-lettered and acknowledged")
    ack_grace: float = setting(10.0, min=0.0, help="seconds, once reading stops, to keep the "
                                                    "connection for what is still being decided")


class RedisSource(Source[RedisSourceConfig]):
    Config = RedisSourceConfig

    def __init__(self, name: str, config: RedisSourceConfig) -> None:
        super().__init__(name, config)
        self.consumer = config.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_stream = config.dead_letter_stream or f"{config.stream}:dead"
        self._client: coredis.Redis[bytes] | None = None
        self._entry_ids: dict[int, bytes] = {}  # id(message) -> entry id, until decided
        # Every entry this process submitted and has not seen acknowledged (XACK confirmed):
        # what it must never submit again, whoever delivers it a second time.
        self._held: set[bytes] = set()
        self._acked_all: trio.Event | None = None
        self._to_ack: list[bytes] = []  # decided, XACK not confirmed yet
        self._acking = 0  # ids in an XACK under way
        self._stopping = trio.Event()  # set when reading is to stop
        self.stats: dict[str, int] = {"read": 0, "acked": 0, "claimed": 0, "resumed": 0,
                                      "dead_lettered": 0, "reconnects": 0}

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Cancelling a read in flight would lose the entries Redis hands us with it, and
        # takes coredis' connection down. So the connection runs shielded, and cancellation
        # ("stop reading") only raises a flag that the loop checks between reads; each read
        # ends within ``block`` seconds.
        stopping = self._stopping

        async def flag_when_cancelled() -> None:
            try:
                await trio.sleep_forever()
            finally:
                stopping.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flag_when_cancelled)
            with trio.CancelScope(shield=True):
                await self._serve(intake, stopping, task_status)
            nursery.cancel_scope.cancel()

    async def _serve(self, intake: Intake, stopping: trio.Event,
                     task_status: trio.TaskStatus[None]) -> None:
        backoff = Backoff(RECONNECT_INITIAL, RECONNECT_MAX)
        started = False
        while not stopping.is_set():
            try:
                async with connect(self.config) as client:
                    self._client = client
                    await self._ensure_group(client)
                    if not started:
                        started = True
                        task_status.started()
                    backoff.reset()
                    await self._flush_acks()  # those an outage deferred
                    await self._consume(client, intake, stopping)
                    await self._await_acks(stopping)
                    return
            except (*CONNECTION_ERRORS, RuntimeError, BaseExceptionGroup) as exc:
                if not is_connection_error(exc):
                    raise
                self._client = None
                self.stats["reconnects"] += 1
                delay = backoff.next_delay()
                self.log.warning("redis %s:%d: %s; reconnecting in %.1f s", self.config.host,
                                 self.config.port, describe_connection_error(exc), delay)
                if not started:
                    started = True
                    task_status.started()  # reading starts once Redis is back
                with trio.move_on_after(delay):
                    await stopping.wait()

    async def _await_acks(self, stopping: trio.Event) -> None:
        """Reading stopped: keep the connection until what was read is acknowledged, so a
        clean stop leaves nothing pending; at most ``ack_grace`` seconds."""
        with trio.move_on_after(self.config.ack_grace):
            while self._outstanding():
                await self._flush_acks()
                # Decisions still on their way: look again shortly.
                self._acked_all = trio.Event()
                with trio.move_on_after(ACK_RECHECK):
                    await self._acked_all.wait()
        self._client = None
        if self._entry_ids or self._to_ack:
            self.log.warning("%d entries read but not acknowledged yet; they stay pending "
                             "for this group", len(self._entry_ids))

    def _outstanding(self) -> int:
        return len(self._entry_ids) + len(self._to_ack) + self._acking

    async def _ensure_group(self, client: coredis.Redis[bytes]) -> None:
        # Another daemon of the group (or an earlier run) may have created it.
        with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
            await client.xgroup_create(self.config.stream, self.config.group, "0",
                                       mkstream=True)

    async def _consume(self, client: coredis.Redis[bytes], intake: Intake,
                       stopping: trio.Event) -> None:
        config = self.config
        # Own pending entries first: what this consumer name read before a restart, or
        # before the connection dropped, and has not acknowledged.
        await self._take_over(client, intake, stopping, own=True)
        next_claim = trio.current_time()
        while not stopping.is_set():
            if trio.current_time() >= next_claim:
                await self._take_over(client, intake, stopping, own=False)
                next_claim = trio.current_time() + config.claim_interval
            await self._read_new(client, intake, config.block)

    async def _read_new(self, client: coredis.Redis[bytes], intake: Intake,
                        block: float) -> None:
        result = await client.xreadgroup(
            self.config.group, self.consumer, streams={self.config.stream: ">"},
            count=self.config.batch, block=int(block * 1000))
        entries = next(iter(result.values())) if result else ()
        await self._submit(client, intake, entries, {})

    async def _take_over(self, client: coredis.Redis[bytes], intake: Intake,
                         stopping: trio.Event, *, own: bool) -> None:
        """Claim and submit pending entries this process does not hold: with ``own``, those
        of this consumer name (any idle time); else anyone's idle for ``min_idle``.

        Counting deliveries: Redis counts one for every read that hands an entry out again
        (``XREADGROUP`` with an id, ``XCLAIM``, ``XAUTOCLAIM``), and the dead-letter check
        reads that count. Re-reading our own pending entries that way would count a delivery
        for each entry still in flight here, at every reconnection, and hand them to us a
        second time. So the entries are first listed with ``XPENDING`` (which counts
        nothing); those in ``self._held`` (submitted by this process, not yet acknowledged)
        are left alone; only the others are claimed with ``XCLAIM``: each a real
        redelivery, counted once. The listing advances past what it listed, so no entry is
        looked at twice in one pass. ``XCLAIM``'s minimum idle time is the least idle time
        listed: an entry another daemon claimed in between (idle again from zero) is not
        taken from it.
        """
        config = self.config
        start = "-"
        while not stopping.is_set():
            listed = await client.xpending(
                config.stream, config.group, start=start, end="+", count=config.batch,
                idle=None if own else int(config.min_idle * 1000),
                consumer=self.consumer if own else None)
            if isinstance(listed, StreamPending) or not listed:  # (the summary: not asked)
                return
            start = "(" + _text(listed[-1].identifier)
            candidates = [p for p in listed if _bytes(p.identifier) not in self._held]
            if candidates:
                await self._claim(client, intake, candidates, own)
            if len(listed) < config.batch:
                return

    async def _claim(self, client: coredis.Redis[bytes], intake: Intake,
                     candidates: Sequence[StreamPendingExt], own: bool) -> None:
        claimed = await client.xclaim(
            self.config.stream, self.config.group, self.consumer,
            min(p.idle for p in candidates), [p.identifier for p in candidates])
        # Deleted entries are not returned (Redis drops them from the pending list).
        entries = [e for e in claimed if isinstance(e, StreamEntry)]
        if not entries:
            return
        if own:
            self.stats["resumed"] += len(entries)
            self.log.info("resuming %d entries read before and not acknowledged",
                          len(entries))
        else:
            self.stats["claimed"] += len(entries)
            self.log.info("took over %d entries idle for %g s", len(entries),
                          self.config.min_idle)
        # The claim counted one more delivery than XPENDING listed.
        deliveries = {_bytes(p.identifier): p.delivered + 1 for p in candidates}
        await self._submit(client, intake, entries, deliveries)

    async def _submit(self, client: coredis.Redis[bytes], intake: Intake,
                      entries: Sequence[StreamEntry], deliveries: Mapping[bytes, int]) -> None:
        for entry in entries:
            entry_id = _bytes(entry.identifier)
            if entry_id in self._held:
                # A Redis that lost its last writes in a crash (appendfsync everysec, its
                # default) has forgotten that it gave us these: ">" hands them out again.
                continue
            fields = _fields(entry)
            times = deliveries.get(entry_id, 1)
            if times > self.config.max_deliveries:
                await self._dead_letter(client, entry_id, fields, f"delivered {times} times "
                                        "without a decision every sink took")
                continue
            try:
                message = entry_to_message(
                    entry_id, fields, source=self.name, default_channel=self.config.channel,
                    max_entry_bytes=self.config.max_entry_bytes)
            except InputError as exc:
                intake.report_invalid(self.name, f"entry {_text(entry_id)}: {exc}")
                await self._dead_letter(client, entry_id, fields, f"not a chat message: {exc}")
                continue
            if self._stopping.is_set():
                # The pipeline may be gone (drain timeout): what cannot get in stays pending
                # for the group, which is safe; waiting for it forever would not be.
                with trio.move_on_after(self.config.ack_grace) as waited:
                    await intake.submit(message)
                if waited.cancelled_caught:
                    return
            else:
                await intake.submit(message)
            # Recorded once submitted (no checkpoint in between, so before any decision).
            self._entry_ids[id(message)] = entry_id
            self._held.add(entry_id)
            self.stats["read"] += 1

    async def acknowledge(self, messages: Sequence[Message]) -> None:
        self._to_ack.extend(
            i for m in messages if (i := self._entry_ids.pop(id(m), None)) is not None)
        await self._flush_acks()

    async def _flush_acks(self) -> None:
        while self._to_ack and (client := self._client) is not None:
            ids, self._to_ack = self._to_ack, []
            self._acking += len(ids)
            try:
                await self._ack(client, ids)
            except (*CONNECTION_ERRORS, RuntimeError, BaseExceptionGroup) as exc:
                if not is_connection_error(exc):
                    raise
                # Kept for the next connection; if none comes, they stay pending and are
                # claimed and decided again (at least once).
                self._to_ack = ids + self._to_ack
                self.log.debug("XACK of %d entries deferred: %s", len(ids),
                               describe_connection_error(exc))
                if self._client is client:
                    break  # this connection is down: the next one retries
            finally:
                self._acking -= len(ids)
        if not self._outstanding() and self._acked_all is not None:
            self._acked_all.set()

    async def _ack(self, client: coredis.Redis[bytes], ids: Sequence[bytes]) -> None:
        await client.xack(self.config.stream, self.config.group, ids)
        self._held.difference_update(ids)
        self.stats["acked"] += len(ids)

    async def _dead_letter(self, client: coredis.Redis[bytes], entry_id: bytes,
                           fields: Mapping[bytes, bytes], reason: str) -> None:
        letter = {b"entry": entry_id, b"reason": reason.encode(),
                  b"stream": self.config.stream.encode()}
        # An entry over the limits stays in its stream (look it up by id) rather than
        # being copied whole: the dead letters must not become the way to fill Redis.
        if over_limits(fields, self.config.max_entry_bytes) is None:
            letter.update((b"field:" + name, value) for name, value in fields.items())
        await client.xadd(self.dead_stream, letter)
        await self._ack(client, [entry_id])
        self.stats["dead_lettered"] += 1
        self.log.warning("entry %s dead-lettered to %s: %s", _text(entry_id),
                         self.dead_stream, reason)

    def statistics(self) -> dict[str, float]:
        return {**self.stats, "unacked": len(self._held)}


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _text(value: str | bytes) -> str:
    # Entry ids are ASCII ("<ms>-<seq>"); "replace" only so that a log line never fails.
    return value if isinstance(value, str) else value.decode("ascii", "replace")


def _fields(entry: StreamEntry) -> dict[bytes, bytes]:
    # The client is made with decode_responses=False: names and values come as bytes.
    return {_bytes(name): _bytes(value) for name, value in entry.field_values.items()}


@dataclass(frozen=True)
class RedisSinkConfig(RedisConnection):
    """`XADD`s each decision: `json` (the decision line), `id`, `action`."""

    stream: str = setting("chatmod:decisions", nonempty=True, help="the stream written")
    max_length: int = setting(1_000_000, min=0, help="approximate cap on the stream; 0: none")
    include_text: bool = setting(True, help="keep the message text in the decision line")
    retry_for: float = setting(30.0, min=0.0, help="seconds to keep retrying through an "
                                                    "outage before giving up (dead letters)")


class RedisSink(Sink[RedisSinkConfig]):
    Config = RedisSinkConfig

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
