"""A local stand-in for the Chatsight API, written from its documents, with fault switches.

Run it with ``chatmod sandbox`` to try chatmod without an account, or start it inside tests
with :func:`run_sandbox`. The websocket server is written on wsproto directly (not a library
server) so it can misbehave the ways the real service may: cut sockets without a close frame,
stop answering while keeping the socket open, answer twice, answer garbage.

Verdicts are deterministic and explainable: a small word list by default, or the local model
(``verdicts="local"``) when the ``local`` extra is installed.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import orjson
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from chatmod.chatsight.protocol import (
    AUTH_HEADER,
    SUBPROTOCOL,
    TEXT_MODERATION_PATH,
    USERNAME_PATH,
)
from chatmod.http.server import HttpRequest, HttpResponse, serve_http
from chatmod.protocols.discuse import CHECK_PATH, CLIENT_ID_HEADER, CLIENT_SECRET_HEADER
from chatmod.sandbox.account import Account
from chatmod.sandbox.answers import (
    Judgement,
    ModelJudge,
    discuse_reply,
    error_body,
    make_judge,
    moderation_body,
    moderation_reply,
    username_reply,
)

log = logging.getLogger("chatmod.sandbox")

RECEIVE_SIZE = 65536
MAX_HTTP_BODY = 1024 * 1024
DEFAULT_API_KEY = "sandbox-key"
DEFAULT_DISCUSE_CLIENT_ID = "sandbox-client"
DEFAULT_DISCUSE_CLIENT_SECRET = "sandbox-secret"

@dataclass
class Faults:
    """Switches for misbehaviour; change them while the sandbox runs."""

    latency: tuple[float, float] = (0.0, 0.0)  # seconds, per reply, uniform in the range
    ws_delay: float = 0.0  # seconds more before each websocket reply (HTTP answers unaffected)
    cut_every: float = 0.0  # reset each websocket this many seconds after it opened; 0: never
    drop_rate: float = 0.0  # fraction of websocket requests never answered
    duplicate_rate: float = 0.0  # fraction answered twice
    garbage_rate: float = 0.0  # fraction preceded by a garbage frame
    auth_failure: Literal["cut", "401"] = "cut"  # how a wrong key is refused
    http_error_rate: float = 0.0  # fraction of HTTP requests answered 503
    http_429_rate: float = 0.0  # fraction answered 429 with Retry-After
    retry_after: float = 1.0


GARBAGE_FRAMES: tuple[TextMessage | BytesMessage, ...] = (
    TextMessage(data="this is not json {"),
    BytesMessage(data=b"\x00\x01binary\xff"),
    TextMessage(data='{"api": "chatsight-lang-text", "success": true, "response": {"metadata": '
             '{"self_reference": "no-such-reference"}, "suggestedAction": ["pass", 0.1]}}'),
    TextMessage(data='["valid json", "wrong shape"]'),
)

HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass
class Sandbox:
    """The sandbox's state: key, faults, verdicts and counters. Serve with :meth:`serve`."""

    api_key: str = DEFAULT_API_KEY
    discuse_client_id: str = DEFAULT_DISCUSE_CLIENT_ID
    discuse_client_secret: str = DEFAULT_DISCUSE_CLIENT_SECRET
    faults: Faults = field(default_factory=Faults)
    verdicts: str = "auto"  # "auto" (local model if installed), "local" or "wordlist"
    seed: int = 0
    stats: Counter[str] = field(default_factory=Counter)
    #: Names the username check rejects (exactly, case-folded); every other name is allowed.
    rejected_usernames: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.judge = make_judge(self.verdicts)
        self._threaded_judge = isinstance(self.judge, ModelJudge)
        self.rng = random.Random(self.seed)
        self.account = Account(self._judge, moderation_body, stats=self.stats)
        # Routes of the HTTP server; other Chatsight and Discuse routes are added here.
        self.http_routes: dict[tuple[str, str], HttpHandler] = {
            ("POST", TEXT_MODERATION_PATH): self._http_moderate,
            ("POST", CHECK_PATH): self._discuse_check,
            ("POST", USERNAME_PATH): self._username_check,
        }
        self.ws_port = 0
        self.http_port = 0
        self._answering = trio.Event()
        self._answering.set()

    @property
    def half_open(self) -> bool:
        """True while websockets neither read nor answer but stay open (a half-open link)."""
        return not self._answering.is_set()

    @half_open.setter
    def half_open(self, value: bool) -> None:
        if value and self._answering.is_set():
            self._answering = trio.Event()
        elif not value:
            self._answering.set()

    async def _until_answering(self) -> None:
        while not self._answering.is_set():
            await self._answering.wait()

    async def _judge(self, texts: list[str]) -> list[Judgement]:
        if self._threaded_judge:
            return await trio.to_thread.run_sync(self.judge, texts)
        return self.judge(texts)

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self.rng.random() < rate

    async def serve(
        self, host: str = "127.0.0.1", ws_port: int = 0, http_port: int = 0, *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve websocket and HTTP on two ports (0: any free one, see ``ws_port``)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.account.run)
            ws = await nursery.start(partial(trio.serve_tcp, host=host), self._ws_connection,
                                     ws_port)
            self.http_port = await nursery.start(partial(
                serve_http, self._http_route, host, http_port, max_body=MAX_HTTP_BODY))
            self.ws_port = ws[0].socket.getsockname()[1]
            task_status.started()

    def ws_url(self, host: str = "127.0.0.1") -> str:
        return f"ws://{host}:{self.ws_port}{TEXT_MODERATION_PATH}"

    def http_url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.http_port}"

    async def _ws_connection(self, stream: trio.SocketStream) -> None:
        self.stats["ws_connections"] += 1
        conn = WSConnection(ConnectionType.SERVER)
        reset = True  # unless the peer closed in good order
        try:
            outcome = await self._ws_handshake(stream, conn)
            if outcome == "accepted":
                async with trio.open_nursery() as nursery:
                    if self.faults.cut_every > 0:
                        nursery.start_soon(self._cut_after, nursery.cancel_scope)
                    await self._ws_serve_messages(stream, conn, nursery)
                    reset = False
                    nursery.cancel_scope.cancel()  # replies still waiting, the cut timer
            else:
                reset = outcome == "cut"
        except* (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError,
                 LocalProtocolError):
            # except*: a peer gone while replies wait is raised from inside the nursery, in a
            # group; it ends this connection only, never the sandbox.
            pass
        finally:
            await _close(stream, reset=reset)

    async def _cut_after(self, scope: trio.CancelScope) -> None:
        await trio.sleep(self.faults.cut_every)
        self.stats["ws_cuts"] += 1
        scope.cancel()

    async def _ws_handshake(
        self, stream: trio.SocketStream, conn: WSConnection
    ) -> Literal["accepted", "rejected", "cut"]:
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return "rejected"
            conn.receive_data(data)
            for event in conn.events():
                if not isinstance(event, Request):
                    continue
                headers = {k.decode().lower(): v.decode() for k, v in event.extra_headers}
                if event.target.split("?")[0] != TEXT_MODERATION_PATH:
                    await stream.send_all(conn.send(RejectConnection(status_code=404)))
                    return "rejected"
                if headers.get(AUTH_HEADER) != self.api_key:
                    self.stats["ws_auth_rejected"] += 1
                    if self.faults.auth_failure == "401":
                        await stream.send_all(conn.send(RejectConnection(status_code=401)))
                        return "rejected"
                    # As documented: the connection opens and is terminated immediately.
                    await stream.send_all(conn.send(AcceptConnection(subprotocol=None)))
                    return "cut"
                subprotocol = SUBPROTOCOL if SUBPROTOCOL in event.subprotocols else None
                await stream.send_all(conn.send(AcceptConnection(subprotocol=subprotocol)))
                return "accepted"

    async def _ws_serve_messages(
        self, stream: trio.SocketStream, conn: WSConnection, nursery: trio.Nursery
    ) -> None:
        """Answer requests until the peer closes (then return) or the connection is cut."""
        send_lock = trio.Lock()

        async def send(data: bytes) -> None:
            async with send_lock:
                await stream.send_all(data)

        fragments: list[str] = []
        while True:
            await self._until_answering()
            out: list[bytes] = []
            requests: list[tuple[str, str | None, Any]] = []
            for event in conn.events():
                if isinstance(event, TextMessage):
                    fragments.append(event.data)
                    if event.message_finished:
                        requests.append(self._read_request("".join(fragments), out, conn))
                        fragments.clear()
                elif isinstance(event, Ping):
                    out.append(conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    await send(b"".join(out) + conn.send(event.response()))
                    return
                elif isinstance(event, BytesMessage):
                    self.stats["ws_binary_ignored"] += 1
            valid = [request for request in requests if request[1] != "\0"]
            if valid:
                judged = await self._judge([text for text, _, _ in valid])
                for (text, reference, metadata), (action, probability) in zip(
                        valid, judged, strict=True):
                    self.account.moderated(text, action, metadata)
                    self._queue_reply(moderation_reply(action, probability, reference),
                                      out, conn, send, nursery)
            if out:
                await send(b"".join(out))
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                return
            conn.receive_data(data)

    def _read_request(
        self, raw: str, out: list[bytes], conn: WSConnection
    ) -> tuple[str, str | None, Any]:
        self.stats["ws_requests"] += 1
        try:
            payload = orjson.loads(raw)
            text = payload["sample"]
            reference = payload.get("reference")
            if not isinstance(text, str):
                raise TypeError("sample")
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            out.append(conn.send(TextMessage(data=error_body("invalid payload").decode())))
            return "", "\0", None
        return text, None if reference is None else str(reference), payload.get("metadata")

    def _queue_reply(
        self, reply: bytes, out: list[bytes], conn: WSConnection,
        send: Callable[[bytes], Awaitable[None]], nursery: trio.Nursery,
    ) -> None:
        faults = self.faults
        if self._chance(faults.drop_rate):
            self.stats["ws_dropped"] += 1
            return
        frames: list[bytes] = []
        if self._chance(faults.garbage_rate):
            # In turn, not at random: every kind of garbage is sent once in four, so a test
            # that sees a few garbage frames sees each kind.
            kind = self.stats["ws_garbage"] % len(GARBAGE_FRAMES)
            self.stats["ws_garbage"] += 1
            frames.append(conn.send(GARBAGE_FRAMES[kind]))
        frame = conn.send(TextMessage(data=reply.decode()))
        frames.append(frame)
        if self._chance(faults.duplicate_rate):
            self.stats["ws_duplicated"] += 1
            frames.append(frame)
        self.stats["ws_replies"] += 1
        low, high = faults.latency
        delay = (self.rng.uniform(low, high) if high > 0 else 0.0) + faults.ws_delay
        if delay <= 0:
            out.extend(frames)
        else:
            nursery.start_soon(self._send_later, delay, frames, send)

    async def _send_later(
        self, delay: float, frames: list[bytes], send: Callable[[bytes], Awaitable[None]]
    ) -> None:
        await trio.sleep(delay)
        await self._until_answering()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await send(b"".join(frames))

    async def _http_route(self, request: HttpRequest) -> HttpResponse:
        self.stats["http_requests"] += 1
        method, path, headers = request.method, request.path, request.headers
        handler = self.http_routes.get((method, path)) or self.account.route(method, path)
        if handler is None:
            return HttpResponse(404, error_body(f"no route {method} {path}"))
        if path == CHECK_PATH:  # Discuse: organisation id and project secret
            authorized = (headers.get(CLIENT_ID_HEADER) == self.discuse_client_id
                          and headers.get(CLIENT_SECRET_HEADER) == self.discuse_client_secret)
        else:
            authorized = headers.get(AUTH_HEADER) == self.api_key
        if not authorized:
            self.stats["http_auth_rejected"] += 1
            return HttpResponse(401, error_body("Unauthorized"))
        if self._chance(self.faults.http_429_rate):
            self.stats["http_429"] += 1
            return HttpResponse(429, error_body("slow down"),
                                headers=(("retry-after", f"{self.faults.retry_after:g}"),))
        if self._chance(self.faults.http_error_rate):
            self.stats["http_5xx"] += 1
            return HttpResponse(503, error_body("Service Unavailable"))
        return await handler(request)

    async def _discuse_check(self, request: HttpRequest) -> HttpResponse:
        try:
            media = orjson.loads(request.body)["request"]["media"]
            text = media.get("text") or ""
            images = list(media.get("image_url") or [])
            gifs = list(media.get("gif_url") or [])
        except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            return HttpResponse(400, orjson.dumps({"detail": "invalid request"}))
        ((_action, probability),) = await self._judge([text])
        self.stats["discuse_checked"] += 1
        return HttpResponse(200, discuse_reply(probability, images, gifs))

    async def _username_check(self, request: HttpRequest) -> HttpResponse:
        try:
            name = orjson.loads(request.body)["username"]
            if not isinstance(name, str):
                raise TypeError("username")
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return HttpResponse(400, error_body("body must be {\"username\": \"<name>\"}"))
        answer = "reject" if name.casefold() in self.rejected_usernames else "allow"
        self.stats[f"username_{answer}"] += 1
        return HttpResponse(200, username_reply(answer))

    async def _http_moderate(self, request: HttpRequest) -> HttpResponse:
        try:
            payload = orjson.loads(request.body)
            text = payload["sample"]
            if not isinstance(text, str):
                raise TypeError("sample")
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return HttpResponse(400, error_body("body must be {\"sample\": \"<text>\"}"))
        low, high = self.faults.latency
        if high > 0:
            await trio.sleep(self.rng.uniform(low, high))
        ((action, probability),) = await self._judge([text])
        self.stats["http_moderated"] += 1
        self.account.moderated(text, action, payload.get("metadata"))
        return HttpResponse(200, moderation_reply(action, probability, None))


async def _close(stream: trio.SocketStream, *, reset: bool = False) -> None:
    if reset:
        # SO_LINGER 0: the peer gets a reset, no close frame and no orderly FIN.
        with contextlib.suppress(OSError):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with trio.CancelScope(shield=True):
        await stream.aclose()
