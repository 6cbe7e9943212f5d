"""Which review store a config names, behind one interface."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol

from chatmod.config.sections import ReviewSection
from chatmod.errors import ConfigError
from chatmod.review.model import Review, ReviewItem
from chatmod.review.sqlite_store import REVIEW_DB_NAME, SqliteReviewStore


class ReviewStore(Protocol):
    """Where the queue and the reviews live (:mod:`.sqlite_store`, :mod:`.redis_store`)."""

    async def enqueue(self, records: Sequence[tuple[str, bytes]]) -> None: ...

    async def allowed(self) -> list[Review]: ...

    async def poll(self) -> tuple[list[Review], list[tuple[str, Review | None]]]: ...

    async def delivered(self, handles: Sequence[str]) -> None: ...

    async def backlog(self) -> tuple[int, float | None]: ...

    async def pending(self, limit: int) -> list[ReviewItem]: ...

    async def get(self, item_id: str) -> ReviewItem: ...

    async def resolve(self, item_id: str, decide: Callable[[ReviewItem], Review]) -> Review: ...


@contextlib.asynccontextmanager
async def open_store(section: ReviewSection, state_dir: Path | None, *, create: bool = True
                     ) -> AsyncIterator[ReviewStore]:
    """The store ``section`` names, open for the duration; :class:`ReviewError` when it
    cannot be (no state directory for SQLite, or no file there and not ``create``, Redis
    unreachable)."""
    if section.backend == "redis":
        from chatmod.review.redis_store import RedisReviewStore

        async with RedisReviewStore(section).connected() as redis_store:
            yield redis_store
        return
    if state_dir is None:
        raise ConfigError.at("review.backend", "the review queue needs a state directory: set "
                             "[daemon] state_dir (or $STATE_DIRECTORY), or [review] backend = "
                             "\"redis\"")
    sqlite = SqliteReviewStore(state_dir / REVIEW_DB_NAME, create=create)
    async with sqlite.connected() as sqlite_store:
        yield sqlite_store
