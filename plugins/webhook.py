"""The webhook sink: POST each decision line as JSON to a URL, signed, with retries.

Every request carries ``X-Chatmod-Timestamp`` (Unix seconds) and ``X-Chatmod-Signature:
sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>." + body`` with the shared secret, so a
receiver can check that the body came from chatmod, unchanged, recently (see
:func:`verify_signature`). Network errors, 5xx and 429 are retried with backoff (honouring
``Retry-After``); other 4xx are final. A decision given up on goes to the dead letters.

``write`` returns once every decision of the batch was delivered or given up on: the source
is acknowledged only then (at-least-once). At most ``concurrency`` requests run at once.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import trio

from chatmod.chatsight.http import retry_after_seconds
from chatmod.config.schema import Secret, setting
from chatmod.core.backoff import Backoff, Retry, with_retries
from chatmod.core.interfaces import Sink
from chatmod.core.model import Decision
from chatmod.errors import ConfigError, SinkError

SIGNATURE_HEADER = "x-chatmod-signature"
TIMESTAMP_HEADER = "x-chatmod-timestamp"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """What a receiver does: a fresh timestamp and a matching signature (constant time)."""
    if not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True)
class WebhookConfig:
    """POSTs each decision line as JSON, signed: `X-Chatmod-Timestamp` (Unix seconds) and
    `X-Chatmod-Signature: sha256=<hex>`, the HMAC-SHA256 of `"<timestamp>." + body` with the
    secret. Receivers recompute it, compare in constant time and reject old timestamps
    (`chatmod.plugins.webhook.verify_signature` does exactly that). A decision is delivered or
    given up on (dead letters): at least once."""

    url: str = setting("", nonempty=True, help="where decisions are POSTed")
    secret: Secret | None = setting(None, help="the signing key; required")
    include_text: bool = setting(True, help="keep the message text in the decision line")
    only_actions: tuple[str, ...] = setting((), help="send only decisions with these actions; "
                                                      "empty: all")
    concurrency: int = setting(4, min=1, max=1000, help="requests at once")
    timeout: float = setting(5.0, min=0.001, help="seconds per request")
    retries: int = setting(
        5, min=0, max=100,
        help="network errors, 5xx, 408, 425 and 429 are retried with backoff (honouring "
             "Retry-After); other 4xx are final; then the dead letters")
    retry_initial: float = setting(
        0.5, min=0.0, help="seconds before the first retry; doubled per retry")
    retry_max: float = setting(30.0, min=0.0, help="longest wait between retries")

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"url: expected an http:// or https:// URL, found {self.url!r}")
        if self.secret is None:
            raise ConfigError("secret: required; set secret_env or secret_file (bodies are "
                              "signed so receivers can trust them)")


class WebhookSink(Sink[WebhookConfig]):
    Config = WebhookConfig

    def __init__(self, name: str, config: WebhookConfig,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(name, config)
        assert config.secret is not None
        self._secret = config.secret.reveal().encode()
        self._limit = trio.Semaphore(config.concurrency)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout), transport=transport,
            limits=httpx.Limits(max_connections=config.concurrency))
        self.delivered = 0
        self.retried = 0
        self.given_up = 0

    async def write(self, decisions: Sequence[Decision]) -> None:
        wanted = self.config.only_actions
        todo = [d for d in decisions if not wanted or d.action in wanted]
        failures: list[tuple[Decision, str]] = []
        async with trio.open_nursery() as nursery:
            for decision in todo:
                nursery.start_soon(self._deliver, decision, failures)
        if failures:
            reasons = sorted({reason for _, reason in failures})
            raise SinkError(f"{self.config.url}: gave up on {len(failures)} decision(s): "
                            f"{'; '.join(reasons)[:300]}", failed=[d for d, _ in failures],
                            reasons=[reason for _, reason in failures])

    async def _deliver(self, decision: Decision, failures: list[tuple[Decision, str]]) -> None:
        body = decision.to_line(include_text=self.config.include_text).rstrip(b"\n")
        async with self._limit:
            outcome, attempts = await with_retries(
                lambda: self._attempt(body), retries=self.config.retries,
                backoff=Backoff(self.config.retry_initial, self.config.retry_max),
                max_wait=self.config.retry_max, on_retry=self._count_retry)
        if outcome is None:
            self.delivered += 1
            return
        self.given_up += 1
        reason = outcome.reason if isinstance(outcome, Retry) else outcome
        failures.append((decision, f"{reason} after {attempts} attempt(s)"))

    def _count_retry(self, retry: Retry, delay: float) -> None:
        self.retried += 1

    async def _attempt(self, body: bytes) -> str | Retry | None:
        """One signed POST: None when delivered, a :class:`Retry`, or why the receiver
        refused it for good."""
        timestamp = str(int(time.time()))  # signed anew each attempt: receivers check its age
        headers = {"content-type": "application/json", TIMESTAMP_HEADER: timestamp,
                   SIGNATURE_HEADER: sign(self._secret, timestamp, body)}
        try:
            response = await self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            return Retry(type(exc).__name__)
        if response.status_code < 300:
            return None
        reason = f"HTTP {response.status_code}"
        if response.status_code not in RETRY_STATUSES:
            return reason  # the receiver refuses it: retrying will not help
        return Retry(reason, retry_after_seconds(response.headers.get("retry-after")))

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self._client.aclose()

    def statistics(self) -> dict[str, float]:
        return {"delivered": self.delivered, "retried": self.retried, "given_up": self.given_up}
