"""Chatsight keyword alerts: the add-on's routes, and strict webhook verification. No I/O.

The add-on is enabled with ``PATCH /addons`` ``{"addon": "keywordAlert", "webhook": "<URL>",
"includeFullMessage": <bool>}``; keywords are added with ``PATCH /addons/keywords`` and removed
with ``DELETE /addons/keywords``, both ``{"keyword": "<text>"}``; ``PATCH /addons/secrets``
(body ``{}``) issues the shared secret (``response.sharedSecret``, shown once; calling it again
replaces it). A request whose ``metadata`` has over 20 keys is moderated but not alerted on.

The body is ``{"sender", "addon", "payload": {"keywordDetected", "metadata", "fullText"},
"time": <ms since the epoch>, "hmac": base64(HMAC-SHA256(shared secret, str(time)))}``.

Only ``time`` is signed, not the body: someone who captured one request could send another
body with the same ``time`` and ``hmac`` until the window closes. So the window is short
(60 s by default, both directions). For the same reason one signature is legitimately shared:
every alert for one moderated message (one per keyword it matches), and any alerts sent in the
same millisecond, carry the same ``time`` and so the same ``hmac``. A replay is therefore the
same *body* again within the window, and the replay guard remembers digests of whole bodies,
not signatures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from chatmod.errors import WebhookRejected

ADDONS_PATH = "/addons"
KEYWORDS_PATH = "/addons/keywords"
SECRETS_PATH = "/addons/secrets"
KEYWORD_ADDON = "keywordAlert"
WEBHOOK_SENDER = "chatsight-webhooks"
DEFAULT_WINDOW = 60.0
REPLAY_MEMORY = 100_000


@dataclass(frozen=True)
class KeywordAlert:
    keyword: str
    metadata: dict[str, Any]
    text: str | None
    time_ms: int

    def to_record(self) -> dict[str, Any]:
        return {"type": "alert", "alert": "keyword", "keyword": self.keyword,
                "metadata": self.metadata, "text": self.text, "time_ms": self.time_ms}


def sign(secret: bytes, time_ms: int) -> str:
    return base64.b64encode(hmac.new(secret, str(time_ms).encode(), hashlib.sha256).digest()
                            ).decode()


class ReplayGuard:
    """Digests of the bodies accepted recently, each remembered until its ``time`` could no
    longer pass the window check; at most ``size`` of them (the oldest go first)."""

    def __init__(self, window: float, size: int = REPLAY_MEMORY) -> None:
        self.window = window
        self.size = size
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def set_window(self, window: float) -> None:
        """A new window (a reload); the bodies seen stay remembered as long as it needs."""
        longer = 2 * (window - self.window)
        if longer > 0:  # the same amount for each: the oldest still expires first
            for digest in self._seen:
                self._seen[digest] += longer
        self.window = window

    def first_time(self, digest: bytes, now: float) -> bool:
        """True the first time ``digest`` is seen within its memory, and remembers it."""
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self.size:
                break
            del self._seen[oldest]
        if digest in self._seen:
            return False
        # A body accepted now has a `time` within `window` of now, so the window check
        # refuses it again from `now + 2 * window` on at the latest.
        self._seen[digest] = now + 2 * self.window
        return True


def body_digest(envelope: dict[str, Any]) -> bytes:
    """SHA-256 of the body's JSON in one canonical form (keys sorted, no spaces), so the same
    body re-encoded is still the same body. :class:`WebhookRejected` for a body nested too
    deeply to re-encode (no alert is)."""
    try:
        canonical = orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        raise WebhookRejected(400, "body is nested too deeply") from None
    return hashlib.sha256(canonical).digest()


def verify(body: bytes, secret: bytes, now: float, guard: ReplayGuard) -> KeywordAlert:
    """The alert in ``body`` if it is authentic and fresh; :class:`WebhookRejected` if not."""
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookRejected(400, "body is not JSON") from None
    if not isinstance(envelope, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    time_ms = envelope.get("time")
    signature = envelope.get("hmac")
    if type(time_ms) is not int or time_ms < 0:  # not bool, not float, not a string
        raise WebhookRejected(400, "'time' must be a non-negative integer")
    if not isinstance(signature, str) or not signature:
        raise WebhookRejected(401, "no 'hmac'")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRejected(401, "'hmac' is not base64") from None
    if len(raw) != hashlib.sha256().digest_size or base64.b64encode(raw).decode() != signature:
        raise WebhookRejected(401, "'hmac' is not a canonical SHA-256 digest")
    if not hmac.compare_digest(sign(secret, time_ms), signature):
        raise WebhookRejected(401, "signature does not match")
    if abs(now - time_ms / 1000) > guard.window:
        raise WebhookRejected(401, "'time' is outside the accepted window")
    if not guard.first_time(body_digest(envelope), now):
        raise WebhookRejected(401, "replayed body")
    payload = envelope.get("payload")
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "'payload' must be an object")
    keyword = payload.get("keywordDetected")
    metadata = payload.get("metadata") or {}
    text = payload.get("fullText")
    if not isinstance(keyword, str) or not isinstance(metadata, dict):
        raise WebhookRejected(400, "'payload' needs a 'keywordDetected' string")
    return KeywordAlert(keyword, metadata, text if isinstance(text, str) else None, time_ms)
