"""Strike stores: the count of an author's strikes in a channel within a window.

Every store is idempotent by message id: the first :meth:`StrikeStore.add_strike` for an id
counts its strikes and remembers the count; a later one for the same id (a redelivery) adds
nothing and returns the count remembered, with ``new`` false, so the caller repeats neither
the strike nor (once :meth:`StrikeStore.mark_applied` said so) its step. Both records expire
with the window. Times are passed in (``now``, in seconds) so that tests control them.

Backends: :class:`MemoryStrikeStore` (one process, lost at exit), :class:`SqliteStrikeStore`
(``<state_dir>/state.sqlite3``) and :class:`chatmod.state.redis_store.RedisStrikeStore`
(shared by the daemons of a consumer group).
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import trio

from chatmod.state.live import Exemption

STATE_FILE_NAME = "state.sqlite3"
# The memory store drops expired records once it holds this many message ids.
MEMORY_PRUNE_AT = 100_000


@dataclass(frozen=True, slots=True)
class StrikeOutcome:
    """What a strike did: the author's ``strikes`` in the channel within the window (as
    counted when the message was first seen); ``new`` false for a message seen before, and
    ``applied`` true once its step reached the sinks."""

    strikes: int
    new: bool = True
    applied: bool = False


class StrikeStore(ABC):
    """Where strikes are counted (see the module docstring), and where the live rules
    (exemptions, channel switches: :mod:`chatmod.state.live`) are kept."""

    name = "store"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the store's connection open until cancelled (default: nothing to hold)."""
        task_status.started()
        await trio.sleep_forever()

    @abstractmethod
    async def add_strike(self, channel: str, author: str, message_id: str, weight: int,
                         now: float, window: float) -> StrikeOutcome:
        """Count ``weight`` strikes for ``message_id`` unless it was counted before."""

    @abstractmethod
    async def mark_applied(self, message_ids: Sequence[str], now: float, window: float) -> None:
        """The steps of these messages reached the sinks: a redelivery does not repeat them."""

    @abstractmethod
    async def count(self, channel: str, author: str, now: float, window: float) -> int:
        """The author's strikes in the channel within the window."""

    @abstractmethod
    async def put_exemption(self, exemption: Exemption) -> None:
        """Add or replace the author's exemption in its channel."""

    @abstractmethod
    async def remove_exemption(self, author: str, channel: str) -> bool:
        """Remove it; False when there was none."""

    @abstractmethod
    async def exemptions(self, now: float) -> list[Exemption]:
        """Every exemption still live at ``now`` (expired ones are dropped)."""

    @abstractmethod
    async def set_switches(self, channel: str, switches: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``switches`` into the channel's; the channel's switches after."""

    @abstractmethod
    async def channel_switches(self) -> dict[str, dict[str, Any]]:
        """Every channel's switches."""

    @abstractmethod
    async def channels_of(self, author: str) -> list[str]:
        """The channels where the author may have strikes (for ``chatmod strikes show``)."""

    @abstractmethod
    async def clear(self, author: str, channel: str | None = None) -> int:
        """Forget the author's strikes (in one channel, or all); how many were forgotten."""


class MemoryStrikeStore(StrikeStore):
    """Strikes in this process only."""

    name = "memory"

    def __init__(self) -> None:
        # (channel, author) -> [(time, weight, message id)], oldest first
        self._strikes: dict[tuple[str, str], list[tuple[float, int, str]]] = {}
        # message id -> [strikes, applied, expires at]
        self._seen: dict[str, tuple[int, bool, float]] = {}
        self._exemptions: dict[tuple[str, str], Exemption] = {}
        self._switches: dict[str, dict[str, Any]] = {}

    async def put_exemption(self, exemption: Exemption) -> None:
        self._exemptions[(exemption.author, exemption.channel)] = exemption

    async def remove_exemption(self, author: str, channel: str) -> bool:
        return self._exemptions.pop((author, channel), None) is not None

    async def exemptions(self, now: float) -> list[Exemption]:
        self._exemptions = {k: e for k, e in self._exemptions.items() if e.live(now)}
        return list(self._exemptions.values())

    async def set_switches(self, channel: str, switches: Mapping[str, Any]) -> dict[str, Any]:
        merged = self._switches[channel] = {**self._switches.get(channel, {}), **switches}
        return dict(merged)

    async def channel_switches(self) -> dict[str, dict[str, Any]]:
        return {channel: dict(values) for channel, values in self._switches.items()}

    def _live(self, key: tuple[str, str], now: float, window: float) -> list[tuple[float, int,
                                                                                     str]]:
        live = [s for s in self._strikes.get(key, []) if s[0] > now - window]
        if live:
            self._strikes[key] = live
        else:
            self._strikes.pop(key, None)
        return live

    async def add_strike(self, channel: str, author: str, message_id: str, weight: int,
                         now: float, window: float) -> StrikeOutcome:
        seen = self._seen.get(message_id)
        if seen is not None and seen[2] > now:
            return StrikeOutcome(seen[0], new=False, applied=seen[1])
        if len(self._seen) >= MEMORY_PRUNE_AT:
            self._seen = {k: v for k, v in self._seen.items() if v[2] > now}
        live = self._live((channel, author), now, window)
        live.append((now, weight, message_id))
        self._strikes[(channel, author)] = live
        strikes = sum(s[1] for s in live)
        self._seen[message_id] = (strikes, False, now + window)
        return StrikeOutcome(strikes)

    async def mark_applied(self, message_ids: Sequence[str], now: float, window: float) -> None:
        for message_id in message_ids:
            seen = self._seen.get(message_id)
            if seen is not None:
                self._seen[message_id] = (seen[0], True, seen[2])

    async def count(self, channel: str, author: str, now: float, window: float) -> int:
        return sum(s[1] for s in self._live((channel, author), now, window))

    async def channels_of(self, author: str) -> list[str]:
        return sorted(channel for channel, who in self._strikes if who == author)

    async def clear(self, author: str, channel: str | None = None) -> int:
        keys = [k for k in self._strikes if k[1] == author and channel in (None, k[0])]
        return sum(sum(s[1] for s in self._strikes.pop(k)) for k in keys)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS strikes (
    message_id TEXT PRIMARY KEY, channel TEXT NOT NULL, author TEXT NOT NULL,
    at REAL NOT NULL, weight INTEGER NOT NULL, strikes INTEGER NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS strikes_by_author ON strikes (channel, author, at);
CREATE TABLE IF NOT EXISTS exemptions (
    author TEXT NOT NULL, channel TEXT NOT NULL, record BLOB NOT NULL,
    PRIMARY KEY (author, channel));
CREATE TABLE IF NOT EXISTS channel_switches (channel TEXT PRIMARY KEY, record BLOB NOT NULL);
"""


class SqliteStrikeStore(StrikeStore):
    """Strikes in ``state.sqlite3``: one daemon's, kept across restarts. Each call is one
    transaction in a worker thread (SQLite blocks)."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        path.chmod(0o600)
        self._lock = threading.Lock()

    def _transaction(self, body: str, *params: object) -> list[tuple[object, ...]]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(body, params).fetchall()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return rows

    def _add(self, channel: str, author: str, message_id: str, weight: int, now: float,
             window: float) -> StrikeOutcome:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT strikes, applied, at FROM strikes WHERE message_id = ?",
                                 (message_id,)).fetchone()
                if row is not None and row[2] > now - window:
                    db.execute("COMMIT")
                    return StrikeOutcome(int(row[0]), new=False, applied=bool(row[1]))
                db.execute("DELETE FROM strikes WHERE at <= ?", (now - window,))
                (before,) = db.execute(
                    "SELECT COALESCE(SUM(weight), 0) FROM strikes WHERE channel = ? AND "
                    "author = ?", (channel, author)).fetchone()
                strikes = int(before) + weight
                db.execute("INSERT OR REPLACE INTO strikes VALUES (?, ?, ?, ?, ?, ?, 0)",
                           (message_id, channel, author, now, weight, strikes))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return StrikeOutcome(strikes)

    async def add_strike(self, channel: str, author: str, message_id: str, weight: int,
                         now: float, window: float) -> StrikeOutcome:
        return await trio.to_thread.run_sync(
            self._add, channel, author, message_id, weight, now, window)

    async def mark_applied(self, message_ids: Sequence[str], now: float, window: float) -> None:
        def mark() -> None:
            with self._lock:
                self._db.executemany("UPDATE strikes SET applied = 1 WHERE message_id = ?",
                                     [(m,) for m in message_ids])
        await trio.to_thread.run_sync(mark)

    async def count(self, channel: str, author: str, now: float, window: float) -> int:
        rows = await trio.to_thread.run_sync(
            self._transaction, "SELECT COALESCE(SUM(weight), 0) FROM strikes WHERE channel = ? "
            "AND author = ? AND at > ?", channel, author, now - window)
        return int(str(rows[0][0]))

    def _clear(self, author: str, channel: str | None) -> int:
        # The rows stay (a redelivered message is still recognised), their weight goes.
        where = "author = ?" + ("" if channel is None else " AND channel = ?")
        params = (author,) if channel is None else (author, channel)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                (cleared,) = db.execute(
                    f"SELECT COALESCE(SUM(weight), 0) FROM strikes WHERE {where}",
                    params).fetchone()
                db.execute(f"UPDATE strikes SET weight = 0 WHERE {where}", params)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return int(cleared)

    async def put_exemption(self, exemption: Exemption) -> None:
        await trio.to_thread.run_sync(
            self._transaction, "INSERT OR REPLACE INTO exemptions VALUES (?, ?, ?)",
            exemption.author, exemption.channel, orjson.dumps(exemption.as_record()))

    async def remove_exemption(self, author: str, channel: str) -> bool:
        rows = await trio.to_thread.run_sync(
            self._transaction, "DELETE FROM exemptions WHERE author = ? AND channel = ? "
            "RETURNING author", author, channel)
        return bool(rows)

    async def exemptions(self, now: float) -> list[Exemption]:
        rows = await trio.to_thread.run_sync(self._transaction,
                                             "SELECT record FROM exemptions")
        found = [Exemption.from_record(orjson.loads(_blob(row[0]))) for row in rows]
        return [e for e in found if e.live(now)]

    async def set_switches(self, channel: str, switches: Mapping[str, Any]) -> dict[str, Any]:
        current = (await self.channel_switches()).get(channel, {})
        merged = {**current, **switches}
        await trio.to_thread.run_sync(
            self._transaction, "INSERT OR REPLACE INTO channel_switches VALUES (?, ?)",
            channel, orjson.dumps(merged))
        return merged

    async def channel_switches(self) -> dict[str, dict[str, Any]]:
        rows = await trio.to_thread.run_sync(self._transaction,
                                             "SELECT channel, record FROM channel_switches")
        return {str(row[0]): orjson.loads(_blob(row[1])) for row in rows}

    async def channels_of(self, author: str) -> list[str]:
        rows = await trio.to_thread.run_sync(
            self._transaction, "SELECT DISTINCT channel FROM strikes WHERE author = ? AND "
            "weight > 0 ORDER BY channel", author)
        return [str(row[0]) for row in rows]

    async def clear(self, author: str, channel: str | None = None) -> int:
        return await trio.to_thread.run_sync(self._clear, author, channel)

    def close(self) -> None:
        """Close the database (tests; the daemon keeps it open until it exits)."""
        with self._lock:
            self._db.close()


def _blob(value: object) -> bytes:
    # What this module wrote as JSON: SQLite hands it back as bytes (or text, if edited).
    if isinstance(value, bytes):
        return value
    return str(value).encode()
