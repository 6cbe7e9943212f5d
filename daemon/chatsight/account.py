"""Chatsight's account calls: the keyword add-on, the webhook secret, statistics and voice.

One :class:`AccountClient` per command-line run or voice source; every call raises
:class:`AccountError` (or :class:`AccountAuthError` for a refused key) with a one-line reason.
Statistics searches are paced to the provider's limit of one request every two minutes:
:func:`search_range` waits (telling ``on_wait`` each second) rather than failing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx
import orjson
import trio

from chatmod.chatsight.http import AUTH_STATUSES, retry_after_seconds
from chatmod.chatsight.protocol import AUTH_HEADER
from chatmod.chatsight.stats import (
    LIFETIME_PATH,
    SEARCH_INTERVAL,
    SEARCH_PATH,
    Counts,
    Record,
    api_range,
    merge_records,
    parse_lifetime,
    parse_search,
    search_request,
    split_range,
)
from chatmod.chatsight.voice import (
    API_HEADER,
    API_VOICE,
    SUBMIT_PATH,
    Transcript,
    fetch_path,
    fetch_request,
    parse_transcript,
    submit_request,
)
from chatmod.chatsight.webhook import ADDONS_PATH, KEYWORD_ADDON, KEYWORDS_PATH, SECRETS_PATH
from chatmod.errors import AccountAuthError, AccountError, ProtocolError

log = logging.getLogger("chatmod.account")

DEFAULT_TIMEOUT = 30.0
MAX_RATE_LIMITED = 5  # 429s in a row before a search gives up


WaitReport = Callable[[float, int, int], None]  # seconds left, request number, requests


class AccountClient:
    """Calls on one Chatsight account. Open with ``async with``."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"content-type": "application/json"}
        if api_key is not None:  # the daemon's own stats need none
            headers[AUTH_HEADER] = api_key
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers,
                                         timeout=timeout, transport=transport)

    async def __aenter__(self) -> AccountClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await self._client.aclose()

    async def request(self, method: str, path: str, body: Any = None,
                      headers: Mapping[str, str] | None = None, *,
                      refusal_means_key: bool = True) -> httpx.Response:
        """One call; network failures as :class:`AccountError`, and 401/403 as
        :class:`AccountAuthError` unless ``refusal_means_key`` is false (a call whose 403 can
        mean something else, such as a wrong author key)."""
        content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        try:
            response = await self._client.request(method, path, content=content,
                                                  headers=headers)
        except httpx.HTTPError as exc:
            raise AccountError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code in AUTH_STATUSES and refusal_means_key:
            raise AccountAuthError(f"{method} {path}: Chatsight refused the API key "
                                   f"(HTTP {response.status_code})", response.status_code)
        return response

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """A call whose reply is the ``{"success", "response"}`` envelope: its response."""
        response = await self.request(method, path, body)
        try:
            reply = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            reply = None
        if not isinstance(reply, dict):
            raise AccountError(f"{method} {path}: HTTP {response.status_code}, unreadable reply")
        if response.status_code != 200 or reply.get("success") is False:
            raise AccountError(f"{method} {path}: HTTP {response.status_code}: "
                               f"{str(reply.get('response'))[:200]}", response.status_code)
        return reply.get("response")

    async def enable_keyword_alerts(self, webhook: str, *, full_message: bool) -> Any:
        return await self.call("PATCH", ADDONS_PATH, {"addon": KEYWORD_ADDON,
                                                      "webhook": webhook,
                                                      "includeFullMessage": full_message})

    async def add_keyword(self, keyword: str) -> Any:
        return await self.call("PATCH", KEYWORDS_PATH, {"keyword": keyword})

    async def remove_keyword(self, keyword: str) -> Any:
        return await self.call("DELETE", KEYWORDS_PATH, {"keyword": keyword})

    async def rotate_secret(self) -> str:
        """A new webhook shared secret (the old one stops working)."""
        response = await self.call("PATCH", SECRETS_PATH, {})
        secret = response.get("sharedSecret") if isinstance(response, dict) else None
        if not isinstance(secret, str) or not secret:
            raise AccountError(f"PATCH {SECRETS_PATH}: the reply has no sharedSecret")
        return secret

    async def lifetime_stats(self) -> Counts:
        response = await self.request("GET", LIFETIME_PATH)
        try:
            return parse_lifetime(response.content)
        except ProtocolError as exc:
            raise AccountError(f"GET {LIFETIME_PATH}: HTTP {response.status_code}: {exc}"
                               ) from None

    async def search_stats(self, start: datetime, end: datetime) -> httpx.Response:
        return await self.request("POST", SEARCH_PATH, search_request(start, end))

    async def submit_voice(self, url: str, author_key: str, convo_id: str, *,
                           long_running: bool) -> Any:
        response = await self.request(
            "POST", SUBMIT_PATH, submit_request(url, author_key, convo_id,
                                                long_running=long_running),
            headers={API_HEADER: API_VOICE})
        if response.status_code != 200:
            raise AccountError(f"POST {SUBMIT_PATH}: HTTP {response.status_code}: "
                               f"{response.text[:200]}", response.status_code)
        return response

    async def fetch_voice(self, convo_id: str, author_key: str) -> Transcript:
        path = fetch_path(convo_id)
        response = await self.request("POST", path, fetch_request(author_key),
                                      headers={API_HEADER: API_VOICE}, refusal_means_key=False)
        if response.status_code != 200:
            raise AccountError(f"POST {path}: HTTP {response.status_code}: "
                               f"{response.text[:200]}", response.status_code)
        try:
            return parse_transcript(response.content)
        except ProtocolError as exc:
            raise AccountError(f"POST {path}: {exc}") from None


async def search_range(
    client: AccountClient, start: datetime, end: datetime, *,
    interval: float = SEARCH_INTERVAL, on_wait: WaitReport | None = None,
) -> list[Record]:
    """Every record from ``start`` to ``end`` (rounded to hours as the API does), in
    requests of 24 hours spaced ``interval`` seconds apart; a 429 is waited out."""
    pieces = split_range(*api_range(start, end))
    batches: list[list[Record]] = []
    last_sent: float | None = None
    for number, (piece_start, piece_end) in enumerate(pieces, start=1):
        refused = 0
        while True:
            if last_sent is not None:
                await _wait(last_sent + interval - trio.current_time(), number, len(pieces),
                            on_wait)
            last_sent = trio.current_time()
            response = await client.search_stats(piece_start, piece_end)
            if response.status_code != 429:
                break
            refused += 1
            if refused > MAX_RATE_LIMITED:
                raise AccountError(f"POST {SEARCH_PATH}: still rate limited after "
                                   f"{MAX_RATE_LIMITED} waits")
            wait = retry_after_seconds(response.headers.get("retry-after"))
            # Wait what the API asks (or a whole interval) from now.
            last_sent = trio.current_time() - interval + (interval if wait is None else wait)
        try:
            batches.append(parse_search(response.content))
        except ProtocolError as exc:
            raise AccountError(f"POST {SEARCH_PATH}: HTTP {response.status_code}: {exc}"
                               ) from None
    return merge_records(batches)


async def _wait(seconds: float, number: int, total: int, on_wait: WaitReport | None) -> None:
    """Sleep ``seconds``, reporting the time left once a second."""
    deadline = trio.current_time() + seconds
    while (left := deadline - trio.current_time()) > 0:
        if on_wait is not None:
            on_wait(left, number, total)
        await trio.sleep(min(1.0, left - math.floor(left) or 1.0))
