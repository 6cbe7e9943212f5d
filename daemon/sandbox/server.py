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
import re
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
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

from chatmod.chatsight.protocol import AUTH_HEADER, SUBPROTOCOL, TEXT_MODERATION_PATH
from chatmod.http.server import HttpRequest, HttpResponse, serve_http
from chatmod.protocols.discuse import CHECK_PATH, CLIENT_ID_HEADER, CLIENT_SECRET_HEADER
from chatmod.sandbox.account import Account

log = logging.getLogger("chatmod.sandbox")

RECEIVE_SIZE = 65536
MAX_HTTP_BODY = 1024 * 1024
DEFAULT_API_KEY = "sandbox-key"
DEFAULT_DISCUSE_CLIENT_ID = "sandbox-client"
DEFAULT_DISCUSE_CLIENT_SECRET = "sandbox-secret"

DELETE_WORDS = ("idiot", "stupid", "moron", "fuck", "fucking", "shit", "bitch", "kill yourself")
FLAG_WORDS = ("damn", "crap", "dumb", "sucks", "hate", "shut up")


@dataclass
class Faults:
    """Switches for misbehaviour; change them while the sandbox runs."""

    latency: tuple[float, float] = (0.0, 0.0)  # seconds, per reply, uniform in the range
    cut_every: float = 0.0  # reset each websocket this many seconds after it opened; 0: never
    drop_rate: float = 0.0  # fraction of websocket requests never answered
    duplicate_rate: float = 0.0  # fraction answered twice
    garbage_rate: float = 0.0  # fraction preceded by a garbage frame
    auth_failure: Literal["cut", "401"] = "cut"  # how a wrong key is refused
    http_error_rate: float = 0.0  # fraction of HTTP requests answered 503
    http_429_rate: float = 0.0  # fraction answered 429 with Retry-After
    retry_after: float = 1.0


Judgement = tuple[str, float]  # (suggested action, profanity probability)


class WordlistJudge:
    """``delete`` for a word in :data:`DELETE_WORDS`, ``flag`` for :data:`FLAG_WORDS`."""

    def __init__(self) -> None:
        def pattern(words: Sequence[str]) -> re.Pattern[str]:
            return re.compile(r"(?<!\w)(?:{})(?!\w)".format("|".join(map(re.escape, words))), re.I)

        self._delete = pattern(DELETE_WORDS)
        self._flag = pattern(FLAG_WORDS)

    def __call__(self, texts: Sequence[str]) -> list[Judgement]:
        return [
            ("delete", 0.97) if self._delete.search(t)
            else ("flag", 0.6) if self._flag.search(t)
            else ("pass", 0.02)
            for t in texts
        ]


class ModelJudge:
    """The local model's probability with the local engine's default thresholds."""

    def __init__(self) -> None:
        from profanity_check import predict_prob

        self._predict = predict_prob

    def __call__(self, texts: Sequence[str]) -> list[Judgement]:
        judged: list[Judgement] = []
        for p in self._predict(list(texts)):
            probability = float(p)
            action = "delete" if probability >= 0.9 else "flag" if probability >= 0.5 else "pass"
            judged.append((action, round(probability, 4)))
        return judged


def make_judge(kind: str) -> Callable[[Sequence[str]], list[Judgement]]:
    if kind == "wordlist":
        return WordlistJudge()
    if kind == "local":
        return ModelJudge()
    try:
        return ModelJudge()
    except ImportError:
        return WordlistJudge()


def moderation_reply(action: str, probability: float, reference: str | None) -> bytes:
    """A reply in the documented shape (including its quirks: a text baseline in engine2)."""
    return orjson.dumps(moderation_body(action, probability, reference))


