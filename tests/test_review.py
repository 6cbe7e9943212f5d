"""The review queue: SQLite and Redis stores, the allow-list an overturn feeds, the review
record to the sinks, the audit line, the metrics; against real daemons and a real Redis."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from chatmod.config.sections import ReviewSection
from chatmod.core.cache import Lead, VerdictCache
from chatmod.core.engine_chain import EngineChain
from chatmod.core.model import Message, Verdict
from chatmod.errors import ReviewError
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.review.allow import ENGINE_ALLOW_LIST, ROUTE_ALLOW, AllowList
from chatmod.review.model import APPROVED, OVERTURNED, ReviewItem, decide_review, review_from_json
from chatmod.review.redis_store import RedisReviewStore
from chatmod.review.service import ReviewQueue
from chatmod.review.sqlite_store import REVIEW_DB_NAME, SqliteReviewStore
from chatmod.state.audit import AuditLog

from .helpers import Daemon, run_chatmod
from .servers import RedisServer, SandboxProcess
from .test_metrics import http_port, promtool_check, samples, scrape

SANDBOX_KEY = "c.review-test.key-0123456789"
ENV = {"CHATSIGHT_API_KEY": SANDBOX_KEY}


def message(text: str) -> Message:
    return Message(id="m", text=text, source="test")


def test_the_allow_list_matches_normalised_text_until_it_expires() -> None:
    now = [1000.0]
    allowed = AllowList(clock=lambda: now[0])
    allowed.allow("Damn  IT", until=1060.0)
    verdict = allowed.verdict_for(message("damn it"))
    assert verdict is not None
    assert (verdict.action, verdict.engine, verdict.route) == ("pass", ENGINE_ALLOW_LIST,
                                                                ROUTE_ALLOW)
    assert allowed.verdict_for(message("damn it!")) is None  # exact text only
    now[0] = 1060.0
    assert allowed.verdict_for(message("damn it")) is None  # expired
    assert len(allowed) == 0
    allowed.allow("already over", until=1000.0)
    assert len(allowed) == 0


def test_the_allow_list_stays_bounded() -> None:
    allowed = AllowList(clock=lambda: 0.0, max_entries=3)
    for i in range(5):
        allowed.allow(f"text {i}", until=100.0 + i)
    assert len(allowed) == 3
    assert allowed.verdict_for(message("text 4")) is not None
    assert allowed.verdict_for(message("text 0")) is None  # the one expiring first went


def test_a_review_survives_the_store_and_its_record_says_to_lift() -> None:
    item = ReviewItem("7", 10.0, {"id": "m-1", "text": "damn it", "action": "flag",
                                  "channel": "#a", "author": "bob"})
    review = decide_review(item, OVERTURNED, "ann", "banter", allow_ttl=60.0, now=100.0)
    assert review.allow_until == 160.0
    assert review_from_json(review.to_json()) == review
    record = review.record()
    assert record["type"] == "review"
    assert record["lift"] is True
    assert (record["message_id"], record["channel"], record["author"]) == ("m-1", "#a", "bob")
    assert "text" not in review.record(include_text=False)
    approved = decide_review(item, APPROVED, "ann", "", allow_ttl=60.0, now=100.0)
    assert approved.allow_until is None
    assert approved.record()["lift"] is False
    with pytest.raises(ReviewError):
        decide_review(item, "maybe", "ann", "", 60.0)
    with pytest.raises(ReviewError):
        review_from_json(b'{"item": 1}')


async def test_sqlite_one_review_per_item_and_the_feed_sees_it_once(tmp_path: Path) -> None:
    store = SqliteReviewStore(tmp_path / REVIEW_DB_NAME)
    async with store.connected():
        await store.enqueue([("s\x1fm-1", b'{"id": "m-1", "text": "damn", "action": "flag"}'),
                             ("s\x1fm-2", b'{"id": "m-2", "text": "hm", "action": "flag"}')])
        assert await store.allowed() == []
        assert [i.record["id"] for i in await store.pending(10)] == ["m-1", "m-2"]
        size, oldest = await store.backlog()
        assert size == 2
        assert oldest is not None
        assert oldest <= time.time()
        first = (await store.pending(1))[0]
        review = await store.resolve(first.id, lambda item: decide_review(
            item, OVERTURNED, "ann", "ok", 60.0))
        with pytest.raises(ReviewError, match="already overturned by ann"):
            await store.resolve(first.id, lambda item: decide_review(item, APPROVED, "bob",
                                                                     "", 60.0))
        with pytest.raises(ReviewError, match="no item 99"):
            await store.get("99")
        with pytest.raises(ReviewError, match="ids are numbers"):
            await store.get("abc")
        seen, to_deliver = await store.poll()
        assert seen == [review]
        assert [r for _, r in to_deliver] == [review]
        await store.delivered([handle for handle, _ in to_deliver])
        assert await store.poll() == ([], [])
        assert (await store.backlog())[0] == 1
    # A decision that fails while deciding rolls back: the item stays queued.
    again = SqliteReviewStore(tmp_path / REVIEW_DB_NAME)
    async with again.connected():

        def refuse(item: ReviewItem) -> Any:
            raise OSError("audit log not writable")

        second = (await again.pending(1))[0]
        with pytest.raises(OSError, match="audit log not writable"):
            await again.resolve(second.id, refuse)
        assert [i.id for i in await again.pending(10)] == [second.id]
        assert [r.item.text for r in await again.allowed()] == ["damn"]


async def test_an_unreadable_entry_neither_stalls_the_feed_nor_hides_the_queue(
        tmp_path: Path) -> None:
    db = tmp_path / REVIEW_DB_NAME
    store = SqliteReviewStore(db)
    async with store.connected():
        await store.allowed()
        with sqlite3.connect(db) as connection:
            connection.execute("INSERT INTO reviews (item_id, review) VALUES ('x', 'garbage')")
            connection.execute("INSERT INTO queue (queued_at, record) VALUES (1.0, '[1]')")
        await store.enqueue([("k", b'{"id": "m-1", "text": "fine", "action": "flag"}')])
        broken, good = await store.pending(10)
        assert broken.record["unreadable"]
        assert broken.text == ""
        review = await store.resolve(good.id, lambda item: decide_review(
            item, OVERTURNED, "ann", "", 60.0))
        seen, to_deliver = await store.poll()
        assert seen == [review]
        assert [r for _, r in to_deliver] == [None, review]
        await store.delivered([handle for handle, _ in to_deliver])
        assert await store.poll() == ([], [])
        # The unreadable item can be answered, which clears it.
        await store.resolve(broken.id, lambda item: decide_review(item, APPROVED, "ann", "",
                                                                  60.0))
        assert await store.pending(10) == []


def daemon_config(tmp: Path, engine_table: str, review: str, http: bool = False) -> Path:
    config = tmp / "daemon.toml"
    config.write_text(f"""
