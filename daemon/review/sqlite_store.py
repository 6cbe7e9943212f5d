"""The review queue of one daemon: SQLite (WAL) at ``<state_dir>/review.sqlite3``.

``queue`` holds the items waiting; ``reviews`` every answer, with ``delivered`` set once the
daemon handed its record to the sinks. The daemon and ``chatmod review`` open the file each
on their own: WAL lets the command write while the daemon reads, and every write is one short
transaction (``BEGIN IMMEDIATE``), so two reviewers cannot both take one item. Calls block on
the disk: the async methods run them in a worker thread, one at a time.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import trio

from chatmod.errors import ReviewError
from chatmod.review.model import (
    QUEUED_KEY_TTL,
    Review,
    ReviewItem,
    item_from_json,
    readable_review,
    review_from_json,
)

REVIEW_DB_NAME = "review.sqlite3"
# Seconds a write waits for the other process's transaction before giving up.
BUSY_TIMEOUT = 5.0
# Digits an item id may have: SQLite's row ids are 64-bit integers.
MAX_ID_DIGITS = 18

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queued_at REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS queued_keys (
    message_key TEXT PRIMARY KEY,
    queued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL UNIQUE,
    review BLOB NOT NULL,
    allow_until REAL,
    delivered INTEGER NOT NULL DEFAULT 0
);
"""


