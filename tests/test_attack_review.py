"""Review ids an operator (or a script) can type: a ReviewError, never another exception."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatmod.config.sections import ReviewSection
from chatmod.errors import ReviewError
from chatmod.review.model import APPROVED, OVERTURNED, decide_review
from chatmod.review.redis_store import RedisReviewStore
from chatmod.review.sqlite_store import REVIEW_DB_NAME, SqliteReviewStore

from .servers import RedisServer

FUZZ_EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300
RECORD = b'{"id": "m-1", "text": "damn", "action": "flag"}'


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SqliteReviewStore:
    path: Path = tmp_path_factory.mktemp("review") / REVIEW_DB_NAME
    return SqliteReviewStore(path)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=30), st.integers(min_value=-(10**30), max_value=10**30).map(str)))
@example("99999999999999999999999")  # was OverflowError from sqlite3, a fatal error in the CLI
@example("9223372036854775808")
@example(" 1")
@example("\u0661")  # ARABIC-INDIC DIGIT ONE: int() takes it
def test_any_id_is_a_review_error_or_an_item(store: SqliteReviewStore, item_id: str) -> None:
    try:
        item = store.get_now(item_id)
    except ReviewError:
        return
    assert item.id == item_id


async def test_a_real_id_still_resolves_once(tmp_path: Path) -> None:
    store = SqliteReviewStore(tmp_path / REVIEW_DB_NAME)
    async with store.connected():
        await store.enqueue([("s\x1fm-1", RECORD)])
        item = (await store.pending(1))[0]
        assert item.id.isdigit()
        for spelled in (f" {item.id}", f"{item.id}_0", f"0{item.id}" * 10):
            with pytest.raises(ReviewError, match="no item"):
                await store.get(spelled)


        await store.resolve(item.id, lambda found: decide_review(found, APPROVED, "ann", "",
                                                                 3600.0))
        with pytest.raises(ReviewError, match="already approved by ann"):
            await store.resolve(item.id, lambda found: decide_review(found, OVERTURNED, "bob",
                                                                     "", 3600.0))


async def test_a_redis_item_is_named_by_its_exact_id_only(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        section = ReviewSection(enabled=True, backend="redis", redis_port=redis.port,
                                redis_key="test:exact")
        store = RedisReviewStore(section)
        with trio.fail_after(20):
            async with store.connected():
                await store.enqueue([("redis\x1fm-1", RECORD)])
                item = (await store.pending(1))[0]
                millisecond = item.id.partition("-")[0]
                # A millisecond alone was a range: it showed this item, and XDEL then took
                # "<ms>-0", which may be another item (or none).
                for spelled in (millisecond, "-", "+", f"{millisecond}-"):
                    with pytest.raises(ReviewError, match="no item"):
                        await store.get(spelled)
                with pytest.raises(ReviewError, match="no item"):
                    await store.resolve(millisecond, lambda found: decide_review(
                        found, APPROVED, "ann", "", 3600.0))
                assert [i.id for i in await store.pending(10)] == [item.id]
                assert (await store.get(item.id)).record["id"] == "m-1"
    finally:
        redis.stop()