[daemon]
state_dir = "{tmp / 'state'}"
[review]
enabled = true
{review}
[http]
enabled = {'true' if http else 'false'}
port = 0
[cache]
enabled = false
[engine]
primary = "chatsight"
fallback = "flag"
[engines.chatsight]
{engine_table}
[[sources]]
type = "stdin"
format = "jsonl"
[[sinks]]
type = "jsonl"
path = "{tmp / 'decisions.jsonl'}"
""")
    return config


def engine_requests(sandbox_log: str) -> int:
    """Texts the sandbox was asked to moderate, from the counters it prints as it stops."""
    counters = dict(part.rsplit(" ", 1) for part in
                    sandbox_log.split("stopped; ", 1)[1].strip().split(", "))
    return int(counters.get("ws_requests", 0)) + int(counters.get("http_moderated", 0))


def queued_ids(db: Path) -> list[str]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return [orjson.loads(r[0])["id"] for r in connection.execute("SELECT record FROM queue")]


def reviews_in(daemon: Daemon) -> list[dict[str, Any]]:
    return [r for r in daemon.decisions() if r.get("type") == "review"]


@pytest.mark.slow
def test_flag_queued_overturned_allowed_without_an_engine_call(tmp_path: Path) -> None:
    with SandboxProcess(tmp_path, SANDBOX_KEY) as sandbox:
        config = daemon_config(tmp_path, sandbox.engine_table(), "", http=True)
        with Daemon(tmp_path, config, env=ENV) as daemon:
            port = http_port(daemon)
            daemon.send('{"id": "m-1", "text": "damn it", "channel": "#lobby", "author": "bob"}',
                        '{"id": "m-2", "text": "hello", "channel": "#lobby"}')
            daemon.wait_for(lambda: any(d.get("id") == "m-1" for d in daemon.decisions()),
                            "m-1 decided")
            decided_at = time.monotonic()
            db = tmp_path / "state" / REVIEW_DB_NAME
            daemon.wait_for(lambda: queued_ids(db) == ["m-1"], "m-1 in the queue")
            assert time.monotonic() - decided_at < 1.0
            listed = run_chatmod("review", "list", "--json", "-c", str(config))
            assert listed.returncode == 0, listed.stderr
            items = [orjson.loads(line) for line in listed.stdout.splitlines()]
            assert [(i["action"], i["text"], i["channel"]) for i in items] == [
                ("flag", "damn it", "#lobby")]
            assert b"1 item(s) waiting" in listed.stderr

            overturned = run_chatmod("review", "overturn", items[0]["id"], "--note",
                                     "banter among friends", "--by", "ann", "-c", str(config))
            assert overturned.returncode == 0, overturned.stderr
            daemon.wait_for(lambda: len(reviews_in(daemon)) == 1, "the review record")
            record = reviews_in(daemon)[0]
            assert {k: record[k] for k in ("outcome", "message_id", "channel", "author", "by",
                                           "note", "lift", "action")} == {
                "outcome": "overturned", "message_id": "m-1", "channel": "#lobby",
                "author": "bob", "by": "ann", "note": "banter among friends", "lift": True,
                "action": "flag"}
            audit = AuditLog(tmp_path / "state").read()
            assert [(a["who"], a["what"], a["why"], a["message_id"]) for a in audit] == [
                ("ann", "review.overturn", "banter among friends", "m-1")]
            again = run_chatmod("review", "approve", items[0]["id"], "-c", str(config))
            assert again.returncode == 1
            assert b"already overturned by ann" in again.stderr

            # The same text (case and spacing aside) is passed by the allow-list.
            daemon.send('{"id": "m-3", "text": "DAMN   it", "channel": "#lobby"}')
            daemon.wait_for(lambda: any(d.get("id") == "m-3" for d in daemon.decisions()),
                            "m-3 decided")
            m3 = next(d for d in daemon.decisions() if d.get("id") == "m-3")
            assert (m3["verdict"], m3["action"], m3["engine"], m3["route"]) == (
                "pass", "none", "allow-list", "allow")
            assert queued_ids(db) == []
            metrics = scrape(port)
            found = samples(metrics)
            assert found[("chatmod_reviews_total", (("outcome", "overturned"),))] == 1
            assert found[("chatmod_reviews_total", (("outcome", "approved"),))] == 0
            assert found[("chatmod_review_queue_size", ())] == 0
            assert found[("chatmod_review_queued_total", ())] == 1
            assert found[("chatmod_allow_list_hits_total", ())] == 1
            assert promtool_check(metrics) == ""
            assert daemon.finish() == 0
        # m-1 and m-2 asked the sandbox; m-3 did not.
        assert engine_requests(sandbox.stop()) == 2


@pytest.mark.slow
def test_queue_metrics_show_the_size_and_age_of_the_oldest(tmp_path: Path) -> None:
    with SandboxProcess(tmp_path, SANDBOX_KEY) as sandbox:
        config = daemon_config(tmp_path, sandbox.engine_table(), 'actions = ["flag", "delete"]',
                               http=True)
        with Daemon(tmp_path, config, env=ENV) as daemon:
            port = http_port(daemon)
            daemon.send('{"id": "m-1", "text": "damn"}', '{"id": "m-2", "text": "you idiot"}',
                        '{"id": "m-3", "text": "fine"}')
            daemon.wait_for(lambda: len(queued_ids(tmp_path / "state" / REVIEW_DB_NAME)) == 2,
                            "two items queued")

            def queue_gauges() -> tuple[float, float]:
                found = samples(scrape(port))
                return (found[("chatmod_review_queue_size", ())],
                        found[("chatmod_review_oldest_age_seconds", ())])

            daemon.wait_for(lambda: queue_gauges()[0] == 2, "queue size 2 in /metrics")
            first_age = queue_gauges()[1]
            daemon.wait_for(lambda: queue_gauges()[1] > first_age, "the oldest item ageing")
            assert daemon.finish() == 0


def redis_config(tmp: Path, name: str, engine_table: str, port: int) -> Path:
    directory = tmp / name
    directory.mkdir()
    config = daemon_config(directory, engine_table, f"""backend = "redis"