class SqliteReviewStore:
    """One SQLite file; async methods for the daemon, the ``*_now`` ones for the command."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        if not create and not path.exists():
            # The command must not create it: run as another user (root), the daemon could
            # then not write to it.
            raise ReviewError(f"no review queue at {path} (has the daemon run with [review] "
                              "enabled and this state_dir?)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Used from one worker thread at a time (the lock), not always the same one.
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ReviewError(f"review store {path}: {exc}") from None
        self._lock = trio.Lock()
        self._last_seq = 0

    def close(self) -> None:
        self._db.close()

    async def aclose(self) -> None:
        self.close()

    async def _off_loop(self, call: Callable[[], T]) -> T:
        async with self._lock:
            return await trio.to_thread.run_sync(call)

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except sqlite3.Error as exc:
            raise ReviewError(f"review store {self.path}: {exc}") from None

    # -- the daemon ----------------------------------------------------------------------

    async def enqueue(self, records: Sequence[tuple[str, bytes]]) -> None:
        """Queue decision lines by message key (one transaction); a key queued within
        :data:`QUEUED_KEY_TTL` (a redelivered message) is not queued again."""
        now = time.time()

        def insert() -> None:
            with self._db:
                self._db.execute("DELETE FROM queued_keys WHERE queued_at < ?",
                                 (now - QUEUED_KEY_TTL,))
                for key, record in records:
                    new = self._db.execute("INSERT OR IGNORE INTO queued_keys VALUES (?, ?)",
                                           (key, now)).rowcount
                    if new:
                        self._db.execute("INSERT INTO queue (queued_at, record) VALUES (?, ?)",
                                         (now, record))

        await self._off_loop(lambda: self._guarded(insert))

    async def allowed(self) -> list[Review]:
        """At start: every overturn whose allow-list entry is still valid; the feed then
        goes on after the newest review."""

        def read() -> list[Review]:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM reviews").fetchone()
            self._last_seq = int(row[0])
            rows = self._db.execute("SELECT review FROM reviews WHERE allow_until > ?",
                                    (time.time(),)).fetchall()
            return [r for r in map(readable_review, (row[0] for row in rows)) if r is not None]

        return await self._off_loop(lambda: self._guarded(read))

    async def poll(self) -> tuple[list[Review], list[tuple[str, Review | None]]]:
        """Reviews new since the last poll (for the allow-list), and the reviews whose
        record no sink has had yet with their delivery handles (one daemon: all of them;
        None for one that cannot be read)."""

        def read() -> tuple[list[Review], list[tuple[str, Review | None]]]:
            rows = self._db.execute("SELECT seq, review FROM reviews WHERE seq > ? ORDER BY seq",
                                    (self._last_seq,)).fetchall()
            if rows:
                self._last_seq = int(rows[-1][0])
            pending = self._db.execute("SELECT seq, review FROM reviews WHERE delivered = 0 "
                                       "ORDER BY seq LIMIT 100").fetchall()
            seen = [r for r in map(readable_review, (row[1] for row in rows)) if r is not None]
            return seen, [(str(r[0]), readable_review(r[1])) for r in pending]

        return await self._off_loop(lambda: self._guarded(read))

    async def delivered(self, handles: Sequence[str]) -> None:
        """The records of these reviews reached the sinks."""

        def mark() -> None:
            with self._db:
                self._db.executemany("UPDATE reviews SET delivered = 1 WHERE seq = ?",
                                     [(int(h),) for h in handles])

        await self._off_loop(lambda: self._guarded(mark))

    async def backlog(self) -> tuple[int, float | None]:
        """Items waiting, and when the oldest was queued."""
        return await self._off_loop(lambda: self._guarded(self.backlog_now))

    # -- the command -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[SqliteReviewStore]:
        """The store, closed after."""
        try:
            yield self
        finally:
            self.close()

    async def pending(self, limit: int) -> list[ReviewItem]:
        return await self._off_loop(lambda: self.pending_now(limit))

    async def get(self, item_id: str) -> ReviewItem:
        return await self._off_loop(lambda: self.get_now(item_id))

    async def resolve(self, item_id: str, decide: Callable[[ReviewItem], Review]) -> Review:
        return await self._off_loop(lambda: self.resolve_now(item_id, decide))

    def backlog_now(self) -> tuple[int, float | None]:
        row = self._db.execute("SELECT COUNT(*), MIN(queued_at) FROM queue").fetchone()
        return int(row[0]), None if row[1] is None else float(row[1])

    def pending_now(self, limit: int) -> list[ReviewItem]:
        """The oldest ``limit`` items waiting."""
        rows = self._guarded(lambda: self._db.execute(
            "SELECT id, queued_at, record FROM queue ORDER BY id LIMIT ?", (limit,)).fetchall())
        return [item_from_json(str(r[0]), float(r[1]), r[2]) for r in rows]

    def get_now(self, item_id: str) -> ReviewItem:
        """The waiting item ``item_id``; :class:`ReviewError` when there is none."""
        row = self._guarded(lambda: self._db.execute(
            "SELECT id, queued_at, record FROM queue WHERE id = ?", (_row_id(item_id),)
        ).fetchone())
        if row is None:
            raise ReviewError(self._not_waiting(item_id))
        return item_from_json(str(row[0]), float(row[1]), row[2])

    def resolve_now(self, item_id: str, decide: Callable[[ReviewItem], Review]) -> Review:
        """Take ``item_id`` off the queue and record ``decide(item)``, in one transaction:
        of two reviewers answering at once, the second is told the item is gone."""

        def take() -> Review:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT id, queued_at, record FROM queue WHERE id = ?",
                                       (_row_id(item_id),)).fetchone()
                if row is None:
                    raise ReviewError(self._not_waiting(item_id))
                review = decide(item_from_json(str(row[0]), float(row[1]), row[2]))
                self._db.execute("DELETE FROM queue WHERE id = ?", (row[0],))
                self._db.execute("INSERT INTO reviews (item_id, review, allow_until) "
                                 "VALUES (?, ?, ?)",
                                 (review.item.id, review.to_json(), review.allow_until))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return review

        return self._guarded(take)

    def _not_waiting(self, item_id: str) -> str:
        row = self._db.execute("SELECT review FROM reviews WHERE item_id = ?",
                               (item_id,)).fetchone()
        if row is None:
            return f"no item {item_id} in the review queue"
        done = review_from_json(row[0])
        return f"item {item_id} was already {done.outcome} by {done.by}"


def _row_id(item_id: str) -> int:
    # ASCII digits, at most 18: SQLite's integers are 64-bit (a longer id raised OverflowError,
    # not ReviewError), and int() would also take " 1", "1_0" or other scripts' digits.
    if not (item_id.isascii() and item_id.isdigit() and len(item_id) <= MAX_ID_DIGITS):
        raise ReviewError(f"no item {item_id!r} in the review queue (ids are numbers "
                          "here)")
    return int(item_id)

