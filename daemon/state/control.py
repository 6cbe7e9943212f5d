"""The control socket: ``chatmod exempt`` and ``chatmod channel`` talk to the running daemon.

A unix socket ``<state_dir>/control.sock`` (mode 0600), and a token in
``<state_dir>/control.token`` (0600, made at start): the socket's mode keeps other users out,
the token proves the client read a file only the service user can read. One JSON line in, one
JSON line out, then the connection closes. Parsing is pure (:func:`parse_request`); nothing a
client sends stops the daemon: a bad request gets ``{"ok": false, "error": ...}``, a client
too slow or too long is dropped.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

from chatmod.config.state import write_private
from chatmod.errors import ControlError
from chatmod.state.live import CHANNEL_SWITCHES

log = logging.getLogger("chatmod.control")

SOCKET_NAME = "control.sock"
TOKEN_NAME = "control.token"
# Bytes a request may have, and seconds it has to arrive (and the reply to be taken).
MAX_REQUEST_BYTES = 16 * 1024
REQUEST_TIMEOUT = 5.0
# Connections answered at once; more are told "busy" and closed (each may take
# REQUEST_TIMEOUT s, so a client opening thousands cannot pile up tasks and buffers).
MAX_CONNECTIONS = 32
# Seconds to learn whether a socket file left at start still has a daemon behind it.
PROBE_TIMEOUT = 2.0
OPERATIONS = ("exempt.add", "exempt.remove", "exempt.list", "channel.set", "channel.list")
# The longest exemption (``for``), in seconds: some 300 years; longer is "until removed".
MAX_EXEMPTION = 1e10


@dataclass(frozen=True)
class ControlRequest:
    """One request: ``op`` and what it needs; ``by`` and ``why`` for the audit log."""

    op: str
    by: str
    why: str = ""
    author: str = ""
    channel: str = ""
    duration: float | None = None
    switches: Mapping[str, Any] = field(default_factory=dict)


def _text(record: Mapping[str, Any], key: str, *, required: bool = False) -> str:
    value = record.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ControlError(f"{key!r} must be a string")
    if required and not value:
        raise ControlError(f"{key!r} is required")
    return value


def parse_request(data: bytes, token: str) -> ControlRequest:
    """A request line; :class:`ControlError` for anything else (a wrong token included)."""
    try:
        record = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ControlError("a request is one JSON object") from None
    if not isinstance(record, dict):
        raise ControlError("a request is one JSON object")
    given = record.get("token")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        raise ControlError("wrong token")
    op = record.get("op")
    if op not in OPERATIONS:
        raise ControlError(f"'op' must be one of {', '.join(OPERATIONS)}")
    duration = record.get("for")
    if duration is not None and (isinstance(duration, bool) or not isinstance(
            duration, int | float) or not 0 < duration < MAX_EXEMPTION):
        raise ControlError("'for' must be a number of seconds > 0, or null")
    switches = record.get("switches", {})
    if not isinstance(switches, dict):
        raise ControlError("'switches' must be an object")
    for name, value in switches.items():
        kind = CHANNEL_SWITCHES.get(name)
        if kind is None or not isinstance(value, kind):
            raise ControlError(f"switch {str(name)[:40]!r}: expected one of "
                               f"{', '.join(CHANNEL_SWITCHES)} with a boolean")
    needs_author = op in ("exempt.add", "exempt.remove")
    request = ControlRequest(
        op=op, by=_text(record, "by", required=True), why=_text(record, "why"),
        author=_text(record, "author", required=needs_author),
        channel=_text(record, "channel", required=op == "channel.set"),
        duration=None if duration is None else float(duration), switches=switches)
    if op == "channel.set" and not switches:
        raise ControlError("'switches' must name at least one switch")
    return request


def read_token(state_dir: Path) -> str:
    """The token a client sends (``chatmod exempt`` reads it)."""
    return (state_dir / TOKEN_NAME).read_text().strip()


BUSY_REPLY = orjson.dumps({"ok": False, "error": "busy: too many control connections at "
                                                  "once; try again"}) + b"\n"

Handler = Callable[[ControlRequest], Awaitable[dict[str, Any]]]


async def serve_control(state_dir: Path, handler: Handler, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the control socket until cancelled."""
    path = state_dir / SOCKET_NAME
    await _remove_stale_socket(path)  # before the token: a live daemon keeps its own
    token = secrets.token_urlsafe(32)
    token_path = state_dir / TOKEN_NAME
    write_private(token_path, token + "\n")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # 0600 from the start: no moment when others may connect
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    ours = os.stat(path).st_ino
    sock.listen(16)
    listener = trio.SocketListener(sock)

    answering = 0

    async def connection(stream: trio.SocketStream) -> None:
        nonlocal answering
        try:
            if answering >= MAX_CONNECTIONS:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    await stream.send_all(BUSY_REPLY)
                return
            answering += 1
            try:
                await _answer(stream, token, handler)
            finally:
                answering -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass  # the client went away or was too slow: nothing to answer
        finally:
            await trio.aclose_forcefully(stream)

    try:
        async with listener:
            task_status.started()
            await trio.serve_listeners(connection, [listener])
    finally:
        _unlink_if_ours(path, ours)
        _remove_token_if_ours(token_path, token)


async def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file a killed daemon left; :class:`ControlError` when a daemon still
    answers on it (two daemons on one state directory would steal each other's socket)."""
    if not _left_over(path):
        return
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(PROBE_TIMEOUT):
            try:
                await probe.connect(str(path))
            except OSError:  # refused (or not a socket): nobody serves it
                _unlink_if_ours(path, None)
                return
        raise ControlError(f"another daemon serves live control at {path} "
                           f"(one daemon per state_dir)")
    finally:
        probe.close()


def _remove_token_if_ours(path: Path, token: str) -> None:
    """Remove the token file at the stop, unless a later daemon already wrote its own."""
    try:
        if path.read_text().strip() == token:
            path.unlink()
    except OSError:
        pass


def _left_over(path: Path) -> bool:
    return os.path.lexists(path)


def _unlink_if_ours(path: Path, inode: int | None) -> None:
    """Remove our socket file (``inode``; None: whatever is there), not one a later daemon
    bound at the same path."""
    try:
        if inode is None or os.stat(path).st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


async def _answer(stream: trio.SocketStream, token: str, handler: Handler) -> None:
    with trio.fail_after(REQUEST_TIMEOUT):
        data = b""
        while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            reply: dict[str, Any] = {"ok": False, "error": "request too long"}
        else:
            try:
                request = parse_request(data.split(b"\n", 1)[0], token)
                reply = {"ok": True, **await handler(request)}
            except ControlError as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # a failing change is the client's error, not the daemon's
                log.error("control request failed: %s", exc)
                reply = {"ok": False, "error": f"failed: {exc}"}
        await stream.send_all(orjson.dumps(reply) + b"\n")


async def send_request(state_dir: Path, request: Mapping[str, Any]) -> dict[str, Any]:
    """The client side: one request to the daemon's socket, its reply."""
    token = read_token(state_dir)
    with trio.fail_after(REQUEST_TIMEOUT * 2):
        stream = await trio.open_unix_socket(str(state_dir / SOCKET_NAME))
        async with stream:
            await stream.send_all(orjson.dumps({**request, "token": token}) + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    reply = orjson.loads(data)
    if not isinstance(reply, dict):
        raise ControlError("the daemon's reply is not a JSON object")
    return reply
