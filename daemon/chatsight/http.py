"""Chatsight's HTTP text moderation: the websocket's fallback.

Pooled keep-alive connections (http_pool; httpx when a proxy is configured or a test injects a
transport), bounded concurrency, per-request timeouts; 5xx, 429 and network errors retried
with jittered backoff honouring ``Retry-After``; 401/403 never retried.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import httpx
import trio

from chatmod.chatsight.http_body import post_request
from chatmod.chatsight.http_pool import (
    Answer,
    KeepAlivePoster,
    proxy_configured,
)
from chatmod.chatsight.protocol import (
    AUTH_HEADER,
    TEXT_MODERATION_PATH,
    USERNAME_PATH,
    ChatsightResult,
    http_request,
    parse_http_reply,
    parse_username_reply,
    username_request,
)
from chatmod.core.backoff import Backoff, Retry, with_retries
from chatmod.errors import (
    AuthRejected,
    EngineError,
    EngineTimeout,
    ExchangeFailed,
    ExchangeTimedOut,
    ProtocolError,
)

log = logging.getLogger("chatmod.engine.chatsight.http")

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
AUTH_STATUSES = frozenset({401, 403})
# Jobs a worker runs in a row from the queue before it lets other tasks run: a job that
# never waits (the breaker skipping it) must not hold the scheduler through a long queue.
JOBS_BETWEEN_YIELDS = 16

Job = tuple[Callable[..., Awaitable[object]], tuple[Any, ...]]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; ``None`` if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ChatsightHttp:
    """``POST /text/moderation`` with retries. Open with ``async with``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        concurrency: int = 32,
        timeout: float = 5.0,
        retries: int = 2,
        max_retry_wait: float = 5.0,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + TEXT_MODERATION_PATH
        self.username_url = base_url.rstrip("/") + USERNAME_PATH
        self._headers = {AUTH_HEADER: api_key, "content-type": "application/json"}
        self._limit = trio.Semaphore(concurrency)
        self._concurrency = concurrency
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self._backoff_template = backoff or Backoff(initial=0.2, cap=max_retry_wait)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency,
                                max_keepalive_connections=concurrency),
            transport=transport,
        )
        # The lean path, unless a transport is injected or a proxy applies (httpx then).
        self._poster: KeepAlivePoster | None = None
        if transport is None and not proxy_configured(self.url):
            # A header it cannot send: httpx reports that for each request.
            with contextlib.suppress(ValueError, UnicodeError):
                self._poster = KeepAlivePoster(
                    self.url, [(AUTH_HEADER.encode(), api_key.encode()),
                               (b"content-type", b"application/json")], timeout)
        self.stats: Counter[str] = Counter()

    async def __aenter__(self) -> ChatsightHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            if self._poster is not None:
                await self._poster.aclose()
            await self._client.aclose()

    async def warm(self, connections: int) -> None:
        """Have ``connections`` keep-alive connections open and idle (at most
        ``concurrency``), so that a burst of requests (the websocket just closed) does not
        wait for TCP and TLS set-up. Nothing on the httpx path; failures are ignored."""
        if self._poster is None:
            await trio.lowlevel.checkpoint()
            return
        await self._poster.warm(min(connections, self._concurrency))

    async def moderate(
        self, text: str, metadata: Mapping[str, Any] | None = None, *,
        deadline: float | None = None,
    ) -> ChatsightResult:
        """The result for ``text``; :class:`EngineError` once retries are spent,
        :class:`EngineTimeout` at ``deadline`` (trio time; waiting for a free connection,
        attempts and the waits between them included)."""
        return await self._post(self.url, http_request(text, metadata), parse_http_reply,
                                deadline)

    async def check_username(self, name: str) -> str:
        """Chatsight's username check (beta): ``allow``, ``reject``, ``undecided`` or
        ``error``; :class:`EngineError` once retries are spent."""
        return await self._post(self.username_url, username_request(name),
                                parse_username_reply)

    async def _post(self, url: str, body: bytes, parse: Callable[[bytes], T],
                    deadline: float | None = None) -> T:
        # Cancel scopes cost about a tenth of a request's CPU: the first attempt bounds its
        # own time by the deadline too; a scope covers the slot's wait and the retries only
        # when there are any.
        now = None  # read once for the check here and the first attempt's end
        if deadline is not None:
            now = trio.current_time()
            if now >= deadline:
                # Waited for a worker until then (WorkerPool): too late to send anything.
                raise EngineTimeout("no HTTP answer before the deadline")
        try:
            self._limit.acquire_nowait()
        except trio.WouldBlock:
            now = None  # read again after the wait
            acquired = False
            with trio.CancelScope(deadline=math.inf if deadline is None else deadline):
                await self._limit.acquire()
                acquired = True
            if not acquired:
                raise EngineTimeout("no free HTTP connection before the deadline") from None
        try:
            first = await self._attempt(url, body, parse, deadline, now)
            if not isinstance(first, Retry) or not self.retries:
                outcome, attempts = first, 1
            else:
                outcome, attempts = await self._retry(first, url, body, parse, deadline)
        finally:
            self._limit.release()
        if isinstance(outcome, Retry):
            self.stats["gave_up"] += 1
            raise EngineError(
                f"Chatsight HTTP failed after {attempts} attempt(s): {outcome.reason}")
        return outcome

    async def _retry(self, first: Retry, url: str, body: bytes, parse: Callable[[bytes], T],
                     deadline: float | None) -> tuple[T | Retry, int]:
        """The retries after a ``first`` attempt that asked for them, until ``deadline``."""
        template = self._backoff_template
        backoff = Backoff(template.initial, template.cap, jitter=template.jitter, rng=template.rng)
        earlier = [first]

        async def attempt() -> T | Retry:
            if earlier:  # with_retries counts the first attempt, then waits as it asks
                return earlier.pop()
            return await self._attempt(url, body, parse, deadline)

        def retrying(outcome: Retry, delay: float) -> None:
            self.stats["retries"] += 1
            log.debug("retrying in %.2f s: %s", delay, outcome.reason)

        with trio.CancelScope(deadline=math.inf if deadline is None else deadline):
            return await with_retries(attempt, retries=self.retries, backoff=backoff,
                                      max_wait=self.max_retry_wait, on_retry=retrying)
        raise EngineTimeout("no HTTP answer before the deadline, retries included")

    async def _attempt(self, url: str, body: bytes, parse: Callable[[bytes], T],
                       deadline: float | None, now: float | None = None) -> T | Retry:
        """One request: its result, a :class:`Retry`, or a final :class:`EngineError`
        (:class:`EngineTimeout` at ``deadline``). ``now``: trio's time, if just read."""
        self.stats["requests"] += 1
        if self._poster is not None and url == self.url:  # the hot path: text moderation
            try:
                answer = await self._poster.post(body, deadline, now)
            except ExchangeTimedOut:
                if deadline is not None and trio.current_time() >= deadline:
                    raise EngineTimeout("no HTTP answer before the deadline") from None
                self.stats["timeouts"] += 1
                return Retry("timed out")
            except ExchangeFailed as exc:
                self.stats["network_errors"] += 1
                return Retry(str(exc))
        else:
            sent = await self._send_with_httpx(url, body, deadline)
            if isinstance(sent, Retry):
                return sent
            answer = sent
        status = answer.status
        self.stats[f"status_{status}"] += 1
        if status == 200:
            try:
                return parse(answer.body)
            except ProtocolError as exc:
                raise EngineError(f"Chatsight HTTP reply unreadable: {exc}") from None
        if status in AUTH_STATUSES:
            raise AuthRejected(f"Chatsight refused the API key (HTTP {status})")
        if status in RETRY_STATUSES:
            return Retry(f"HTTP {status}", retry_after_seconds(answer.header(b"retry-after")))
        text = answer.body[:200].decode("utf-8", "replace")
        raise EngineError(f"Chatsight HTTP {status}: {text}")

    async def _send_with_httpx(self, url: str, body: bytes, deadline: float | None
                               ) -> Answer | Retry:
        """The answer through httpx (a proxy, an injected transport, or another endpoint)."""
        with trio.CancelScope(deadline=math.inf if deadline is None else deadline):
            try:
                response = await self._client.send(
                    post_request(self._client, url, body, self._headers))
            except httpx.TimeoutException:
                self.stats["timeouts"] += 1
                return Retry("timed out")
            except httpx.TransportError as exc:
                self.stats["network_errors"] += 1
                return Retry(f"{type(exc).__name__}: {exc}")
            return Answer(response.status_code,
                          [(k.lower(), v) for k, v in response.headers.raw], response.content)
        raise EngineTimeout("no HTTP answer before the deadline")


