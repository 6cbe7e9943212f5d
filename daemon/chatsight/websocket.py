"""The Chatsight websocket: one persistent connection, one reader task, keepalive, reconnects.

Each reply is handed to ``on_reply`` (the engine matches it to its request). When the
connection closes (close frame, reset, or a keepalive that goes unanswered), ``on_closed``
is told which connection ended, so every request still in flight on it can go over HTTP.

Chatsight refuses a key by cutting the connection right after the handshake (or with a
401/403 on upgrade). A cut like that is also what a server restart, a proxy recycling
connections, an idle timeout or a flaky link look like, so it is only a suspicion: one HTTP
request with the same key (``key_refused``) settles it. A 401/403 there means the key: logged
once, and the next attempt waits ``auth_backoff`` seconds. Anything else is a transient cut:
reconnect with the normal backoff.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from chatmod.chatsight.protocol import (
    AUTH_HEADER,
    ChatsightResult,
    Reply,
    UsualAnswer,
    read_ws_reply,
)
from chatmod.chatsight.ws_client import (
    ABNORMAL_CLOSURE,
    WsConnection,
    WsStream,
    WsTarget,
)
from chatmod.core.backoff import Backoff
from chatmod.errors import ConnectionLost, HandshakeFailed, ProtocolError, UpgradeRejected

log = logging.getLogger("chatmod.engine.chatsight.ws")

# Seconds a graceful close may take before the socket is simply closed.
DISCONNECT_TIMEOUT = 1.0
# The peer named in the errors this module raises.
PEER = "chatsight websocket"


# Asks Chatsight over HTTP whether it refuses the API key: True only for a 401/403. It must
# bound its own time (a network error or a timeout is not a refusal: False).
KeyCheck = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class SocketSettings:
    url: str
    api_key: str
    subprotocol: str | None
    connect_timeout: float
    ping_interval: float
    ping_timeout: float
    auth_cut_window: float  # a close this soon after opening, with no reply, may be a refused key
    auth_backoff: float


#: What a batch of usual replies' handler says of those it did not answer: each one's
#: reference and outcome (a stray's status). Nearly always empty.
Unanswered = list[tuple[str, str]]


def _one_by_one(on_reply: Callable[[Reply], str]) -> Callable[[list[UsualAnswer]], Unanswered]:
    """An ``on_answers`` that hands each usual reply's answer to ``on_reply`` as its Reply."""
    def on_answers(answers: list[UsualAnswer]) -> Unanswered:
        unanswered = []
        for reference, action, score, scores in answers:
            outcome = on_reply(Reply(reference, ChatsightResult(action, score, scores)))
            if outcome != "answered":
                unanswered.append((reference, outcome))
        return unanswered
    return on_answers


