"""The Chatsight engine: one persistent websocket, with Chatsight's HTTP API as its fallback.

Each message is sent over the websocket when it is open, and waits ``verdict_timeout``
seconds for its reply. It goes over HTTP instead when the socket is down, when the socket
closes while the message is in flight (all such messages move at once), when the reply is an
error, or when the reply is late; in that last case a websocket reply arriving before the
HTTP answer still wins. Whichever answers first decides; later replies are counted, never used.
When HTTP fails too, the result is an EngineError and the engine chain's fallback answers.

Messages are streamed (:meth:`ChatsightEngine.submit`): no task waits per message on the
websocket path; the reply's callback settles it. Only the rare slow paths (HTTP) get a task.

This module does the I/O; the rules (which route, what a reply or a timeout means, when HTTP
is skipped) are decided by :class:`~chatmod.chatsight.engine.RouteRace` and
:class:`~chatmod.chatsight.engine.HttpBreaker`, which do none.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import trio

from chatmod.chatsight.engine import ROUTE_HTTP, ROUTE_WS, HttpBreaker, RouteRace
from chatmod.chatsight.http import ChatsightHttp, WorkerPool
from chatmod.chatsight.inflight import Answer, InFlight, Settle
from chatmod.chatsight.protocol import (
    MAX_METADATA_KEYS,
    SUBPROTOCOL,
    ChatsightResult,
    Reply,
    UsualAnswer,
    trim_metadata,
    ws_request,
)
from chatmod.chatsight.websocket import ChatsightSocket, SocketSettings, Unanswered
from chatmod.config.schema import Secret, setting
from chatmod.core.backoff import Backoff
from chatmod.core.intake import Room
from chatmod.core.interfaces import (
    BatchResultCallback,
    ResultCallback,
    StreamingEngine,
    VerdictsCallback,
)
from chatmod.core.model import JOIN_EVENT, Message, Verdict, new_verdict
from chatmod.errors import (
    AuthRejected,
    ConfigError,
    ConnectionLost,
    EngineError,
    EngineTimeout,
)

# What a verdict's callback is told: one verdict, or a list of them with their indexes.
_Told = TypeVar("_Told")

# A username check (someone joined): asked over HTTP, or answered from the per-name cache.
ROUTE_USERNAME = "username"
ROUTE_USERNAME_CACHED = "username-cache"
# Names whose check is remembered at most (the oldest forgotten first).
USERNAME_CACHE_SIZE = 10_000
DEFAULT_WS_URL = "wss://api.chatsight.ai:443/text/moderation"
# Bytes of requests a list's loop queues on the socket at once: the socket's queue then
# passes its high water mark (the sender waits) by at most this much, as it did by one
# request when each was queued alone.
QUEUE_TOGETHER_BYTES = 64 * 1024
DEFAULT_HTTP_URL = "https://api.chatsight.ai"
# Seconds between checks that the warm HTTP connections are still open. Chatsight does not
# document how long it keeps an idle connection; this bounds the set-ups it can cost.
HTTP_WARM_INTERVAL = 10.0
# The text of the one moderation request that asks whether the key is refused, after the
# websocket was cut right after opening (see ChatsightSocket).
KEY_CHECK_TEXT = "chatmod API key check"
# Seconds beyond every path's own deadline after which a message still held is failed (to
# the engine chain's fallback): a safety net, should some path ever lose its answer.
HELD_MARGIN = 5.0
# Seconds between checks for such messages while the engine holds none.
HELD_CHECK_INTERVAL = 1.0

# The websocket's and HTTP client's counters, listed at zero in statistics() so that their
# /metrics series exist before their first increment.
WS_COUNTERS = ("connect_attempts", "connect_failures", "auth_failures", "reconnects", "closed",
               "keepalive_timeouts", "requests_moved_on_close", "replies", "replies_failed",
               "replies_late", "replies_duplicate", "replies_unknown", "invalid_replies",
               "non_text_frames", "cuts_at_opening")
HTTP_COUNTERS = ("requests", "retries", "gave_up", "timeouts", "network_errors")


@dataclass(frozen=True)
class ChatsightConfig:
    """Chatsight's text moderation ([how it behaves](#chatsight)): the websocket, with the HTTP API
    as its fallback."""

    api_key: Secret = setting(help="the API key")
    ws_url: str = setting(DEFAULT_WS_URL, nonempty=True, help="the websocket API")
    http_url: str = setting(
        DEFAULT_HTTP_URL, nonempty=True,
        help="the HTTP API (POST /text/moderation), also the fallback")
    use_websocket: bool = setting(True, help="false: HTTP only")
    subprotocol: str = setting(SUBPROTOCOL, help="websocket subprotocol asked for; '' for none")
    verdict_timeout: float = setting(2.0, min=0.001, help="seconds before a ws request goes "
                                                           "over HTTP")
    max_in_flight: int = setting(1024, min=1, max=1_000_000, help="messages outstanding at most")
    username_cache_ttl: float = setting(
        3600.0, min=0.0, help="seconds a username check (beta: on a `join` record) is "
                              "remembered per name; `error` answers are not remembered")
    ping_interval: float = setting(
        10.0, min=0.01,
        help="seconds between websocket pings; a silent socket is closed within "
             "ping_interval + ping_timeout")
    ping_timeout: float = setting(5.0, min=0.01, help="seconds a ping may go unanswered")
    connect_timeout: float = setting(
        10.0, min=0.01, help="seconds for TCP, TLS and the websocket handshake")
    reconnect_initial: float = setting(
        0.5, min=0.001, help="seconds before the first reconnect; doubled per failure, jittered")
    reconnect_max: float = setting(30.0, min=0.001, help="longest wait between reconnects")
    auth_backoff: float = setting(300.0, min=0.001, help="seconds between websocket attempts "
                                                          "while the key is rejected")
    auth_cut_window: float = setting(1.0, min=0.0, help="a close this soon after the handshake "
                                                         "with no reply may be a refused key: "
                                                         "one HTTP request tells")
    http_concurrency: int = setting(32, min=1, max=10_000, help="HTTP requests at once")
    http_warm_connections: int = setting(
        16, min=0, max=10_000, help="HTTP connections kept open while the websocket works, so "
                                   "the messages a cut moves to HTTP do not wait for "
                                   "connection set-up (at most http_concurrency); 0: none")
    http_timeout: float = setting(5.0, min=0.001, help="seconds per HTTP request")
    http_retries: int = setting(
        2, min=0, max=20, help="retries after 5xx, 429 or a network error (never after 401/403)")
    http_max_retry_wait: float = setting(
        5.0, min=0.0, help="longest wait between retries, Retry-After included")
    http_deadline: float = setting(15.0, min=0.001, help="seconds the HTTP fallback may take "
                                                          "for one message, retries included")
    http_breaker_failures: int = setting(5, min=0, help="consecutive HTTP failures after which "
                                                        "messages skip HTTP; 0: never")
    http_breaker_cooldown: float = setting(5.0, min=0.0, help="seconds HTTP is skipped before "
                                                               "one request probes it again")
    send_metadata: bool = setting(True, help="send each message's metadata (20 keys at most)")

    def __post_init__(self) -> None:
        ws = urllib.parse.urlsplit(self.ws_url)
        if ws.scheme not in ("ws", "wss") or not ws.hostname:
            raise ConfigError(f"ws_url: expected a ws:// or wss:// URL, found {self.ws_url!r}")
        http = urllib.parse.urlsplit(self.http_url)
        if http.scheme not in ("http", "https") or not http.hostname:
            raise ConfigError(
                f"http_url: expected an http:// or https:// URL, found {self.http_url!r}")
        if self.reconnect_max < self.reconnect_initial:
            raise ConfigError("reconnect_max: expected a number >= reconnect_initial")


def _one_answer(on_result: ResultCallback) -> Answer:
    """A :data:`ResultCallback` as a batch's callback (the index ignored)."""
    def answer(index: int, result: Verdict | EngineError) -> None:
        on_result(result)
    return answer


