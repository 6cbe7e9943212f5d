"""The Chatsight engine: one persistent websocket, with Chatsight's HTTP API as its fallback.

Each message is sent over the websocket when it is open, and waits ``verdict_timeout``
seconds for its reply. It goes over HTTP instead when the socket is down, when the socket
closes while the message is in flight (all such messages move at once), when the reply is an
error, or when the reply is late; in that last case a websocket reply arriving before the
HTTP answer still wins. Whichever answers first decides; later replies are counted, never used.
When HTTP fails too, the engine raises and the engine chain's fallback answers.
"""

from __future__ import annotations

import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from chatmod.backoff import Backoff
from chatmod.chatsight_http import AuthRejected, ChatsightHttp
from chatmod.chatsight_protocol import SUBPROTOCOL, ChatsightResult, trim_metadata, ws_request
from chatmod.chatsight_ws import ChatsightSocket, SocketClosed, SocketSettings
from chatmod.errors import ConfigError, EngineError
from chatmod.inflight import InFlight, InFlightTable
from chatmod.interfaces import Engine
from chatmod.model import Message, Verdict
from chatmod.schema import Secret, setting

ROUTE_WS = "ws"
ROUTE_HTTP = "http"
DEFAULT_WS_URL = "wss://api.chatsight.ai:443/text/moderation"
DEFAULT_HTTP_URL = "https://api.chatsight.ai"


@dataclass(frozen=True)
class ChatsightConfig:
    api_key: Secret
    ws_url: str = setting(DEFAULT_WS_URL, nonempty=True)
    http_url: str = setting(DEFAULT_HTTP_URL, nonempty=True)
    use_websocket: bool = setting(True, help="false: HTTP only")
    subprotocol: str = setting(SUBPROTOCOL, help="websocket subprotocol asked for; '' for none")
    verdict_timeout: float = setting(2.0, min=0.001, help="seconds before a ws request goes "
                                                           "over HTTP")
    max_in_flight: int = setting(1024, min=1, max=1_000_000)
    ping_interval: float = setting(10.0, min=0.01)
    ping_timeout: float = setting(5.0, min=0.01)
    connect_timeout: float = setting(10.0, min=0.01)
    reconnect_initial: float = setting(0.5, min=0.001)
    reconnect_max: float = setting(30.0, min=0.001)
    auth_backoff: float = setting(300.0, min=0.001, help="seconds between websocket attempts "
                                                          "while the key is rejected")
    auth_cut_window: float = setting(1.0, min=0.0, help="a close this soon after the handshake "
                                                         "with no reply is an auth failure")
    http_concurrency: int = setting(32, min=1, max=10_000)
    http_timeout: float = setting(5.0, min=0.001)
    http_retries: int = setting(2, min=0, max=20)
    http_max_retry_wait: float = setting(5.0, min=0.0)
    http_deadline: float = setting(15.0, min=0.001, help="seconds the HTTP fallback may take "
                                                          "for one message, retries included")
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