redis_port = {port}
redis_key = "test:review"
redis_consumer = "{name}"
""")
    return config


@pytest.mark.slow
def test_two_daemons_share_one_redis_queue(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with SandboxProcess(tmp_path, SANDBOX_KEY) as sandbox:
            table = sandbox.engine_table()
            one = redis_config(tmp_path, "one", table, redis.port)
            two = redis_config(tmp_path, "two", table, redis.port)
            with Daemon(tmp_path / "one", one, env=ENV) as first, \
                    Daemon(tmp_path / "two", two, env=ENV) as second:
                first.wait_for_log("review queue (redis)")
                second.wait_for_log("review queue (redis)")
                first.send('{"id": "a-1", "text": "damn it", "channel": "#one"}')
                second.send('{"id": "b-1", "text": "shut up", "channel": "#two"}')

                def listed(config: Path) -> list[dict[str, Any]]:
                    done = run_chatmod("review", "list", "--json", "-c", str(config))
                    assert done.returncode == 0, done.stderr
                    return [orjson.loads(line) for line in done.stdout.splitlines()]

                first.wait_for(lambda: len(listed(one)) == 2, "both items in one queue")
                items = listed(two)
                assert sorted(i["text"] for i in items) == ["damn it", "shut up"]
                assert listed(one) == items
                target = next(i for i in items if i["text"] == "shut up")
                done = run_chatmod("review", "overturn", target["id"], "--note", "quoting",
                                   "-c", str(one))
                assert done.returncode == 0, done.stderr
                # Gone from the queue whichever daemon's config asks.
                assert [i["text"] for i in listed(two)] == ["damn it"]
                assert [i["text"] for i in listed(one)] == ["damn it"]
                again = run_chatmod("review", "approve", target["id"], "-c", str(two))
                assert again.returncode == 1
                assert b"already reviewed, or never queued" in again.stderr

                # One review record across the group; both daemons allow the text.
                first.wait_for(lambda: len(reviews_in(first)) + len(reviews_in(second)) == 1,
                               "one review record")
                first.send('{"id": "a-2", "text": "Shut up", "channel": "#one"}')
                second.send('{"id": "b-2", "text": "shut  UP", "channel": "#two"}')
                for daemon, wanted in ((first, "a-2"), (second, "b-2")):
                    daemon.wait_for(lambda d=daemon, w=wanted: any(  # type: ignore[misc]
                        x.get("id") == w for x in d.decisions()), f"{wanted} decided")
                    decided = next(x for x in daemon.decisions() if x.get("id") == wanted)
                    assert (decided["action"], decided["route"]) == ("none", "allow")
                assert first.finish() == 0
                assert second.finish() == 0
                assert len(reviews_in(first)) + len(reviews_in(second)) == 1
            assert engine_requests(sandbox.stop()) == 2
    finally:
        redis.stop()


# coredis (6.x) leaves the memory streams of a connection that failed to open unclosed; the
# warning comes from the library, when they are collected.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*MemoryObject:pytest.PytestUnraisableExceptionWarning")
async def test_a_redis_store_that_cannot_be_reached_is_a_review_error() -> None:
    from chatmod.review.store import open_store
    from tests.servers import free_port

    section = ReviewSection(enabled=True, backend="redis", redis_port=free_port())
    with trio.fail_after(20), pytest.raises(ReviewError, match="review store redis"):
        async with open_store(section, None) as store:
            await store.pending(10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_a_dead_daemons_review_records_are_taken_over(redis: RedisServer) -> None:
    section = ReviewSection(enabled=True, backend="redis", redis_port=redis.port,
                            redis_key="test:claim", redis_consumer="ghost")
    ghost = RedisReviewStore(section)
    async with ghost.connected():
        await ghost.allowed()
        await ghost.enqueue([("k", b'{"id": "m-1", "text": "damn", "action": "flag"}')])
        item = (await ghost.pending(1))[0]
        review = await ghost.resolve(item.id, lambda i: decide_review(i, OVERTURNED, "ann",
                                                                      "", 60.0))
        _seen, taken = await ghost.poll()
        assert [r for _, r in taken] == [review]
        # ... and the ghost dies before its sinks had the record: never acknowledged.
    heir = RedisReviewStore(replace(section, redis_consumer="heir"))
    heir.claim_min_idle = 0.05
    async with heir.connected():
        assert [r.item.text for r in await heir.allowed()] == ["damn"]
        with trio.fail_after(10):
            while True:
                _seen, taken = await heir.poll()
                if taken:
                    break
                heir._next_claim = 0.0  # look again now, not in CLAIM_INTERVAL
                await trio.sleep(0.05)
        assert [r for _, r in taken] == [review]
        await heir.delivered([handle for handle, _ in taken])
        heir._next_claim = 0.0
        await trio.sleep(0.1)
        assert await heir.poll() == ([], [])


def wordlist_config(tmp: Path, out: Path) -> str:
    return f"""