def moderation_body(action: str, probability: float, reference: str | None = None
                    ) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "modelTrainingWords": [], "computeTime": 1, "times": [0.4, 0.2],
        "uuid": "Future Placeholder", "warningIssued": False, "endpoint": "sandbox",
        "alloc": "sandbox", "latencyAlert": False,
    }
    if reference is not None:
        metadata["self_reference"] = reference
    return {
        "api": "chatsight-lang-text",
        "success": True,
        "response": {
            "engine1": {"raceInvocation": 0.0001, "politicalLanguage": 0.0026,
                        "baseline": round(1.0 - probability, 4)},
            "engine2": {"raceInvocation": 0.00004, "defensive": 0.0001,
                        "baseline": "Not required in engine2", "aggressive": 0.00005,
                        "vulgar": probability},
            "engine3": {"invoked": False},
            "suggestedAction": [action, probability],
            "patches": {"extremistFormattingPatch": False, "curseWordOverride": False,
                        "sentimentScore": 0.1},
            "insights": {"dialectPrediction": ["english", 0.37]},
            "metadata": metadata,
        },
        "TOS": "https://announce.chatsight.ai/terms_of_service",
        "version": "sandbox",
    }


def error_body(message: str) -> bytes:
    return orjson.dumps({"api": "chatsight-lang-text", "success": False, "response": message})


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

    def __post_init__(self) -> None:
        self.judge = make_judge(self.verdicts)
        self._threaded_judge = isinstance(self.judge, ModelJudge)
        self.rng = random.Random(self.seed)
        self.account = Account(self._judge, moderation_body, stats=self.stats)
        # Routes of the HTTP server; other Chatsight and Discuse routes are added here.
        self.http_routes: dict[tuple[str, str], HttpHandler] = {
            ("POST", TEXT_MODERATION_PATH): self._http_moderate,
            ("POST", CHECK_PATH): self._discuse_check,
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
        except (trio.BrokenResourceError, trio.ClosedResourceError, RemoteProtocolError,
                LocalProtocolError):
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
            self.stats["ws_garbage"] += 1
            frames.append(conn.send(self.rng.choice(GARBAGE_FRAMES)))
        frame = conn.send(TextMessage(data=reply.decode()))
        frames.append(frame)
        if self._chance(faults.duplicate_rate):
            self.stats["ws_duplicated"] += 1
            frames.append(frame)
        self.stats["ws_replies"] += 1
        low, high = faults.latency
        if high <= 0:
            out.extend(frames)
        else:
            nursery.start_soon(self._send_later, self.rng.uniform(low, high), frames, send)

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


NSFW_MARKER = "nsfw"  # an image URL containing it is judged pornographic (deterministic)
# An image URL containing it cannot be fetched: its section's status is "error", as Discuse
# answers for media that is not publicly reachable.
UNREACHABLE_MARKER = "unreachable"


def discuse_reply(probability: float, images: list[str], gifs: list[str]) -> bytes:
    """A check reply in the documented shape."""
    def media(urls: list[str]) -> dict[str, Any]:
        if not urls:
            return {"result": {}}
        if any(UNREACHABLE_MARKER in url.lower() for url in urls):
            return {"result": {}, "status": "error", "hit": False}
        bad = any(NSFW_MARKER in url.lower() for url in urls)
        porn = 0.95 if bad else 0.02
        return {"result": {"category": "porn" if bad else "neutral",
                           "confidence": porn if bad else 0.96},
                "status": "ok", "porn": porn, "sexual": 0.03, "neutral": 1 - porn,
                "hit": bad}

    images_section, gifs_section = media(images), media(gifs)
    sentiment = {"toxic": probability, "profanity": probability,
                 "threat": round(probability / 10, 4), "insult": round(probability * 0.8, 4),
                 "hit": probability >= 0.5}
    return orjson.dumps({
        "trace_context": None,
        "links": {"status": "", "hit": False}, "badwords": {"status": "", "hit": False},
        "antivirus": {"status": "", "hit": False},
        "language": {"expected": "en", "detected": "en", "hit": False},
        "images": images_section, "gifs": gifs_section, "sentiment": sentiment,
        "hits": bool(sentiment["hit"] or images_section.get("hit") or gifs_section.get("hit")),
    })


async def _close(stream: trio.SocketStream, *, reset: bool = False) -> None:
    if reset:
        # SO_LINGER 0: the peer gets a reset, no close frame and no orderly FIN.
        with contextlib.suppress(OSError):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with trio.CancelScope(shield=True):
        await stream.aclose()