class ChatsightEngine(Engine):
    Config = ChatsightConfig
    config: ChatsightConfig
    # Every path is bounded: verdict_timeout on the socket, http_deadline over HTTP.
    enforces_own_timeout = True

    def __init__(
        self,
        name: str,
        config: ChatsightConfig,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(name, config)
        self.table = InFlightTable()
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
            self.table,
            Backoff(config.reconnect_initial, config.reconnect_max),
        )
        self._http_transport = http_transport
        self._http: ChatsightHttp | None = None
        self._window = trio.Semaphore(config.max_in_flight)
        self.routes: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self._metadata_warned = False
        self._http_auth_failing = False
        self._running = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._running:
            raise RuntimeError(f"engine {self.name} is already running")
        self._running = True
        config = self.config
        async with ChatsightHttp(
            config.http_url,
            config.api_key.reveal(),
            concurrency=config.http_concurrency,
            timeout=config.http_timeout,
            retries=config.http_retries,
            max_retry_wait=config.http_max_retry_wait,
            transport=self._http_transport,
        ) as http:
            self._http = http
            try:
                if config.use_websocket:
                    await self.socket.run(task_status=task_status)
                else:
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._http = None
                self._running = False

    async def moderate(self, message: Message) -> Verdict:
        metadata = self._metadata(message)
        async with self._window:
            if self.socket.is_open:
                answered = await self._via_websocket(message, metadata)
                if answered is not None:
                    return self._verdict(*answered)
            return self._verdict(await self._via_http(message, metadata), ROUTE_HTTP)

    def _verdict(self, result: ChatsightResult, route: str) -> Verdict:
        self.routes[route] += 1
        return Verdict(result.action, result.score, self.name, route, result.scores)

    def _metadata(self, message: Message) -> Mapping[str, Any] | None:
        if not self.config.send_metadata or not message.metadata:
            return None
        metadata, trimmed = trim_metadata(message.metadata)
        if trimmed:
            self.stats["metadata_trimmed"] += 1
            if not self._metadata_warned:
                self._metadata_warned = True
                self.log.warning(
                    "message %s has %d metadata keys; sending the first 20 in sorted order "
                    "(with more, Chatsight's keyword add-on would not run). Warned once.",
                    message.id, len(message.metadata))
        return metadata

    async def _via_websocket(
        self, message: Message, metadata: Mapping[str, Any] | None
    ) -> tuple[ChatsightResult, str] | None:
        """The websocket's answer, or None when the message should go over HTTP now."""
        deadline = trio.current_time() + self.config.verdict_timeout
        entry = self.table.add(message, deadline, self.socket.generation)
        try:
            await self.socket.send(ws_request(message.text, entry.reference, metadata).decode())
        except SocketClosed:
            self.table.abandon(entry)
            return None
        with trio.move_on_at(deadline):
            await entry.done.wait()
        if entry.result is not None:
            return entry.result, ROUTE_WS
        if entry.done.is_set():  # the socket closed, or the reply was an error
            self.stats["ws_failed_" + ("closed" if entry.failure == "websocket closed"
                                       else "error_reply")] += 1
            return None
        self.stats["ws_timeouts"] += 1
        return await self._race_http(entry, message, metadata)

    async def _race_http(
        self, entry: InFlight, message: Message, metadata: Mapping[str, Any] | None
    ) -> tuple[ChatsightResult, str]:
        """HTTP for an overdue request, while its websocket reply may still win."""
        winner: tuple[ChatsightResult, str] | None = None
        failure: EngineError | None = None

        async def over_http(scope: trio.CancelScope) -> None:
            nonlocal winner, failure
            try:
                result = await self._via_http(message, metadata)
            except EngineError as exc:
                failure = exc
            else:
                winner = winner or (result, ROUTE_HTTP)
            scope.cancel()

        async def late_reply(scope: trio.CancelScope) -> None:
            nonlocal winner
            await entry.done.wait()
            if entry.result is not None:
                winner = winner or (entry.result, ROUTE_WS)
                scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(over_http, nursery.cancel_scope)
            nursery.start_soon(late_reply, nursery.cancel_scope)
        self.table.abandon(entry)
        if winner is not None:
            return winner
        assert failure is not None
        raise failure

    async def _via_http(
        self, message: Message, metadata: Mapping[str, Any] | None
    ) -> ChatsightResult:
        http = self._http
        if http is None:
            raise EngineError("Chatsight engine is not running")
        deadline = self.config.http_deadline
        try:
            with trio.fail_after(deadline):
                result = await http.moderate(message.text, metadata)
        except trio.TooSlowError:
            raise EngineError(f"no HTTP answer within http_deadline ({deadline:g} s)") from None
        except AuthRejected as exc:
            if not self._http_auth_failing:
                self._http_auth_failing = True
                self.log.error("%s; messages get the fallback's verdicts", exc)
            raise
        if self._http_auth_failing:
            self._http_auth_failing = False
            self.log.warning("Chatsight HTTP accepts the API key again")
        return result

    def statistics(self) -> dict[str, float]:
        stats: dict[str, float] = {
            "in_flight": len(self.table),
            "ws_open": 1.0 if self.socket.is_open else 0.0,
        }
        stats.update({f"route.{k}": v for k, v in self.routes.items()})
        stats.update({f"ws.{k}": v for k, v in self.socket.stats.items()})
        stats.update(self.stats)
        if self._http is not None:
            stats.update({f"http.{k}": v for k, v in self._http.stats.items()})
        return stats