class ChatsightSocket:
    """Keeps one websocket open and hands its replies to ``on_reply``."""

    def __init__(
        self,
        settings: SocketSettings,
        backoff: Backoff,
        on_reply: Callable[[Reply], str],
        on_closed: Callable[[int], int],
        key_refused: KeyCheck,
        on_answers: Callable[[list[UsualAnswer]], Unanswered] | None = None,
    ) -> None:
        self.settings = settings
        self.backoff = backoff
        self.on_reply = on_reply  # returns how the reply was used, for the counters
        # The usual replies of one read, taken apart, at once (``on_reply`` of each one's
        # Reply when not given).
        self.on_answers = on_answers if on_answers is not None else _one_by_one(on_reply)
        self.on_closed = on_closed  # returns how many requests it moved to HTTP
        self.key_refused = key_refused  # asked after a cut right after opening
        self.generation = 0  # increases with every connection; in-flight entries carry it
        self.stats: Counter[str] = Counter()
        self._target = WsTarget.from_url(settings.url)
        self._ws: WsConnection | None = None
        self._auth_failing = False
        self._first_attempt_done = trio.Event()

    @property
    def is_open(self) -> bool:
        return self._ws is not None

    async def send(self, payload: str | bytes) -> None:
        """Queue one request (``bytes``: UTF-8 JSON); :class:`ConnectionLost` if there is no open
        connection. A request queued when the connection closes is failed like one sent
        (through ``on_closed``)."""
        ws = self._ws
        if ws is None:
            raise ConnectionLost("websocket not connected", peer=PEER)
        try:
            await ws.send_text(payload)
        except ConnectionLost:
            raise ConnectionLost("websocket closed", peer=PEER) from None

    def queue(self, payload: bytes) -> bool:
        """:meth:`send` without waiting: queue one request (UTF-8 JSON). True when too much is
        queued: the caller must then await :meth:`wait_drained` before queueing more.
        :class:`ConnectionLost` if there is no open connection."""
        return self.queue_many([payload])

    def queue_many(self, payloads: list[bytes]) -> bool:
        """:meth:`queue` for each of ``payloads``, at once."""
        ws = self._ws
        if ws is None:
            raise ConnectionLost("websocket not connected", peer=PEER)
        try:
            return ws.queue_texts(payloads)
        except ConnectionLost:
            raise ConnectionLost("websocket closed", peer=PEER) from None

    async def wait_drained(self) -> None:
        """Until the connection's writer took what is queued (at once when it closed)."""
        ws = self._ws
        if ws is not None:
            await ws.wait_drained()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect, until cancelled. Ready once the first attempt ended, so
        early messages use the socket when it can be had."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._connect_forever)
            await self._first_attempt_done.wait()
            task_status.started()

    async def _connect_forever(self) -> None:
        while True:
            delay = await self._connect_once()
            self._first_attempt_done.set()
            log.debug("reconnecting in %.2f s", delay)
            await trio.sleep(delay)
            self.stats["reconnects"] += 1

    async def _connect_once(self) -> float:
        """One connection from open to close; returns how long to wait before the next."""
        settings = self.settings
        self.stats["connect_attempts"] += 1
        stream: WsStream | None = None
        try:
            with trio.fail_after(settings.connect_timeout):
                stream = await self._target.open_stream()
                ws = await WsConnection.handshake(
                    stream, self._target,
                    headers=[(AUTH_HEADER.encode(), settings.api_key.encode())],
                    subprotocols=[settings.subprotocol] if settings.subprotocol else [],
                )
            return await self._serve(ws)
        except UpgradeRejected as exc:
            if exc.status in (401, 403):
                return self._auth_failed(f"HTTP {exc.status} on upgrade")
            return self._connect_failed(str(exc))
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, HandshakeFailed) as exc:
            return self._connect_failed(_describe(exc))
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _serve(self, ws: WsConnection) -> float:
        """Read replies until the connection closes; returns the delay before reconnecting."""
        self.generation += 1
        generation = self.generation
        opened_at = trio.current_time()
        replies_before = self.stats["replies"]
        keepalive_failed = False

        async def keep_alive(scope: trio.CancelScope) -> None:
            nonlocal keepalive_failed
            keepalive_failed = not await self._keep_alive(ws)
            if keepalive_failed:
                scope.cancel()

        self._ws = ws
        self._first_attempt_done.set()
        if not self._auth_failing:
            log.info("websocket connected to %s", self.settings.url)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_alive, nursery.cancel_scope)
                nursery.start_soon(ws.write)
                await ws.read(self._handle_text, self._handle_binary, self._handle_texts)
                nursery.cancel_scope.cancel()
            with trio.move_on_after(DISCONNECT_TIMEOUT):
                await ws.close()
        finally:
            ws.ended()  # a sender waiting for the writer (backpressure) goes on now
            self._ws = None
            lost = self.on_closed(generation)
            self.stats["requests_moved_on_close"] += lost
        lifetime = trio.current_time() - opened_at
        got_replies = self.stats["replies"] > replies_before
        how = "no pong" if keepalive_failed else _close_reason(ws)
        cut_at_opening = (not keepalive_failed and not got_replies
                          and lifetime < self.settings.auth_cut_window)
        if cut_at_opening:
            # How Chatsight refuses a key, but also how any transient cut looks: ask.
            self.stats["cuts_at_opening"] += 1
            if await self.key_refused():
                return self._auth_failed(f"connection cut {lifetime:.2f} s after the "
                                         "handshake, and the HTTP API refuses the key too")
            how += ", before any reply; the HTTP API does not refuse the key, so no auth failure"
        if self._auth_failing:
            log.info("the API key is accepted again: reconnecting the websocket with the "
                     "normal backoff" if cut_at_opening else
                     "websocket accepted again: the API key works")
            self._auth_failing = False
        if got_replies:
            self.backoff.reset()
        self.stats["closed"] += 1
        delay = self.backoff.next_delay()
        log.warning("websocket closed after %.2f s (%s); %d request(s) moved to HTTP; "
                    "reconnecting in %.2f s", lifetime, how, lost, delay)
        return delay

    def _handle_text(self, data: str) -> None:
        """One reply (a frame wsproto parsed): as one read's replies are handled."""
        self._handle_texts([data])

    def _handle_texts(self, texts: list[str]) -> None:
        """:meth:`_handle_text` for each reply of one read: the usual replies handed to
        ``on_answers`` together (those before another kind of reply first, so the replies
        are settled in the order they came) and counted once."""
        on_reply, stats = self.on_reply, self.stats
        answers: list[UsualAnswer] = []
        for data in texts:
            try:
                read = read_ws_reply(data)
            except ProtocolError as exc:
                stats["invalid_replies"] += 1
                log.debug("ignored an invalid reply (%s): %.120r", exc, data)
                continue
            if isinstance(read, Reply):
                if answers:
                    self._answer(answers)
                    answers = []
                outcome = on_reply(read)
                stats["replies"] += 1
                if outcome != "answered":
                    stats[f"replies_{outcome}"] += 1
                    log.debug("reply for reference %r: %s", read.reference, outcome)
            else:  # the usual reply
                answers.append(read)
        if answers:
            self._answer(answers)

    def _answer(self, answers: list[UsualAnswer]) -> None:
        stats = self.stats
        stats["replies"] += len(answers)
        for reference, outcome in self.on_answers(answers):
            stats[f"replies_{outcome}"] += 1
            log.debug("reply for reference %r: %s", reference, outcome)

    def _handle_binary(self, data: bytes) -> None:
        self.stats["non_text_frames"] += 1
        log.debug("ignored a binary frame of %d bytes", len(data))

    async def _keep_alive(self, ws: WsConnection) -> bool:
        """Ping every ``ping_interval``; False when a pong does not come in ``ping_timeout``
        (a half-open socket), True when the connection closed anyway."""
        settings = self.settings
        while True:
            await trio.sleep(settings.ping_interval)
            if not ws.is_open:
                return True
            with trio.move_on_after(settings.ping_timeout) as waited:
                await ws.ping()
            if waited.cancelled_caught:
                self.stats["keepalive_timeouts"] += 1
                return False

    def _auth_failed(self, how: str) -> float:
        self.stats["auth_failures"] += 1
        if not self._auth_failing:
            self._auth_failing = True
            log.error("Chatsight rejected the API key (%s); retrying the websocket every %g s, "
                      "verdicts come from the HTTP API or the fallback meanwhile",
                      how, self.settings.auth_backoff)
        return self.settings.auth_backoff

    def _connect_failed(self, reason: str) -> float:
        self.stats["connect_failures"] += 1
        delay = self.backoff.next_delay()
        log.warning("websocket connect failed (%s); retrying in %.1f s", reason, delay)
        return delay


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if cause is not None and str(cause):
        text = f"{text}: {cause}"
    return text


def _close_reason(ws: WsConnection) -> str:
    if ws.close_code == ABNORMAL_CLOSURE:
        return "no close frame (1006)"
    return f"close frame {ws.close_code}"
