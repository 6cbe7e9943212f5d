"""The webhook sink against a real HTTP receiver on loopback, and dead letters."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio

from chatmod.config.schema import Secret
from chatmod.config.sections import DeadLettersSection, PolicySection
from chatmod.core.dead_letters import DeadLetters
from chatmod.core.engine_chain import EngineChain
from chatmod.core.pipeline import Pipeline
from chatmod.plugins.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookConfig,
    WebhookSink,
    sign,
    verify_signature,
)
from chatmod.plugins.wordlist import WordlistConfig, WordlistEngine
from chatmod.policy.rules import Policy

from .helpers import ListSource, RecordingSink, messages
from .receiver import start_receiver

SECRET = "webhook-secret-0123456789"


def webhook(url: str, **options: Any) -> WebhookSink:
    config = WebhookConfig(url=url, secret=Secret("test", SECRET), **options)
    return WebhookSink("webhook", config)


async def run(sinks: list[Any], count: int, tmp_path: Path,
              dead_letter_path: Path | None = None) -> tuple[ListSource, Pipeline]:
    engine = WordlistEngine("wordlist", WordlistConfig(delete=("idiot",)))
    source = ListSource("test", messages(count))
    dead = DeadLetters(DeadLettersSection(
        path=str(dead_letter_path or tmp_path / "dead-letters.jsonl")))
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        Policy(PolicySection()), sinks, dead_letters=dead)
    with trio.fail_after(30):
        await pipeline.run()
    return source, pipeline


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "dead-letters.jsonl"
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() \
        else []


async def test_decisions_arrive_signed_and_once(nursery: trio.Nursery, tmp_path: Path) -> None:
    receiver = await start_receiver(nursery)
    source, _ = await run([webhook(receiver.url)], 30, tmp_path)
    bodies = [orjson.loads(r.body) for r in receiver.requests]
    assert Counter(b["id"] for b in bodies) == Counter(m.id for m in source.messages)
    for request in receiver.requests:
        assert verify_signature(SECRET.encode(), request.headers[TIMESTAMP_HEADER],
                                request.body, request.headers[SIGNATURE_HEADER])
        assert SECRET not in str(request.headers)
    assert len(source.acknowledged) == 30
    assert dead_letters(tmp_path) == []


async def test_5xx_is_retried_until_delivered(nursery: trio.Nursery, tmp_path: Path) -> None:
    receiver = await start_receiver(nursery, statuses=[503, 500])
    sink = webhook(receiver.url, retry_initial=0.01, concurrency=1)
    await run([sink], 1, tmp_path)
    assert len(receiver.requests) == 3
    assert sink.statistics() == {"delivered": 1, "retried": 2, "given_up": 0}


async def test_receiver_down_decisions_go_to_dead_letters_none_vanish(tmp_path: Path) -> None:
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = webhook(f"http://127.0.0.1:{port}/hook", retries=2, retry_initial=0.01)
    other = RecordingSink("other")
    source, pipeline = await run([sink, other], 10, tmp_path)
    letters = dead_letters(tmp_path)
    assert sorted(d["decision"]["id"] for d in letters) == sorted(m.id for m in source.messages)
    assert {d["sink"] for d in letters} == {"webhook"}
    assert all("ConnectError after 3 attempt(s)" in d["error"] for d in letters)
    assert len(other.decisions) == 10  # the other sink was not held back
    assert len(source.acknowledged) == 10  # dead-lettered counts as taken
    assert SECRET not in (tmp_path / "dead-letters.jsonl").read_text()
    assert pipeline.statistics()["dead_letters"] == 10


async def test_a_refusal_is_final(nursery: trio.Nursery, tmp_path: Path) -> None:
    receiver = await start_receiver(nursery, statuses=[400])
    source, _ = await run([webhook(receiver.url, retry_initial=0.01)], 1, tmp_path)
    assert len(receiver.requests) == 1
    assert [d["error"] for d in dead_letters(tmp_path)] == ["HTTP 400 after 1 attempt(s)"]
    assert len(source.acknowledged) == 1


async def test_without_dead_letters_nothing_is_acknowledged(tmp_path: Path) -> None:
    failing = RecordingSink("broken", fail=True)
    source, pipeline = await run([failing], 5, tmp_path,
                                 dead_letter_path=tmp_path / "no" / "such" / "dir.jsonl")
    assert source.acknowledged == []
    assert pipeline.statistics()["unacknowledged"] == 5
    assert pipeline.statistics()["dead_letters_failed"] == 5


def test_signature_checks() -> None:
    secret, body = SECRET.encode(), b'{"id": "m-1"}'
    signature = sign(secret, "1700000000", body)
    assert verify_signature(secret, "1700000000", body, signature, now=1700000100)
    assert not verify_signature(secret, "1700000000", body + b" ", signature, now=1700000100)
    assert not verify_signature(b"other", "1700000000", body, signature, now=1700000100)
    assert not verify_signature(secret, "1700000000", body, signature, now=1700009999)
    assert not verify_signature(secret, "17e8", body, signature, now=1700000100)


def test_config_requires_a_secret_and_an_http_url() -> None:
    from chatmod.errors import ConfigError

    with pytest.raises(ConfigError, match="secret: required"):
        WebhookConfig(url="http://127.0.0.1/hook")
    with pytest.raises(ConfigError, match="url: expected an http"):
        WebhookConfig(url="ftp://x", secret=Secret("t", SECRET))