[daemon]
state_dir = "{tmp / 'state'}"
[review]
enabled = true
[engine]
primary = "wordlist"
[engines.wordlist]
flag = ["damn"]
[[sources]]
type = "stdin"
format = "jsonl"
[[sinks]]
type = "jsonl"
path = "{out}"
"""


@pytest.mark.slow
def test_the_queue_keeps_its_sink_when_a_reload_replaces_the_sinks(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(wordlist_config(tmp_path, tmp_path / "decisions.jsonl"))
    db = tmp_path / "state" / REVIEW_DB_NAME
    with Daemon(tmp_path, config) as daemon:
        daemon.wait_for_log("review queue (sqlite)")
        daemon.send('{"id": "m-1", "text": "damn"}')
        daemon.wait_for(lambda: queued_ids(db) == ["m-1"], "m-1 queued")
        config.write_text(wordlist_config(tmp_path, tmp_path / "second.jsonl"))
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log("config reloaded (sinks")
        daemon.send('{"id": "m-2", "text": "damn again"}')
        daemon.wait_for(lambda: queued_ids(db) == ["m-1", "m-2"], "m-2 queued after the reload")
        assert daemon.finish() == 0


class NeverAsked(WordlistEngine):
    async def moderate(self, message: Message) -> Verdict:
        raise AssertionError(f"engine asked for {message.text!r}")


async def test_the_chain_asks_the_allow_list_before_the_cache_and_the_engines() -> None:
    allowed = AllowList()
    allowed.allow("damn it", until=time.time() + 60)
    chain = EngineChain([NeverAsked("wordlist", WordlistConfig(flag=("damn",)))], "flag", 1.0,
                        cache=VerdictCache(10, 60.0))
    chain.prejudge = allowed.verdict_for
    awaited = await chain.moderate(message("Damn  it"))  # the awaited path
    streamed = chain.claim(message("damn it"), lambda outcome: None)  # the streaming path
    assert awaited.route == ROUTE_ALLOW
    assert isinstance(streamed, Verdict)
    assert streamed.route == ROUTE_ALLOW
    assert allowed.hits == 2
    # Not allowed: on to the cache, where this message leads (it asks the engine).
    assert isinstance(chain.claim(message("hello"), lambda outcome: None), Lead)


async def test_a_review_record_a_sink_refused_is_handed_over_again(tmp_path: Path) -> None:
    attempts: list[str] = []

    async def deliver(record: Mapping[str, Any]) -> bool:
        attempts.append(record["review_id"])
        return len(attempts) > 1  # a sink fails the first time only

    queue = ReviewQueue(ReviewSection(enabled=True), tmp_path, deliver)
    store = SqliteReviewStore(tmp_path / REVIEW_DB_NAME)
    async with store.connected():
        await store.allowed()
        await store.enqueue([("k", b'{"id": "m-1", "text": "damn", "action": "flag"}')])
        item = (await store.pending(1))[0]
        await store.resolve(item.id, lambda i: decide_review(i, OVERTURNED, "ann", "", 60.0))
        await queue._poll(store)
        assert attempts == [item.id]
        assert queue.delivery_failures == 1
        assert queue.allow_list.verdict_for(message("damn")) is not None
        await queue._poll(store)  # within the backoff: not tried again yet
        assert attempts == [item.id]
        with trio.fail_after(10):
            while len(attempts) < 2:
                await trio.sleep(0.05)
                await queue._poll(store)
        assert attempts == [item.id, item.id]
        assert queue.records_delivered == 1
        assert await store.poll() == ([], [])  # marked delivered


def test_the_command_does_not_create_the_queue(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[review]\nenabled = true\n')
    listed = run_chatmod("review", "list", "-c", str(config))
    assert listed.returncode == 1
    assert b"no review queue at" in listed.stderr
    assert not (tmp_path / "state").exists()


RECORD = b'{"id": "m-1", "text": "damn", "action": "flag"}'


async def test_a_redelivered_message_is_queued_once_in_sqlite(tmp_path: Path) -> None:
    store = SqliteReviewStore(tmp_path / REVIEW_DB_NAME)
    async with store.connected():
        await store.enqueue([("redis\x1fm-1", RECORD), ("redis\x1fm-1", RECORD)])
        await store.enqueue([("redis\x1fm-1", RECORD), ("stdin\x1fm-1", RECORD)])
        assert len(await store.pending(10)) == 2  # one per source and id


async def test_a_redelivered_message_is_queued_once_in_redis(redis: RedisServer) -> None:
    section = ReviewSection(enabled=True, backend="redis", redis_port=redis.port,
                            redis_key="test:once")
    first, second = RedisReviewStore(section), RedisReviewStore(section)
    async with first.connected(), second.connected():
        await first.enqueue([("redis\x1fm-1", RECORD), ("redis\x1fm-1", RECORD)])
        await second.enqueue([("redis\x1fm-1", RECORD), ("redis\x1fm-2", RECORD)])
        assert len(await first.pending(10)) == 2