class WorkerPool:
    """At most ``size`` worker tasks that run queued calls, one after another each.

    The HTTP fallback's messages: a task per message cost a spawn, a wake-up and an exit each
    (a sixth of a request's CPU on the bench). A worker takes the next call as soon as it is
    done with one, with no wake-up while the queue holds work; it waits (parked, without an
    Event) only when the queue is empty. Workers start as calls come, up to ``size``, in the
    nursery given to :meth:`start_in`; they end when it is cancelled (calls still queued are
    then never run: their owner answers for them). Calls run in the order they are queued,
    so a call that bounds its own time (a deadline set when it was queued, the same for all)
    waits at most until the calls ahead of it end, which is before its deadline.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._queue: deque[Job] = deque()
        # Idle workers, each with the list :meth:`run_soon` puts its next call in.
        self._parked: list[tuple[trio.lowlevel.Task, list[Job]]] = []
        self._workers = 0
        self._nursery: trio.Nursery | None = None

    def __len__(self) -> int:
        """Calls waiting for a worker."""
        return len(self._queue)

    def start_in(self, nursery: trio.Nursery) -> None:
        """Run workers in ``nursery`` from now on (forgetting an earlier nursery's)."""
        self._queue.clear()
        self._parked.clear()
        self._workers = 0
        self._nursery = nursery

    def run_soon(self, function: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Have ``function(*args)`` run by a worker: an idle one, a new one (fewer than
        ``size`` run), or the first to finish its call. An error it raises ends the pool's
        nursery, as a task's would."""
        if self._parked:
            task, handed = self._parked.pop()  # the last parked: its memory is warm
            handed.append((function, args))
            trio.lowlevel.reschedule(task)
        elif self._workers < self.size and self._nursery is not None:
            self._workers += 1
            self._nursery.start_soon(self._work, function, args, name="http-worker")
        else:
            self._queue.append((function, args))

    async def _work(self, function: Callable[..., Awaitable[object]], args: tuple[Any, ...]
                    ) -> None:
        queue = self._queue
        in_a_row = 0
        while True:
            await function(*args)
            in_a_row += 1
            if in_a_row >= JOBS_BETWEEN_YIELDS:
                in_a_row = 0
                await trio.lowlevel.checkpoint()
            if queue:
                function, args = queue.popleft()
            else:
                function, args = await self._park()
                in_a_row = 0

    async def _park(self) -> Job:
        """Wait, idle, for :meth:`run_soon` to hand this worker a call."""
        handed: list[Job] = []
        parked = (trio.lowlevel.current_task(), handed)
        self._parked.append(parked)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._parked.remove(parked)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return handed[0]
