"""The daemon's own moderation statistics: per-minute counts of what it decided.

Counted by verdict (pass, flag, delete; any other verdict counts in the total only), as
Chatsight counts its suggestions, whatever engine gave it. Counting is a dict update on the
decision path; every ``flush_interval`` seconds (and at exit) the counts go to SQLite in
``STATE_DIR/stats.sqlite3`` from a worker thread. With no state directory they are kept in
memory for :data:`MEMORY_MINUTES` and lost at exit.

Served as ``GET /stats/moderation`` and ``POST /stats/moderation/search`` in Chatsight's
shapes (see :mod:`chatmod.chatsight.stats`), with no request limit.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import trio

from chatmod.chatsight.stats import Counts, Record, api_range, select_records
from chatmod.core.model import DELETE, FLAG, PASS, Decision

log = logging.getLogger("chatmod.stats")

STATS_FILE = "stats.sqlite3"
FLUSH_INTERVAL = 60.0
MEMORY_MINUTES = 7 * 1440
_COLUMN = {PASS: 0, FLAG: 1, DELETE: 2}  # then total at 3

_SCHEMA = """CREATE TABLE IF NOT EXISTS minutes (
    minute INTEGER PRIMARY KEY,  -- seconds since the epoch, a multiple of 60 (UTC)
    passed INTEGER NOT NULL, flagged INTEGER NOT NULL, deleted INTEGER NOT NULL,
    total INTEGER NOT NULL)"""
_ADD = """INSERT INTO minutes VALUES (?, ?, ?, ?, ?) ON CONFLICT(minute) DO UPDATE SET
    passed = passed + excluded.passed, flagged = flagged + excluded.flagged,
    deleted = deleted + excluded.deleted, total = total + excluded.total"""


def _counts(row: Sequence[int]) -> Counts:
    return Counts(passed=row[0], flagged=row[1], deleted=row[2], total=row[3])


def _add_rows(into: dict[int, list[int]], rows: Mapping[int, Sequence[int]]) -> None:
    """Add per-minute rows (passed, flagged, deleted, total) into ``into``."""
    for minute, row in rows.items():
        kept = into.setdefault(minute, [0, 0, 0, 0])
        for i, value in enumerate(row):
            kept[i] += value


def _minute(epoch_minute: int) -> datetime:
    return datetime.fromtimestamp(epoch_minute, UTC)


class DecisionStats:
    """Per-minute decision counts. Start :meth:`run` with ``nursery.start``."""

    def __init__(self, path: Path | None, *, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.path = path
        self.flush_interval = flush_interval
        self._pending: dict[int, list[int]] = {}  # epoch minute -> passed, flagged, deleted, total
        self._memory: dict[int, list[int]] = {}  # without a database: flushed minutes
        self._stored = Counts()  # lifetime counts already flushed
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()  # one database call at a time, whichever thread runs it
        self.flush_failures = 0

    def count(self, decisions: Sequence[Decision]) -> None:
        """Count a batch of decisions (called on the decision path: no I/O).

        The decisions of a batch share their ``ts`` (the same float): its minute's row is
        looked up once for them."""
        pending, column_of = self._pending, _COLUMN.get
        stamp: float | None = None
        row = [0, 0, 0, 0]  # replaced before use: the first decision's ts is not None
        for decision in decisions:
            if decision.ts is not stamp:
                stamp = decision.ts
                minute = int(stamp) // 60 * 60
                found = pending.get(minute)
                if found is None:
                    found = pending[minute] = [0, 0, 0, 0]
                row = found
            column = column_of(decision.verdict.action)
            if column is not None:
                row[column] += 1
            row[3] += 1

    def lifetime(self) -> Counts:
        return self._stored + sum((_counts(r) for r in self._pending.values()), Counts())

    async def search(self, start: datetime, end: datetime) -> list[Record]:
        """Records as Chatsight's search gives them: the range rounded to hours, minutes with
        traffic only, 1440 at most."""
        first, last = (int(t.timestamp()) for t in api_range(start, end))
        rows: dict[int, list[int]] = {}
        if self._db is not None:
            async with self._lock:
                found = await trio.to_thread.run_sync(self._select, first, last)
            rows.update((minute, list(counts)) for minute, *counts in found)
        else:
            rows.update((m, list(r)) for m, r in self._memory.items() if first <= m < last)
        _add_rows(rows, {m: r for m, r in self._pending.items() if first <= m < last})
        return select_records({_minute(m): _counts(r) for m, r in rows.items()}, start, end)

    def statistics(self) -> dict[str, float]:
        lifetime = self.lifetime()
        return {"passed": lifetime.passed, "flagged": lifetime.flagged,
                "deleted": lifetime.deleted, "total": lifetime.total,
                "flush_failures": self.flush_failures}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        if self.path is not None:
            self._db = await trio.to_thread.run_sync(self._open, self.path)
            row = await trio.to_thread.run_sync(self._sum)
            self._stored = _counts([value or 0 for value in row])
            log.info("moderation stats kept in %s", self.path)
        else:
            log.debug("moderation stats kept in memory only (set daemon.state_dir to keep them)")
        task_status.started()
        try:
            while True:
                await trio.sleep(self.flush_interval)
                await self.flush()
        finally:
            with trio.CancelScope(shield=True):
                await self.flush()
                if self._db is not None:
                    self._db.close()
                    self._db = None

    async def flush(self) -> None:
        """Move the counts so far to the database (or to memory)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        flushed = sum((_counts(r) for r in pending.values()), Counts())
        if self._db is None:
            _add_rows(self._memory, pending)
            for minute in sorted(self._memory)[:-MEMORY_MINUTES]:
                del self._memory[minute]
            self._stored += flushed
            return
        rows = [(minute, *row) for minute, row in pending.items()]
        try:
            async with self._lock:
                await trio.to_thread.run_sync(self._write, rows)
        except sqlite3.Error as exc:
            self.flush_failures += 1
            log.warning("moderation stats not saved (%s); kept for the next try", exc)
            _add_rows(self._pending, pending)  # merged with what came since
            return
        self._stored += flushed

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        return db

    def _sum(self) -> tuple[int, ...]:
        assert self._db is not None
        return tuple(self._db.execute(
            "SELECT SUM(passed), SUM(flagged), SUM(deleted), SUM(total) FROM minutes"
        ).fetchone())

    def _select(self, first: int, last: int) -> list[tuple[int, ...]]:
        assert self._db is not None
        return [tuple(row) for row in self._db.execute(
            "SELECT minute, passed, flagged, deleted, total FROM minutes "
            "WHERE minute >= ? AND minute < ? ORDER BY minute", (first, last))]

    def _write(self, rows: list[tuple[int, ...]]) -> None:
        assert self._db is not None
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany(_ADD, rows)
