"""The Discuse engine: text, images and GIFs through Discuse's check API.

Images are the message's ``images`` plus links in its text that look like images or GIFs.
Discuse throttles heavy use by answering slowly, so the timeout is generous; network errors,
5xx and 429 are retried with backoff; a refused key is not. Usable as primary or fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import trio

from chatmod.config.schema import Secret, setting
from chatmod.core.backoff import Backoff, Retry, with_retries
from chatmod.core.interfaces import Engine
from chatmod.core.model import Message, Verdict
from chatmod.errors import ConfigError, EngineError, ProtocolError
from chatmod.protocols.discuse import (
    CHECK_PATH,
    CLIENT_ID_HEADER,
    CLIENT_SECRET_HEADER,
    check_request,
    media_urls,
    parse_check_reply,
    verdict_for,
)

ROUTE_HTTP = "http"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_MAX_WAIT = 5.0  # seconds between attempts at most


@dataclass(frozen=True)
class DiscuseConfig:
    """Discuse's check API (`POST /api/v1/check`): text, plus image and GIF URLs from the
    message's `images` and from links in its text. The verdict is `delete` when any score
    (toxic, profanity, threat, insult, images' and GIFs' porn and sexual) reaches
    `delete_threshold`, `flag` when one reaches `flag_threshold`, when Discuse reports a hit by
    your project's own thresholds (language included, or only its overall `hits`), or when it
    could not check an image or GIF (`status: "error"`, e.g. a URL that is not public; the
    decision's `scores.unchecked` names it), else `pass`. An unchecked image is flagged for a
    person rather than sent to the fallback engines, which read text only. The sandbox answers
    Discuse's route too (client id `sandbox-client`, secret `sandbox-secret`; an image URL
    containing `nsfw` is judged pornographic, one containing `unreachable` cannot be
    checked)."""

    client_id: Secret = setting(help="the organisation's x-client-id")
    client_secret: Secret = setting(help="the project's x-client-secret")
    url: str = setting("https://api.discuse.com", nonempty=True, help="Discuse's base URL")
    project_id: int | None = setting(None, help="settings.project_id; none: not sent")
    flag_threshold: float = setting(
        0.5, min=0.0, max=1.0, help="a score at or above this gives flag")
    delete_threshold: float = setting(
        0.9, min=0.0, max=1.0,
        help="a score at or above this gives delete (must be >= flag_threshold)")
    images_from_text: bool = setting(True, help="also check image and GIF links in the text")
    timeout: float = setting(15.0, min=0.001, help="seconds per request (throttling is slow)")
    retries: int = setting(
        2, min=0, max=20,
        help="retries after 5xx, 429 or a network error; a refused id or secret is not "
             "retried")
    concurrency: int = setting(16, min=1, max=10_000, help="requests at once")

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"url: expected an http:// or https:// URL, found {self.url!r}")
        if self.delete_threshold < self.flag_threshold:
            raise ConfigError("delete_threshold: expected a number >= flag_threshold")


class DiscuseEngine(Engine[DiscuseConfig]):
    Config = DiscuseConfig
    verdict_routes = (ROUTE_HTTP,)

    def __init__(self, name: str, config: DiscuseConfig,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(name, config)
        self._headers = {CLIENT_ID_HEADER: config.client_id.reveal(),
                         CLIENT_SECRET_HEADER: config.client_secret.reveal(),
                         "content-type": "application/json", "accept": "application/json"}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._limit = trio.Semaphore(config.concurrency)
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "failures": 0}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.timeout), transport=self._transport,
            limits=httpx.Limits(max_connections=self.config.concurrency),
        ) as client:
            self._client = client
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._client = None

    async def moderate(self, message: Message) -> Verdict:
        client = self._client
        if client is None:
            raise EngineError("Discuse engine is not running")
        config = self.config
        images, gifs = media_urls(message.text, message.images, config.images_from_text)
        body = check_request(message.text, images, gifs, message.author, config.project_id)
        async with self._limit:
            outcome, attempts = await with_retries(
                lambda: self._attempt(client, body), retries=config.retries,
                backoff=Backoff(0.2, RETRY_MAX_WAIT), max_wait=RETRY_MAX_WAIT,
                on_retry=self._count_retry)
        if isinstance(outcome, Retry):
            self.stats["failures"] += 1
            raise EngineError(f"Discuse failed after {attempts} attempt(s): {outcome.reason}")
        return outcome

    def _count_retry(self, retry: Retry, delay: float) -> None:
        self.stats["retries"] += 1

    async def _attempt(self, client: httpx.AsyncClient, body: bytes) -> Verdict | Retry:
        """A verdict, or a :class:`Retry` saying why this attempt failed; raises if retrying
        is not worth it."""
        self.stats["requests"] += 1
        try:
            response = await client.post(self.config.url.rstrip("/") + CHECK_PATH,
                                         content=body, headers=self._headers)
        except httpx.TransportError as exc:
            return Retry(type(exc).__name__)
        if response.status_code in (401, 403):
            raise EngineError(f"Discuse refused the client id or secret "
                              f"(HTTP {response.status_code})")
        if response.status_code in RETRY_STATUSES:
            return Retry(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise EngineError(f"Discuse HTTP {response.status_code}")
        try:
            result = parse_check_reply(response.content)
        except ProtocolError as exc:
            raise EngineError(f"Discuse reply unreadable: {exc}") from None
        action, score = verdict_for(result, self.config.flag_threshold,
                                    self.config.delete_threshold)
        scores: dict[str, object] = dict(result.scores)
        if result.hits:
            scores["hits"] = list(result.hits)
        if result.unchecked:
            scores["unchecked"] = list(result.unchecked)
        return Verdict(action, round(score, 4), self.name, ROUTE_HTTP, scores)

    def statistics(self) -> dict[str, float]:
        return dict(self.stats)
