"""Keyword-alert webhooks: the valid one passes; hundreds of generated bad ones do not."""

from __future__ import annotations

import base64
import random

import orjson
import pytest

from chatmod.chatsight.webhook import ReplayGuard, sign, verify
from chatmod.errors import WebhookRejected

SECRET = b"shared-secret-from-addons-secrets"
NOW = 1_800_000_000.0


def body(time_ms: int, signature: str | None = None, **changes: object) -> bytes:
    envelope: dict[str, object] = {
        "sender": "chatsight-webhooks", "addon": "keywordAlert",
        "payload": {"keywordDetected": "pizza", "metadata": {"room": "#5"},
                    "fullText": "Is the pizza ready?"},
        "time": time_ms, "hmac": sign(SECRET, time_ms) if signature is None else signature,
    }
    envelope.update(changes)
    return orjson.dumps(envelope)


def test_the_documented_alert_verifies_once() -> None:
    guard = ReplayGuard(window=60)
    t = int(NOW * 1000)
    alert = verify(body(t), SECRET, NOW, guard)
    assert (alert.keyword, alert.metadata, alert.text) == ("pizza", {"room": "#5"},
                                                          "Is the pizza ready?")
    with pytest.raises(WebhookRejected, match="replayed") as caught:
        verify(body(t), SECRET, NOW + 1, guard)
    assert caught.value.status == 401
    without_text = verify(body(t + 1, payload={"keywordDetected": "pizza", "metadata": {},
                                               "fullText": False}), SECRET, NOW, guard)
    assert without_text.text is None


def test_alerts_for_one_message_share_a_signature_and_are_all_accepted() -> None:
    # Chatsight signs only `time`: the alerts for one moderated message (one per matching
    # keyword) carry the same `hmac`. Each is a different body, so none is a replay.
    guard = ReplayGuard(window=60)
    t = int(NOW * 1000)
    keywords = ["pizza", "ready", "party"]
    alerts = [verify(body(t, payload={"keywordDetected": keyword, "metadata": {"room": "#5"},
                                      "fullText": "Is the pizza party ready?"}),
                     SECRET, NOW, guard) for keyword in keywords]
    assert [alert.keyword for alert in alerts] == keywords
    # The same body again is a replay, however it is re-encoded.
    for again in (body(t, payload={"keywordDetected": "ready", "metadata": {"room": "#5"},
                                   "fullText": "Is the pizza party ready?"}),
                  orjson.dumps(orjson.loads(body(t, payload={
                      "fullText": "Is the pizza party ready?", "metadata": {"room": "#5"},
                      "keywordDetected": "party"})), option=orjson.OPT_INDENT_2)):
        with pytest.raises(WebhookRejected, match="replayed") as caught:
            verify(again, SECRET, NOW + 1, guard)
        assert caught.value.status == 401


def test_a_body_is_remembered_while_its_time_can_pass_the_window() -> None:
    guard = ReplayGuard(window=60)
    t = int(NOW * 1000)
    verify(body(t), SECRET, NOW, guard)
    with pytest.raises(WebhookRejected, match="replayed"):
        verify(body(t), SECRET, NOW + 59, guard)
    # Later, the time check refuses it, and the guard has forgotten it.
    with pytest.raises(WebhookRejected, match="outside the accepted window"):
        verify(body(t), SECRET, NOW + 61, guard)
    assert guard.first_time(b"another body", NOW + 200)
    assert len(guard) == 1


def bad_bodies(rng: random.Random) -> list[tuple[str, bytes, float]]:
    t = int(NOW * 1000)
    good = sign(SECRET, t)
    digest = base64.b64decode(good)
    cases: list[tuple[str, bytes, float]] = []
    for i in range(50):
        other = bytes(rng.randrange(256) for _ in range(32))
        cases.append(("forged", body(t, base64.b64encode(other).decode()), NOW))
        cases.append(("wrong key", body(t, sign(b"other-secret-%d" % i, t)), NOW))
        offset = rng.choice([-1, 1]) * rng.randint(61_000, 10**9)
        cases.append(("stale or future", body(t + offset), NOW))
        cases.append(("time as string", body(t, good, time=str(t)), NOW))
        cases.append(("time as float", body(t, good, time=t + 0.5), NOW))
        cases.append(("time as bool", body(t, good, time=True), NOW))
        flipped = bytearray(digest)
        flipped[rng.randrange(32)] ^= 1 << rng.randrange(8)
        cases.append(("one bit off", body(t, base64.b64encode(bytes(flipped)).decode()), NOW))
        cases.append(("not canonical", body(t, good.rstrip("=")), NOW))
        cases.append(("garbage", bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))),
                      NOW))
        cases.append(("wrong shape", orjson.dumps([t, good]), NOW))
    cases.append(("no hmac", body(t, "", hmac=None), NOW))
    cases.append(("payload missing", body(t, good, payload="x"), NOW))
    return cases


def test_generated_bad_webhooks_are_all_refused_with_4xx() -> None:
    rng = random.Random(5)
    cases = bad_bodies(rng)
    assert len(cases) > 500
    for name, data, now in cases:
        with pytest.raises(WebhookRejected) as caught:
            verify(data, SECRET, now, ReplayGuard(window=60))
        assert caught.value.status in (400, 401), name


def test_a_longer_window_keeps_bodies_as_long_as_it_needs() -> None:
    guard = ReplayGuard(window=60)
    assert guard.first_time(b"body", NOW)
    guard.set_window(600)
    # Accepted at NOW, its time is within 60 s of NOW, so it can pass the new window until
    # NOW + 660 at the latest: remembered until NOW + 120 + 1080.
    assert not guard.first_time(b"body", NOW + 1000)
    assert guard.first_time(b"body", NOW + 1200.5)


def test_replay_memory_is_bounded() -> None:
    guard = ReplayGuard(window=60, size=10)
    for i in range(100):
        assert guard.first_time(b"body %d" % i, NOW)
    assert len(guard) == 10
    assert not guard.first_time(b"body 99", NOW)
