"""The review queue shared by a group of daemons: two Redis streams.

``<key>`` holds the items waiting (the entry id is the item id); ``<key>:reviews`` holds every
answer. An answer takes its item off the queue and appends the review in one Lua script, so of
two reviewers answering at once only one succeeds, and an item answered through any daemon's
config is gone for all. Every daemon reads ``<key>:reviews`` in full (``XREAD``) to keep its
allow-list; the review records for the sinks are read through the consumer group
``<group>`` (``XREADGROUP``), so one daemon of the group writes each, acknowledged (``XACK``)
once its sinks had it. A daemon first takes back the records its consumer name held
unacknowledged (a previous run's), and takes over the records another consumer name has held
unacknowledged for ``CLAIM_MIN_IDLE`` seconds (a daemon that died, or restarted under a new
name).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.response.types import StreamEntry
from coredis.retry import NoRetryPolicy

from chatmod.config.sections import ReviewSection
from chatmod.errors import ReviewError
from chatmod.review.model import (
    QUEUED_KEY_TTL,
    Review,
    ReviewItem,
    item_from_json,
    readable_review,
)

# The newest reviews kept (the allow-list needs only those within allow_ttl).
MAX_REVIEWS = 100_000
# Reviews (and items) read at once.
READ_BATCH = 100
# A review record another daemon of the group took and has not acknowledged for this long
# (it died) is taken over; looked for every CLAIM_INTERVAL seconds.
CLAIM_MIN_IDLE = 60.0
CLAIM_INTERVAL = 10.0
# Seconds to connect, and for one command to answer.
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0

T = TypeVar("T")

# KEYS: queue, reviews. ARGV: item id, review json, max reviews. Returns the review's entry id,
# or false when the item was not in the queue (answered already, or never there).
_RESOLVE = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
    return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'review', ARGV[2])
end
return false
"""

# KEYS: queue, then one "queued" marker key per record. ARGV: the marker TTL, then the
# records. A record whose marker already exists (its message was queued before: a redelivery)
# is not added again.
_ENQUEUE = """
for i = 2, #KEYS do
    if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
        redis.call('XADD', KEYS[1], '*', 'record', ARGV[i])
    end
end
return true
"""