def _context(message: Message) -> dict[str, str]:
    """The message's context sent as metadata: its id, source, channel and author (if any)."""
    # Spelled out: a comprehension over pairs costs twice as much, once per message.
    context = {}
    if message.id:
        context["chatmod_id"] = message.id
    if message.source:
        context["chatmod_source"] = message.source
    if message.channel:
        context["chatmod_channel"] = message.channel
    if message.author:
        context["chatmod_author"] = message.author
    return context


class ChatsightEngine(StreamingEngine[ChatsightConfig]):
    Config = ChatsightConfig
    # Every path is bounded: verdict_timeout on the socket, http_deadline over HTTP.
    enforces_own_timeout = True
    verdict_routes = (ROUTE_WS, ROUTE_HTTP)

    def __init__(
        self,
        name: str,
        config: ChatsightConfig,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, config)
        self.race = RouteRace(config.verdict_timeout)
        self.table = self.race.table  # read by tests
        self.breaker = HttpBreaker(config.http_breaker_failures, config.http_breaker_cooldown)
        self.socket = ChatsightSocket(
            SocketSettings(
                url=config.ws_url,
                api_key=config.api_key.reveal(),
                subprotocol=config.subprotocol or None,
                connect_timeout=config.connect_timeout,
                ping_interval=config.ping_interval,
                ping_timeout=config.ping_timeout,
                auth_cut_window=config.auth_cut_window,
                auth_backoff=config.auth_backoff,
            ),
            Backoff(config.reconnect_initial, config.reconnect_max),
            on_reply=self._on_reply,
            on_answers=self._on_answers,
            on_closed=self._on_closed,
            key_refused=self._http_refuses_key,
        )
        self._http_transport = http_transport
        self._http: ChatsightHttp | None = None
        self._tasks: trio.Nursery | None = None  # username checks, while the engine runs
        self._http_workers = WorkerPool(config.http_concurrency)  # HTTP's messages
        self._window = Room(config.max_in_flight)  # requests outstanding
        self.routes: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()  # the race's and breaker's are theirs
        self._metadata_warned = False
        self._http_auth_failing = False
        self._sent = trio.Event()  # wakes the overdue sweep when it had nothing to watch
        self._sweep_idle = False  # the sweep waits for _sent (set only then: once, not per send)
        # Messages not answered yet -> since when (oldest first): a websocket request's
        # in-flight entry (settled by :meth:`_settle_entry`), or a Settle (HTTP's messages).
        self._outstanding: dict[InFlight | Settle, float] = {}
        self._held_warned = False
        self._http_counts_before: Counter[str] = Counter()  # of earlier runs (restarts)
        # name -> (its username check's answer, remembered until)
        self._usernames: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._tasks is not None:
            raise RuntimeError(f"engine {self.name} is already running")
        config = self.config
        async with ChatsightHttp(
            config.http_url,
            config.api_key.reveal(),
            concurrency=config.http_concurrency,
            timeout=config.http_timeout,
            retries=config.http_retries,
            max_retry_wait=config.http_max_retry_wait,
            transport=self._http_transport,
        ) as http, trio.open_nursery() as http_workers, trio.open_nursery() as tasks:
            self._http, self._tasks = http, tasks
            self._http_workers.start_in(http_workers)
            tasks.start_soon(self._fail_held_too_long)
            try:
                if config.use_websocket:
                    tasks.start_soon(self._expire_overdue)
                    if config.http_warm_connections:
                        tasks.start_soon(self._keep_http_warm, http)
                    await self.socket.run(task_status=task_status)
                else:
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                http_workers.cancel_scope.cancel()  # they answer nothing from here on
                self._http, self._tasks = None, None
                self._http_counts_before.update(http.stats)  # counters survive a restart
                # Stopping must not leave a message waiting forever: each one still
                # outstanding fails, so the engine chain's fallback decides it.
                for held in list(self._outstanding):
                    self._fail_held(held, EngineError(f"engine {self.name} stopped"))

    async def _keep_http_warm(self, http: ChatsightHttp) -> None:
        """``http_warm_connections`` open, checked every :data:`HTTP_WARM_INTERVAL` (the
        server closes idle ones when it likes; those are replaced)."""
        while True:
            await http.warm(self.config.http_warm_connections)
            await trio.sleep(HTTP_WARM_INTERVAL)

    async def moderate(self, message: Message) -> Verdict:
        """One message, awaited (when chatsight is not the primary engine)."""
        done = trio.Event()
        outcome: list[Verdict | EngineError] = []

        def on_result(result: Verdict | EngineError) -> None:
            outcome.append(result)
            done.set()

        await self.submit(message, on_result)
        await done.wait()
        if isinstance(outcome[0], EngineError):
            raise outcome[0]
        return outcome[0]

    async def submit(self, message: Message, on_result: ResultCallback) -> None:
        """Send over the websocket if it is open, else over HTTP; ``on_result`` gets the
        first answer. Waits while ``max_in_flight`` requests are outstanding."""
        tasks = self._tasks
        if tasks is None:
            on_result(EngineError(f"engine {self.name} is not running"))
            return
        if message.event == JOIN_EVENT:
            tasks.start_soon(self._check_username, message, on_result)
            return
        window = self._window
        if window.free > 0:
            window.free -= 1
        else:
            await window.take(1)
        if self._start(message, _one_answer(on_result), 0, trio.current_time()):
            await self.socket.wait_drained()

    settles_in_lists = True

    async def submit_many(
        self, messages: Sequence[Message], on_result: BatchResultCallback,
        on_verdicts: VerdictsCallback | None = None,
    ) -> None:
        """:meth:`submit` for each message, in order, with one clock read while nothing
        waits (the websocket's deadlines need no finer time) and no coroutine per message;
        ``on_result(index, result)`` gets each first answer, or ``on_verdicts`` (when given)
        the verdicts of one read's replies together. Waits, as :meth:`submit` does,
        while ``max_in_flight`` requests are outstanding or the socket's queue is full; what
        was queued before the wait is being sent meanwhile. Cancelled during such a wait, the
        messages not reached yet get no answer (they were not taken, as with :meth:`submit`);
        each one reached gets exactly one."""
        now: float | None = None
        window, socket, race, outstanding = self._window, self.socket, self.race, \
            self._outstanding
        send_metadata = self.config.send_metadata
        # The usual messages' requests, queued together before the next wait (the socket
        # cannot close meanwhile: nothing else runs), and their entries.
        requests: list[bytes] = []
        entries: list[InFlight] = []
        requests_size = 0
        for index, message in enumerate(messages):
            tasks = self._tasks
            if tasks is None:
                on_result(index, EngineError(f"engine {self.name} is not running"))
                continue
            if message.event == JOIN_EVENT:
                tasks.start_soon(self._check_username, message,
                                 functools.partial(on_result, index))
                continue
            if window.free > 0:
                window.free -= 1
            else:
                if requests:
                    await self._queue_requests(entries, requests)
                    requests, entries, requests_size = [], [], 0
                await window.take(1)
                now = None
            if now is None:
                now = trio.current_time()
            if send_metadata and not message.metadata and socket.is_open:
                # The usual message, as :meth:`_start` sends it: its context is all its
                # metadata; the in-flight entry holds the answer (no callable per message).
                entry = race.sent_over_ws(message, now, socket.generation, None, on_result,
                                          index)
                entry.answers = on_verdicts
                outstanding[entry] = now
                entries.append(entry)
                request = ws_request(message.text, entry.reference, _context(message))
                requests.append(request)
                requests_size += len(request)
                if requests_size >= QUEUE_TOGETHER_BYTES:  # the socket's backpressure
                    await self._queue_requests(entries, requests)
                    requests, entries, requests_size = [], [], 0
                    now = None
                continue
            if requests:
                await self._queue_requests(entries, requests)
                requests, entries, requests_size = [], [], 0
                now = trio.current_time()  # the wait may have taken a while
            if self._start(message, on_result, index, now, on_verdicts):
                await socket.wait_drained()
                now = None
        if requests:
            await self._queue_requests(entries, requests)

    async def _queue_requests(self, entries: list[InFlight], requests: list[bytes]) -> None:
        """Queue the usual messages' ``requests`` (their ``entries`` made, in flight) on the
        socket together, waiting while its queue is full. Should the socket refuse them
        (its connection ended before the list's loop could see it), they go over HTTP as
        in :meth:`_start`."""
        if self._sweep_idle:
            self._sweep_idle = False
            self._sent.set()
        try:
            full = self.socket.queue_many(requests)
        except ConnectionLost:
            for entry in entries:
                self.race.not_sent(entry)
                self._over_http_soon(entry.message, self._entry_settle(entry),
                                     _context(entry.message), entry.deadline
                                     - self.config.verdict_timeout)
            return
        if full:
            await self.socket.wait_drained()

    def _start(self, message: Message, answer: Answer, index: int, now: float,
               answers: VerdictsCallback | None = None) -> bool:
        """Send ``message`` (its window slot taken) over the websocket, queued to be sent
        at ``now``, or over HTTP; its first answer goes to ``answer(index, ...)`` (or, a
        websocket reply's verdict, to ``answers`` with others of one read). True when
        the socket's queue is full: the caller waits for
        :meth:`ChatsightSocket.wait_drained` before sending more."""
        metadata: Mapping[str, Any] | None
        if message.metadata or not self.config.send_metadata:
            metadata, left_out = self._metadata(message)
            if left_out:  # here only: once per message, whichever routes it then takes
                self._metadata_trimmed(message, metadata, left_out)
        else:  # the usual message: its context is all its metadata (no call, no tuple)
            metadata = _context(message)
        socket = self.socket
        if self.race.route(socket.is_open) == ROUTE_WS:
            # The in-flight entry holds the answer: no callable per message.
            entry = self.race.sent_over_ws(message, now, socket.generation, None, answer, index)
            entry.answers = answers
            self._outstanding[entry] = now
            if self._sweep_idle:
                self._sweep_idle = False
                self._sent.set()
            try:
                return socket.queue(ws_request(message.text, entry.reference, metadata))
            except ConnectionLost:
                self.race.not_sent(entry)
                settle = self._entry_settle(entry)
        else:
            settle = self._settler(functools.partial(answer, index), now)
        self._over_http_soon(message, settle, metadata, now)
        return False

    def _over_http_soon(self, message: Message, settle: Settle,
                        metadata: Mapping[str, Any] | None, now: float) -> None:
        """``message`` to an HTTP worker, held from ``now`` (its deadline counted from it)."""
        if self._tasks is None:  # stopped while this message waited for its window slot
            settle(EngineError(f"engine {self.name} is not running"))
        else:
            self._http_workers.run_soon(self._over_http, message, settle, None, metadata,
                                        now + self.config.http_deadline)

    async def _check_username(self, message: Message, on_result: ResultCallback) -> None:
        """A join: Chatsight's username check for the name, cached per name. Its answer is
        the verdict (``reject``, ``allow``, ``undecided``, ``error``); a failed check is
        ``error`` (the policy's action for it, by default none), never a text verdict."""
        name = message.author or message.text
        now = trio.current_time()
        cached = self._usernames.get(name)
        if cached is not None and cached[1] > now:
            self._usernames.move_to_end(name)
            on_result(self._username_verdict(cached[0], ROUTE_USERNAME_CACHED))
            return
        http = self._http
        try:
            if http is None:
                raise EngineError(f"engine {self.name} is not running")
            answer = await http.check_username(name)
        except EngineError as exc:
            self.stats["username_errors"] += 1
            self.log.warning("username check failed: %s", exc)
            on_result(self._username_verdict("error", ROUTE_USERNAME))
            return
        self.stats[f"username_{answer}"] += 1
        if answer != "error" and self.config.username_cache_ttl > 0:
            self._usernames[name] = (answer, now + self.config.username_cache_ttl)
            self._usernames.move_to_end(name)
            if len(self._usernames) > USERNAME_CACHE_SIZE:
                self._usernames.popitem(last=False)
        on_result(self._username_verdict(answer, ROUTE_USERNAME))

    def _username_verdict(self, answer: str, route: str) -> Verdict:
        # Its own engine name: the verdict cache keeps only the primary's text verdicts.
        return Verdict(answer, None, f"{self.name}/username", route)

    def _settler(self, on_result: ResultCallback, now: float) -> Settle:
        """``on_result`` for the first answer only; frees the window slot with it. The
        message is held from ``now``."""
        settled = False

        def settle(result: Verdict | EngineError) -> bool:
            nonlocal settled
            if settled:
                return False
            settled = True
            self._outstanding.pop(settle, None)
            self._window.give_back(1)
            if isinstance(result, Verdict):
                self.routes[result.route] += 1
            on_result(result)
            return True

        self._outstanding[settle] = now
        return settle

    def _settle_entry(self, entry: InFlight, result: Verdict | EngineError) -> bool:
        """:meth:`_settler`'s settle for a websocket request's entry (made by :meth:`_start`):
        ``entry.answer`` gets the first answer only; frees the window slot with it."""
        if entry.settled:
            return False
        entry.settled = True
        del self._outstanding[entry]
        self._window.give_back(1)
        if isinstance(result, Verdict):
            self.routes[result.route] += 1
        entry.answer(entry.index, result)
        return True

    def _entry_settle(self, entry: InFlight) -> Settle:
        """The Settle of ``entry``, for the paths that need a callable (HTTP's)."""
        if entry.settle is not None:
            return entry.settle
        return functools.partial(self._settle_entry, entry)

    def _fail_held(self, held: InFlight | Settle, error: EngineError) -> None:
        """Answer ``held`` with ``error`` (if nothing answered it yet). A websocket request
        is given up first: it leaves the in-flight table (so a reply after this is a stray,
        counted as late) and its HTTP request, if one runs, is called off."""
        if isinstance(held, InFlight):
            self.race.given_up(held)
            if held.http_scope is not None:
                held.http_scope.cancel()
            self._settle_entry(held, error)
        else:
            held(error)

    @property
    def held_limit(self) -> float:
        """Seconds a message may be held before it is failed to the fallback: its websocket
        deadline, then HTTP twice (a racing request whose websocket error reply sends it
        over HTTP again), then a margin."""
        config = self.config
        return config.verdict_timeout + 2 * config.http_deadline + HELD_MARGIN

    async def _fail_held_too_long(self) -> None:
        """The safety net: every path has its own deadline, so a message held past
        :attr:`held_limit` lost its answer somewhere. It fails (the engine chain's fallback
        decides it; see :meth:`_fail_held`): counted, and logged once."""
        limit = self.held_limit
        outstanding = self._outstanding
        while True:
            oldest = next(iter(outstanding.values()), None)
            if oldest is None:
                await trio.sleep(HELD_CHECK_INTERVAL)
                continue
            await trio.sleep_until(oldest + limit)
            expired_before = trio.current_time() - limit
            expired = []
            for held, since in outstanding.items():  # oldest first
                if since > expired_before:
                    break
                expired.append(held)
            if not expired:
                continue
            self.stats["held_too_long"] += len(expired)
            if not self._held_warned:
                self._held_warned = True
                self.log.error(
                    "%d message(s) held over %g s with no answer (a defect): failed to the "
                    "fallback. Logged once; held_too_long counts them.", len(expired), limit)
            error = EngineError(f"no answer within {limit:g} s")
            for held in expired:
                self._fail_held(held, error)

    def _on_answers(self, answers: list[UsualAnswer]) -> Unanswered:
        """Each usual reply of one read answered (taken apart by the socket's
        reader: no reply or outcome object), in one loop: the entries taken from the table
        at once, the window's slots freed together, and the verdicts of the requests one
        list sent told together (``entry.answers``). Returns the strays, each with its
        status (the socket counts them). A callback that raises (a bug) is logged; the
        other replies are still answered."""
        strays: Unanswered = []
        found = self.race.ws_answered_many([answer[0] for answer in answers])
        name, outstanding, make = self.name, self._outstanding, new_verdict
        freed = 0
        told: list[tuple[int, Verdict]] = []  # for ``tell``: the verdicts of one list
        tell: VerdictsCallback | None = None
        for (reference, action, score, scores), entry in zip(answers, found, strict=True):
            if isinstance(entry, str):
                strays.append((reference, entry))
                continue
            if entry.racing and entry.http_scope is not None:
                entry.http_scope.cancel()
            verdict = make(action, score, name, ROUTE_WS, scores)
            if entry.settle is not None:
                self._answer_safely(entry.settle, verdict)
                continue
            if entry.settled:
                continue
            entry.settled = True  # :meth:`_settle_entry`, spelled out
            del outstanding[entry]
            freed += 1
            answers_of_entry = entry.answers
            if answers_of_entry is None:
                self._answer_safely(functools.partial(entry.answer, entry.index), verdict)
                continue
            if answers_of_entry is not tell:
                if tell is not None:
                    self._answer_safely(tell, told)
                    told = []
                tell = answers_of_entry
            told.append((entry.index, verdict))
        if tell is not None:
            self._answer_safely(tell, told)
        if freed:
            self.routes[ROUTE_WS] += freed
            self._window.give_back(freed)
        return strays

    def _answer_safely(self, answer: Callable[[_Told], object], told: _Told) -> None:
        """``answer(told)``; one that raises (a bug in the stage) is logged and counted."""
        try:
            answer(told)
        except Exception as exc:
            self.stats["answer_failures"] += 1
            self.log.error("a verdict's callback failed (a defect): %s", exc,
                           exc_info=self.log.isEnabledFor(logging.DEBUG))

    def _on_reply(self, reply: Reply) -> str:
        result = reply.result
        if result is not None:  # as the usual replies of a read are answered
            if reply.reference is None:
                return "unknown"
            strays = self._on_answers([(reply.reference, result.action, result.score,
                                        result.scores)])
            return strays[0][1] if strays else "answered"
        outcome = self.race.ws_reply(reply.reference, answered=False)
        if outcome.entry is not None:  # an error reply: this request goes over HTTP now
            self._to_http(outcome.entry)
        return outcome.status  # a stray's: the socket counts it by its status

    async def _http_refuses_key(self) -> bool:
        """One moderation request over HTTP with the same key: True only when it is refused
        (401/403). A network error, a 5xx or no answer within ``http_deadline`` says nothing
        about the key: False."""
        http = self._http
        if http is None:
            return False
        self.stats["key_checks"] += 1
        with trio.move_on_after(self.config.http_deadline):
            try:
                await http.moderate(KEY_CHECK_TEXT)
            except AuthRejected:
                return True
            except EngineError:
                return False
        return False

    def _on_closed(self, connection: int) -> int:
        lost = self.race.connection_closed(connection)
        for entry in lost:
            self._to_http(entry)
        return len(lost)

    async def _expire_overdue(self) -> None:
        """Unanswered websocket requests past ``verdict_timeout`` go over HTTP too. Sleeps
        until the earliest deadline; with nothing in flight, until something is sent."""
        while True:
            deadline = self.race.next_deadline()
            if deadline is None:
                self._sent = trio.Event()
                self._sweep_idle = True
                await self._sent.wait()
                continue
            await trio.sleep_until(deadline)
            for entry in self.race.overdue(trio.current_time()):
                self._to_http(entry)

    def _to_http(self, entry: InFlight) -> None:
        if self._tasks is not None:
            self._http_workers.run_soon(self._over_http, entry.message,
                                        self._entry_settle(entry), entry,
                                        self._metadata(entry.message)[0],
                                        trio.current_time() + self.config.http_deadline)

    async def _over_http(
        self, message: Message, settle: Settle, entry: InFlight | None,
        metadata: Mapping[str, Any] | None, deadline: float,
    ) -> None:
        """``message`` over HTTP (run by one of the HTTP workers), answered by ``deadline``
        (set when it was queued: the wait for a worker counts). A cancel scope (about a
        tenth of a request's CPU) only where a winning websocket reply may call the request
        off: ``entry`` is its websocket request."""
        if entry is None:
            self.race.http_answered(
                None, settle, await self._http_result(message, metadata, deadline))
            return
        held: InFlight | Settle = entry if entry.settle is None else settle
        if held not in self._outstanding:
            return  # its websocket reply won while it waited for a worker: nothing to send
        with trio.CancelScope() as scope:
            entry.http_scope = scope
            self.race.http_answered(
                entry, settle, await self._http_result(message, metadata, deadline))

    async def _http_result(
        self, message: Message, metadata: Mapping[str, Any] | None, deadline: float,
    ) -> Verdict | EngineError:
        try:
            return self._verdict(await self._via_http(message, metadata, deadline), ROUTE_HTTP)
        except EngineError as exc:
            return exc

    def _verdict(self, result: ChatsightResult, route: str) -> Verdict:
        return Verdict(result.action, result.score, self.name, route, result.scores)

    def _metadata(self, message: Message) -> tuple[Mapping[str, Any] | None, int]:
        """The metadata sent with ``message``: its context (so a keyword alert leads back to
        it), then as many of its own keys as fit in 20 (the first in sorted order); and how
        many of its own keys were left out."""
        if not self.config.send_metadata:
            return None, 0
        context = _context(message)
        metadata = message.metadata
        if not metadata:  # the common case: nothing to merge or trim
            return context, 0
        if len(metadata) + len(context) <= MAX_METADATA_KEYS:
            # Everything fits: one merge, no trimming; the context keys first, and theirs the
            # values when the message has keys of the same names.
            return {**context, **metadata, **context}, 0
        own = {k: v for k, v in metadata.items() if k not in context}
        kept, _ = trim_metadata(own, MAX_METADATA_KEYS - len(context))
        return {**context, **kept}, len(own) - len(kept)

    def _metadata_trimmed(
        self, message: Message, metadata: Mapping[str, Any] | None, left_out: int,
    ) -> None:
        self.stats["metadata_trimmed"] += 1
        if self._metadata_warned:
            return
        self._metadata_warned = True
        context = len(_context(message))
        self.log.warning(
            "message %s has %d metadata keys of its own: sent %d of them (the first in sorted "
            "order) with chatmod's %d context keys, left out %d (Chatsight's keyword add-on "
            "does not run with over %d keys). Warned once; metadata_trimmed counts such "
            "messages.", message.id, len(message.metadata), len(metadata or {}) - context,
            context, left_out, MAX_METADATA_KEYS)

    async def _via_http(
        self, message: Message, metadata: Mapping[str, Any] | None, deadline: float,
    ) -> ChatsightResult:
        http = self._http
        if http is None:
            raise EngineError("Chatsight engine is not running")
        breaker = self.breaker
        if not breaker.is_closed and not breaker.admit(trio.current_time()):
            # While Chatsight is down, waiting out retries for every message would only
            # delay the fallback's answer and pile up a backlog.
            raise EngineError("Chatsight HTTP is failing; skipped for now")
        try:
            result = await http.moderate(message.text, metadata, deadline=deadline)
        except EngineError as exc:
            self._http_failed()
            if isinstance(exc, AuthRejected) and not self._http_auth_failing:
                self._http_auth_failing = True
                self.log.error("%s; messages get the fallback's verdicts", exc)
            if isinstance(exc, EngineTimeout):
                raise EngineError("no HTTP answer within http_deadline "
                                  f"({self.config.http_deadline:g} s)") from None
            raise
        if self._http_auth_failing:
            self._http_auth_failing = False
            self.log.warning("Chatsight HTTP accepts the API key again")
        if breaker.succeeded():
            self.log.warning("Chatsight HTTP answers again")
        return result

    def _http_failed(self) -> None:
        breaker = self.breaker
        if breaker.failed(trio.current_time()):
            self.log.error("Chatsight HTTP failed %d times in a row; messages go straight to "
                           "the fallback, trying HTTP again every %g s",
                           breaker.failures, breaker.cooldown)

    def statistics(self) -> dict[str, float]:
        stats: dict[str, float] = {
            "in_flight": len(self.table),
            "ws_open": 1.0 if self.socket.is_open else 0.0,
        }
        running = self._tasks is not None
        if self.config.use_websocket:
            stats["connection_up.websocket"] = 1.0 if running and self.socket.is_open else 0.0
        stats["connection_up.http"] = 1.0 if running and self.breaker.is_closed else 0.0
        stats.update({f"route.{k}": v for k, v in self.routes.items()})
        if self.config.use_websocket:
            stats.update({f"ws.{k}": 0 for k in WS_COUNTERS})
            stats.update({f"ws.{k}": v for k, v in self.socket.stats.items()})
        stats.update(self.race.stats)
        stats.update(self.breaker.stats)
        stats.update(self.stats)
        stats.update({f"http.{k}": 0 for k in HTTP_COUNTERS})
        http_counts = Counter(self._http_counts_before)
        if self._http is not None:
            http_counts.update(self._http.stats)
        stats.update({f"http.{k}": v for k, v in http_counts.items()})
        return stats
