"""The daemon's side of the review queue: a sink that queues decisions, and a feed that
keeps the allow-list and hands review records to the sinks."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from chatmod.config.sections import ReviewSection
from chatmod.core.backoff import Backoff
from chatmod.core.interfaces import NoOptions, Sink
from chatmod.core.model import Decision
from chatmod.errors import ReviewError, SinkError
from chatmod.review.allow import AllowList
from chatmod.review.model import OVERTURNED, Review, item_record
from chatmod.review.store import ReviewStore, open_store

log = logging.getLogger("chatmod.review")

# Seconds between looks for new reviews: an overturn reaches the daemon within about this.
POLL_INTERVAL = 0.25
REVIEW_SINK_NAME = "review-queue"
# Seconds a decision to queue waits for the store to open before it goes to the dead letters.
STORE_WAIT = 5.0

# Seconds before review records a sink failed to take are tried again, doubling to the max.
RECORD_RETRY_INITIAL = 1.0
RECORD_RETRY_MAX = 60.0

Deliver = Callable[[Mapping[str, Any]], Awaitable[bool]]


class ReviewQueue:
    """Runs with the daemon: opens the store, fills the allow-list from the overturns still
    valid, then polls for new reviews. Restarted by the supervisor if the store fails."""

    def __init__(self, section: ReviewSection, state_dir: Path | None, deliver: Deliver,
                 clock: Callable[[], float] = time.time) -> None:
        self.section = section
        self.state_dir = state_dir
        self.actions = frozenset(section.actions)
        self.allow_list = AllowList(clock)
        self._deliver = deliver
        self._clock = clock
        self._store: ReviewStore | None = None
        self._opened = trio.Event()
        self.queued = 0
        self.reviews: Counter[str] = Counter()
        self.records_delivered = 0
        self.delivery_failures = 0
        self._backoff = Backoff(RECORD_RETRY_INITIAL, RECORD_RETRY_MAX)
        self._retry_at = 0.0
        self.backlog_size = 0
        self.oldest_queued_at: float | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        # Ready at once: a store that cannot be reached (Redis down) must not keep the daemon
        # from starting; it fails this run, which its supervisor restarts with backoff, and
        # meanwhile decisions to queue wait a little, then go to the dead letters.
        task_status.started()
        async with open_store(self.section, self.state_dir) as store:
            for review in await store.allowed():
                self._learn(review)
            await self._refresh_backlog(store)
            self._store = store
            self._opened.set()
            try:
                log.info("review queue (%s): %d text(s) on the allow-list, %d item(s) waiting",
                         self.section.backend, len(self.allow_list), self.backlog_size)
                while True:
                    await self._poll(store)
                    await trio.sleep(POLL_INTERVAL)
            finally:
                self._store = None
                self._opened = trio.Event()

    async def _poll(self, store: ReviewStore) -> None:
        seen, to_deliver = await store.poll()
        for review in seen:
            self.reviews[review.outcome] += 1
            self._learn(review)
        if to_deliver and trio.current_time() >= self._retry_at:
            await self._hand_over(store, to_deliver)
        self.allow_list.expire()
        await self._refresh_backlog(store)

    async def _hand_over(self, store: ReviewStore,
                         to_deliver: list[tuple[str, Review | None]]) -> None:
        """Review records to the sinks, at least once: a record a sink failed to take stays
        undelivered and is tried again after a backoff (SQLite: the next poll then; Redis:
        when the group takes it over), so a sink may see one twice (same ``review_id``)."""
        taken = True
        for _handle, delivering in to_deliver:
            if delivering is not None and await self._deliver(delivering.record()):
                self.records_delivered += 1
            elif delivering is not None:
                taken = False
        if taken:
            await store.delivered([handle for handle, _ in to_deliver])
            self._backoff.reset()
            return
        delay = self._backoff.next_delay()
        self._retry_at = trio.current_time() + delay
        self.delivery_failures += 1
        log.warning("review records: a sink could not take them; trying again in %.1f s",
                    delay)

    def _learn(self, review: Review) -> None:
        if review.outcome == OVERTURNED and review.allow_until is not None:
            self.allow_list.allow(review.item.text, review.allow_until)

    async def _refresh_backlog(self, store: ReviewStore) -> None:
        self.backlog_size, self.oldest_queued_at = await store.backlog()

    def wants(self, decision: Decision) -> bool:
        """Whether ``decision`` goes to the queue."""
        return decision.action in self.actions

    async def enqueue(self, decisions: Sequence[Decision]) -> None:
        """Queue the decisions that want review; :class:`SinkError` if the store cannot take
        them (they then go to the dead letters)."""
        wanted = [item_record(d) for d in decisions if self.wants(d)]
        if not wanted:
            return
        if self._store is None:
            with trio.move_on_after(STORE_WAIT):
                await self._opened.wait()
        store = self._store
        if store is None:
            raise SinkError("the review store is not open (starting, or being reconnected)")
        try:
            await store.enqueue(wanted)
        except ReviewError as exc:
            raise SinkError(str(exc)) from None
        self.queued += len(wanted)
        self.backlog_size += len(wanted)
        if self.oldest_queued_at is None:
            self.oldest_queued_at = self._clock()

    def oldest_age(self) -> float:
        """Seconds the oldest waiting item has waited (0 when none waits)."""
        if self.oldest_queued_at is None or not self.backlog_size:
            return 0.0
        return max(0.0, self._clock() - self.oldest_queued_at)


class ReviewSink(Sink[NoOptions]):
    """The pipeline's way into the queue: a sink, so a decision's source is acknowledged
    only once the queue has it, and a store that fails sends it to the dead letters."""

    Config = NoOptions

    def __init__(self, queue: ReviewQueue) -> None:
        super().__init__(REVIEW_SINK_NAME, NoOptions())
        self.queue = queue

    async def write(self, decisions: Sequence[Decision]) -> None:
        await self.queue.enqueue(decisions)