_CONNECTION_ERRORS = (coredis.exceptions.ConnectionError, coredis.exceptions.BusyLoadingError,
                      TimeoutError, OSError, anyio.ClosedResourceError,
                      anyio.BrokenResourceError, trio.ClosedResourceError,
                      trio.BrokenResourceError)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _single_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    """The one error a (nested) group holds, or None when it holds more, or a
    cancellation."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if len(leaves) != 1 or not isinstance(leaves[0], Exception):
        return None
    return leaves[0]


def _queued_at(entry_id: str) -> float:
    # A stream entry id starts with the milliseconds Redis added it at.
    return int(entry_id.partition("-")[0]) / 1000.0


class RedisReviewStore:
    """The queue as Redis streams; use ``async with store.connected(): ...``."""

    def __init__(self, section: ReviewSection) -> None:
        self.section = section
        self.queue = section.redis_key
        self.reviews = f"{section.redis_key}:reviews"
        self.consumer = section.redis_consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._client: coredis.Redis[bytes] = coredis.Redis(
            host=section.redis_host, port=section.redis_port, db=section.redis_db,
            password=section.redis_password.reveal() if section.redis_password else None,
            decode_responses=False, connect_timeout=CONNECT_TIMEOUT,
            stream_timeout=COMMAND_TIMEOUT, retry_policy=NoRetryPolicy())
        self._last_seen = "0"
        self._own_pending = True  # first read this consumer's unacknowledged records
        self.claim_min_idle = CLAIM_MIN_IDLE
        self._next_claim = 0.0

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[RedisReviewStore]:
        """The client's connection pool for the duration (coredis runs it in a task group)."""
        try:
            async with self._client:
                yield self
        except _CONNECTION_ERRORS as exc:
            raise self._unreachable(exc) from None
        except BaseExceptionGroup as group:
            # coredis' task group wraps what the body raised: one error is that error.
            leaf = _single_error(group)
            if leaf is None:
                raise
            if isinstance(leaf, _CONNECTION_ERRORS):
                raise self._unreachable(leaf) from None
            raise leaf from None

    def _unreachable(self, exc: BaseException) -> ReviewError:
        return ReviewError(f"review store redis {self.section.redis_host}:"
                           f"{self.section.redis_port}: {exc or type(exc).__name__}")

    async def _call(self, request: Callable[[], Awaitable[T]]) -> T:
        try:
            return await request()
        except _CONNECTION_ERRORS as exc:
            raise self._unreachable(exc) from None
        except coredis.exceptions.RedisError as exc:
            raise ReviewError(f"review store redis: {exc}") from None

    # -- the daemon ----------------------------------------------------------------------

    async def enqueue(self, records: Sequence[tuple[str, bytes]]) -> None:
        """Queue decision lines by message key (one script, applied whole); a key any
        daemon of the group queued within :data:`QUEUED_KEY_TTL` is not queued again."""
        keys = [self.queue, *(f"{self.queue}:queued:{key}" for key, _ in records)]
        args: list[str | bytes | int] = [int(QUEUED_KEY_TTL), *(record for _, record in records)]
        await self._call(lambda: self._client.eval(_ENQUEUE, keys, args))

    async def allowed(self) -> list[Review]:
        """At start: every review kept (the caller keeps the overturns still valid); the
        allow-list feed goes on after the newest, and the record group exists."""

        async def read() -> list[Review]:
            with contextlib.suppress(coredis.exceptions.StreamDuplicateConsumerGroupError):
                # From the first review: records of reviews made while no daemon ran count too.
                await self._client.xgroup_create(self.reviews, self.section.redis_group, "0",
                                                 mkstream=True)
            reviews: list[Review] = []
            start = "-"
            while True:
                entries = await self._client.xrange(self.reviews, start, "+", count=1000)
                for entry in entries:
                    review = readable_review(entry.field_values.get(b"review"))
                    if review is not None:
                        reviews.append(review)
                if len(entries) < 1000:
                    break
                start = "(" + _text(entries[-1].identifier)
            if entries:
                self._last_seen = _text(entries[-1].identifier)
            return reviews

        return await self._call(read)

    async def poll(self) -> tuple[list[Review], list[tuple[str, Review | None]]]:
        """Reviews new since the last poll (every daemon sees each), and the reviews whose
        record this daemon is to deliver (each goes to one daemon of the group; None for
        one that cannot be read, acknowledged all the same)."""

        async def read() -> tuple[list[Review], list[tuple[str, Review | None]]]:
            seen: list[Review] = []
            new = await self._client.xread({self.reviews: self._last_seen}, count=READ_BATCH)
            for entry in (new or {}).get(self.reviews.encode(), ()):
                self._last_seen = _text(entry.identifier)
                review = readable_review(entry.field_values.get(b"review"))
                if review is not None:
                    seen.append(review)
            entries: list[StreamEntry] = []
            if self._own_pending:
                entries = await self._read_group("0")
                self._own_pending = len(entries) == READ_BATCH
            if not self._own_pending:
                entries += await self._read_group(">")
            if trio.current_time() >= self._next_claim:
                self._next_claim = trio.current_time() + CLAIM_INTERVAL
                reply = await self._client.xautoclaim(
                    self.reviews, self.section.redis_group, self.consumer,
                    int(self.claim_min_idle * 1000), "0-0", count=READ_BATCH)
                entries += [e for e in reply[1] if isinstance(e, StreamEntry)]
            # An entry trimmed away while pending comes back without fields: None, acked.
            return seen, [(_text(e.identifier), readable_review(e.field_values.get(b"review")))
                          for e in entries]

        return await self._call(read)

    async def _read_group(self, start: str) -> list[StreamEntry]:
        claimed = await self._client.xreadgroup(
            self.section.redis_group, self.consumer, {self.reviews: start}, count=READ_BATCH)
        return list((claimed or {}).get(self.reviews.encode(), ()))

    async def delivered(self, handles: Sequence[str]) -> None:
        """The records of these reviews reached the sinks."""
        if handles:
            await self._call(lambda: self._client.xack(self.reviews, self.section.redis_group,
                                                       list(handles)))

    async def backlog(self) -> tuple[int, float | None]:
        """Items waiting, and when the oldest was queued."""

        async def read() -> tuple[int, float | None]:
            size = await self._client.xlen(self.queue)
            first = await self._client.xrange(self.queue, "-", "+", count=1)
            return size, _queued_at(_text(first[0].identifier)) if first else None

        return await self._call(read)

    # -- the command ---------------------------------------------------------------------

    async def pending(self, limit: int) -> list[ReviewItem]:
        """The oldest ``limit`` items waiting."""
        entries = await self._call(lambda: self._client.xrange(self.queue, "-", "+",
                                                               count=limit))
        return [self._item(e.identifier, e.field_values) for e in entries]

    async def get(self, item_id: str) -> ReviewItem:
        """The waiting item ``item_id``; :class:`ReviewError` when there is none."""
        try:
            entries = await self._call(lambda: self._client.xrange(self.queue, item_id, item_id))
        except ReviewError as exc:
            if "Invalid stream ID" in str(exc):
                raise ReviewError(f"no item {item_id!r} in the review queue (ids look like "
                                  "1764121000000-0 here)") from None
            raise
        # XRANGE takes "1764121000000" as a range over that millisecond: only the exact id
        # names an item (the one shown would not be the one XDEL takes).
        if not entries or _text(entries[0].identifier) != item_id:
            raise ReviewError(f"no item {item_id} in the review queue (already reviewed, or "
                              "never queued)")
        return self._item(entries[0].identifier, entries[0].field_values)

    async def resolve(self, item_id: str, decide: Callable[[ReviewItem], Review]) -> Review:
        """Take ``item_id`` off the queue and append ``decide(item)`` to the reviews, at once:
        of two reviewers answering together, the second is told the item is gone."""
        review = decide(await self.get(item_id))
        taken = await self._call(lambda: self._client.eval(
            _RESOLVE, [self.queue, self.reviews], [item_id, review.to_json(), MAX_REVIEWS]))
        if not taken:
            raise ReviewError(f"item {item_id} was reviewed by someone else just now")
        return review

    @staticmethod
    def _item(identifier: Any, fields: Any) -> ReviewItem:
        entry_id = _text(identifier)
        return item_from_json(entry_id, _queued_at(entry_id), fields.get(b"record", b""))

