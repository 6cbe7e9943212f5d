"""The sandbox's account features, written from Chatsight's documents: the keyword add-on and
its signed webhooks, the webhook shared secret, moderation statistics and voice jobs.

:class:`Account` is part of :class:`chatmod.sandbox.server.Sandbox`; the sandbox tells it of every
text it moderates (:meth:`Account.moderated`), which feeds the statistics and the keywords.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import trio

from chatmod.chatsight.protocol import MAX_METADATA_KEYS
from chatmod.chatsight.stats import (
    LIFETIME_PATH,
    SEARCH_INTERVAL,
    SEARCH_PATH,
    Counts,
    counts_for_verdict,
    envelope,
    lifetime_reply,
    parse_search_request,
    search_reply,
    select_records,
)
from chatmod.chatsight.voice import (
    API_HEADER,
    API_VOICE,
    FETCH_PREFIX,
    MIN_CONVO_ID,
    SUBMIT_PATH,
    valid_author_key,
)
from chatmod.chatsight.webhook import (
    ADDONS_PATH,
    KEYWORD_ADDON,
    KEYWORDS_PATH,
    SECRETS_PATH,
    WEBHOOK_SENDER,
    sign,
)
from chatmod.http.server import HttpRequest, HttpResponse

log = logging.getLogger("chatmod.sandbox")

WEBHOOK_QUEUE = 256
WEBHOOK_TIMEOUT = 5.0

Judge = Callable[[list[str]], Awaitable[list[tuple[str, float]]]]
ReplyBody = Callable[[str, float], dict[str, Any]]
Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]

# A conversation the sandbox "transcribes" when no script was given for a URL: the
# document's own sample.
DEFAULT_VOICE_SCRIPT: tuple[tuple[str, str, str], ...] = (
    ("0", "00:00:33", "Hey guys, we're here to talk about eating pizza."),
    ("0", "00:00:46", "Sometimes its fun to eat some pizza with friends!"),
    ("1", "00:00:54", "You're right dude I love pizza!"),
)


@dataclass
class VoiceJob:
    convo_id: str
    url: str
    author_key: str
    long_running: bool
    script: tuple[tuple[str, str, str], ...]
    submitted_ms: int
    fetches: int = 0


@dataclass
class Account:
    """State of the one sandbox account; its routes are served by the sandbox."""

    judge: Judge
    reply_body: ReplyBody
    #: How the voice reply writes ``speakers``: as the document does (a list holding
    #: ``"0": [...]`` pairs, not valid JSON), as an object, or as a list of lists.
    voice_speakers: Literal["document", "object", "list"] = "document"
    #: Fetches a voice job takes: the first ones answer "still processing", the one before
    #: last carries half the results, from this one on it is complete.
    voice_fetches_until_done: int = 3
    search_interval: float = SEARCH_INTERVAL
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.webhook_url: str | None = None
        self.include_full_message = False
        self.keywords: dict[str, re.Pattern[str]] = {}
        self.shared_secret: str | None = None
        self.minutes: dict[datetime, Counts] = {}
        self.lifetime = Counts()
        self.voice_scripts: dict[str, tuple[tuple[str, str, str], ...]] = {}
        self.voice_jobs: dict[str, VoiceJob] = {}
        self._last_search: float | None = None
        self._webhooks_out, self._webhooks_in = trio.open_memory_channel[bytes](WEBHOOK_QUEUE)
        self.routes: dict[tuple[str, str], Handler] = {
            ("PATCH", ADDONS_PATH): self._enable_addon,
            ("PATCH", KEYWORDS_PATH): self._add_keyword,
            ("DELETE", KEYWORDS_PATH): self._remove_keyword,
            ("PATCH", SECRETS_PATH): self._rotate_secret,
            ("GET", LIFETIME_PATH): self._lifetime,
            ("POST", SEARCH_PATH): self._search,
            ("POST", SUBMIT_PATH): self._voice_submit,
        }

    def route(self, method: str, path: str) -> Handler | None:
        handler = self.routes.get((method, path))
        if handler is None and method == "POST" and path.startswith(FETCH_PREFIX):
            return self._voice_fetch
        return handler

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Deliver queued webhooks, one at a time (the provider's order)."""
        import httpx  # here, not at import: `chatmod run` loads this module via its parser

        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as client:
            task_status.started()
            async for body in self._webhooks_in:
                url = self.webhook_url
                if url is None:
                    continue
                try:
                    response = await client.post(url, content=body,
                                                 headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    self.stats["webhooks_failed"] += 1
                    log.info("webhook to %s failed: %s", url, type(exc).__name__)
                    continue
                self.stats[f"webhooks_status_{response.status_code}"] += 1

    # -- fed by the sandbox -------------------------------------------------------------

    def moderated(self, text: str, action: str, metadata: Any) -> None:
        """Count a moderated text, and queue keyword alerts for it."""
        now = time.time()
        self.add_history(datetime.fromtimestamp(now, UTC), counts_for_verdict(action))
        if self.webhook_url is None or not self.keywords:
            return
        if isinstance(metadata, dict) and len(metadata) > MAX_METADATA_KEYS:
            self.stats["keyword_skipped_metadata"] += 1  # as documented: the add-on does not run
            return
        for keyword, pattern in self.keywords.items():
            if pattern.search(text):
                self._queue_webhook(keyword, text, metadata if isinstance(metadata, dict) else {},
                                    int(now * 1000))

    def add_history(self, minute: datetime, counts: Counts) -> None:
        """Count traffic in the minute of ``minute``: what the sandbox moderates, or past
        traffic for trying the stats search over days (tests, demos)."""
        minute = minute.astimezone(UTC).replace(second=0, microsecond=0)
        self.minutes[minute] = self.minutes.get(minute, Counts()) + counts
        self.lifetime = self.lifetime + counts

    def _queue_webhook(self, keyword: str, text: str, metadata: Mapping[str, Any],
                       now_ms: int) -> None:
        body: dict[str, Any] = {
            "sender": WEBHOOK_SENDER, "addon": KEYWORD_ADDON,
            "payload": {"keywordDetected": keyword, "metadata": dict(metadata),
                        "fullText": text if self.include_full_message else False},
            "time": now_ms,
        }
        if self.shared_secret is not None:
            body["hmac"] = sign(self.shared_secret.encode(), now_ms)
        try:
            self._webhooks_out.send_nowait(orjson.dumps(body))
            self.stats["webhooks_queued"] += 1
        except trio.WouldBlock:
            self.stats["webhooks_dropped"] += 1

    # -- keyword add-on and secret ------------------------------------------------------

    async def _enable_addon(self, request: HttpRequest) -> HttpResponse:
        body = _object(request.body)
        webhook = body.get("webhook") if body else None
        if not body or body.get("addon") != KEYWORD_ADDON or not isinstance(webhook, str) \
                or not webhook.startswith(("http://", "https://")):
            return _error(400, "expected {\"addon\": \"keywordAlert\", \"webhook\": "
                               "\"<http(s) URL>\", \"includeFullMessage\": <bool>}")
        self.webhook_url = webhook
        self.include_full_message = body.get("includeFullMessage") is True
        return _ok({"addon": KEYWORD_ADDON, "webhook": webhook,
                    "includeFullMessage": self.include_full_message})

    async def _add_keyword(self, request: HttpRequest) -> HttpResponse:
        keyword = _keyword(request.body)
        if keyword is None:
            return _error(400, "expected {\"keyword\": \"<text>\"}")
        self.keywords[keyword] = re.compile(rf"(?<!\w){re.escape(keyword)}(?!\w)", re.I)
        return _ok({"keywords": sorted(self.keywords)})

    async def _remove_keyword(self, request: HttpRequest) -> HttpResponse:
        keyword = _keyword(request.body)
        if keyword is None:
            return _error(400, "expected {\"keyword\": \"<text>\"}")
        if self.keywords.pop(keyword, None) is None:
            return _error(404, f"keyword {keyword!r} is not registered")
        return _ok({"keywords": sorted(self.keywords)})

    async def _rotate_secret(self, request: HttpRequest) -> HttpResponse:
        self.shared_secret = secrets.token_urlsafe(32)
        return _ok({"sharedSecret": self.shared_secret,
                    "info": "Store this secret now: it is shown once. Calling this endpoint "
                            "again replaces it."})

    # -- statistics ---------------------------------------------------------------------

    async def _lifetime(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, lifetime_reply(self.lifetime))

    async def _search(self, request: HttpRequest) -> HttpResponse:
        now = trio.current_time()
        if self._last_search is not None and now - self._last_search < self.search_interval:
            wait = self.search_interval - (now - self._last_search)
            self.stats["search_rate_limited"] += 1
            return HttpResponse(429, envelope("Search is limited to one request every two "
                                              "minutes.", success=False),
                                headers=(("retry-after", str(int(wait) + 1)),))
        try:
            start, end = parse_search_request(request.body)
        except ValueError as exc:
            return _error(400, str(exc))
        self._last_search = now
        self.stats["searches"] += 1
        return HttpResponse(200, search_reply(select_records(self.minutes, start, end)))

    # -- voice --------------------------------------------------------------------------

    async def _voice_submit(self, request: HttpRequest) -> HttpResponse:
        if request.headers.get(API_HEADER) != API_VOICE:
            return _error(400, f"header {API_HEADER}: {API_VOICE} is required")
        body = _object(request.body) or {}
        url, key, convo = body.get("url"), body.get("authorKey"), body.get("convoId")
        if not isinstance(url, str) or not url:
            return _error(400, "url is required")
        if not isinstance(key, str) or not valid_author_key(key):
            return _error(400, "authorKey must be base64 of 32 random bytes")
        if not isinstance(convo, str) or len(convo) < MIN_CONVO_ID:
            return _error(400, f"convoId must have at least {MIN_CONVO_ID} characters")
        if convo in self.voice_jobs:
            return _error(409, f"conversation {convo} already exists")
        self.voice_jobs[convo] = VoiceJob(
            convo, url, key, body.get("longRunning") is True,
            self.voice_scripts.get(url, DEFAULT_VOICE_SCRIPT), int(time.time() * 1000))
        self.stats["voice_jobs"] += 1
        return _ok({"convoId": convo, "status": "processing"})

    async def _voice_fetch(self, request: HttpRequest) -> HttpResponse:
        if request.headers.get(API_HEADER) != API_VOICE:
            return _error(400, f"header {API_HEADER}: {API_VOICE} is required")
        job = self.voice_jobs.get(urllib.parse.unquote(request.path.removeprefix(FETCH_PREFIX)))
        if job is None:
            return HttpResponse(404, orjson.dumps([False, None, "Unknown conversation."]))
        body = _object(request.body) or {}
        key = body.get("authorKey")
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(),
                                                                job.author_key.encode()):
            return HttpResponse(403, orjson.dumps([False, None, "Unable to decrypt: wrong "
                                                                "authorKey."]))
        job.fetches += 1
        self.stats["voice_fetches"] += 1
        if job.fetches < self.voice_fetches_until_done - 1:
            return HttpResponse(200, orjson.dumps([False, None, "Conversation is still being "
                                                                "processed."]))
        script = job.script
        done = len(script) if job.fetches >= self.voice_fetches_until_done \
            else (len(script) + 1) // 2
        judged = await self.judge([text for _, _, text in script[:done]])
        return HttpResponse(200, self._voice_reply(job, judged))

    def _voice_reply(self, job: VoiceJob, judged: list[tuple[str, float]]) -> bytes:
        master = [[offset, text] for _, offset, text in job.script]
        by_speaker: dict[str, list[list[str]]] = {}
        for speaker, offset, text in job.script:
            by_speaker.setdefault(speaker, []).append([offset, text])
        results = []
        for i, ((_, _, text), (action, probability)) in enumerate(
                zip(job.script, judged, strict=False)):
            order = job.submitted_ms + 1000 * i
            results.append({"api": "chatsight-lang-voice", "success": True,
                            "response": self.reply_body(action, probability),
                            "voiceSTT": text, "convoID": job.convo_id,
                            "messageOrder": order, "time": str(order)})
        marker = "@@SPEAKERS@@"
        speakers: Any = (list(by_speaker.values()) if self.voice_speakers == "list"
                         else by_speaker if self.voice_speakers == "object" else marker)
        reply = orjson.dumps([True, {"transcript": {"master": master, "speakers": speakers},
                                     "moderationResults": results}, None])
        if self.voice_speakers != "document":
            return reply
        # As the document writes it: a list holding "key": value pairs, and no comma before
        # the final null (invalid JSON both).
        pairs = b",".join(orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in by_speaker.items())
        reply = reply.replace(orjson.dumps(marker), b"[" + pairs + b"]")
        return reply.removesuffix(b",null]") + b"\nnull]"


def _object(body: bytes) -> dict[str, Any] | None:
    with contextlib.suppress(orjson.JSONDecodeError):
        value = orjson.loads(body)
        if isinstance(value, dict):
            return value
    return None


def _keyword(body: bytes) -> str | None:
    value = (_object(body) or {}).get("keyword")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _ok(response: Any) -> HttpResponse:
    return HttpResponse(200, envelope(response))


def _error(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, envelope(message, success=False))
