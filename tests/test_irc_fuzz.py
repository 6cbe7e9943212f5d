"""Fuzzing the IRC client with what a server may send.

The protocol (LineBuffer, parse_line, IrcSession.receive) under hypothesis: only its typed
errors (IrcLineError for an unreadable line, IrcFatal for a refusal) may escape, and every
reply it makes can be sent. ``HYPOTHESIS_PROFILE=thorough`` runs 10,000 examples a test.

Then the real daemon against a fake server (a plain TCP server: the point is sending lines
no real server would) that registers the bot and sends random lines between probes: the
daemon stays up and keeps deciding, on IRC and stdin. ``CHATMOD_FUZZ_SECONDS`` sets how long
(default 3); the seed is printed (``-s``), and ``CHATMOD_FUZZ_SEED`` replays one.
"""

from __future__ import annotations

import os
import random
import string
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatmod.protocols.irc import ChatLine, IrcFatal, IrcLineError, IrcSession
from chatmod.protocols.irc_lines import LineBuffer, parse_line

from .helpers import Daemon, eventually, write_config

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
EXAMPLES = 10_000 if THOROUGH else 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FUZZ_SECONDS = float(os.environ.get("CHATMOD_FUZZ_SECONDS", "3"))

COMMANDS = ["PING", "PONG", "CAP", "AUTHENTICATE", "001", "005", "353", "366", "432", "433",
            "436", "464", "403", "471", "473", "474", "475", "477", "903", "904", "905",
            "NICK", "JOIN", "PART", "KICK", "MODE", "PRIVMSG", "NOTICE", "QUIT", "TOPIC",
            "INVITE", "ERROR"]
CAP_WORDS = ["LS", "ACK", "NAK", "NEW", "DEL", "*", "302", "sasl", "message-tags",
             "account-tag", "server-time", "multi-prefix"]
NAMES = ["modbot", "MODBOT", "alice", "#chat", "#CHAT", "#other", "*", "+o", "-o", "+bo",
         "-v+o", "@modbot", "~modbot", "+", "-", "", ":", "::", "@", "!", "\x01ACTION x\x01",
         "\x01", "irc.test", "a!b@c", "modbot!u@h"]


def sessions() -> list[IrcSession]:
    """A session before registration (with SASL), and one registered in #chat."""
    fresh = IrcSession("modbot", ("#chat", "#mods"), sasl_user="bot", sasl_password="pw")
    joined = IrcSession("modbot", ("#chat",))
    for raw in (b":srv 001 modbot :hi", b":modbot!u@h JOIN #chat"):
        line = parse_line(raw)
        assert line is not None
        joined.receive(line)
    return [fresh, joined]


def feed_all(data: list[bytes]) -> None:
    """The property: bytes in, only typed errors out, every reply sendable."""
    for session in sessions():
        buffer = LineBuffer()
        for chunk in data:
            for raw in buffer.push(chunk):
                try:
                    line = parse_line(raw)
                except IrcLineError:
                    continue
                if line is None:
                    continue
                was_registered = session.registered
                try:
                    reaction = session.receive(line)
                except IrcFatal:
                    assert not was_registered  # only a refusal of our registration is fatal
                    continue
                for reply in reaction.replies:
                    text = reply.format()
                    assert not any(char in text for char in "\r\n\0")
                for chat in reaction.chat:
                    assert isinstance(chat, ChatLine)
                    assert chat.channel[:1] in "#&!+"


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
@example([b"\r\n", b"\r\r\r\n", b":x\r\n", b"@a=b\r\n", b"PRIVMSG #chat :x\r\n"])
@example([b"JOIN #chat\r\nNICK\r\nKICK #chat\r\n:srv 353 modbot\r\n"])
@example([b"@\xff=\xfe :a!b@c PRIVMSG #chat :\xff\n"])
def test_random_bytes(data: list[bytes]) -> None:
    feed_all(data)


token = st.one_of(st.sampled_from(COMMANDS + CAP_WORDS + NAMES),
                  st.text(alphabet=string.printable + ":@!#\x01\x00\xe9", max_size=12))


@FUZZ
@given(st.lists(st.lists(token, max_size=8).map(" ".join), max_size=10))
@example([":srv 353 modbot = #chat :@ +", "MODE #chat +o", ": PRIVMSG #chat :x"])
def test_random_tokens(lines: list[str]) -> None:
    feed_all([line.encode("utf-8", errors="replace") + b"\r\n" for line in lines])


tag_key = st.sampled_from(["msgid", "time", "account", "batch", "+draft/reply", "", "a=b"])
tags = st.dictionaries(tag_key, st.text(max_size=10), max_size=3).map(
    lambda found: "@" + ";".join(f"{k}={v}" for k, v in found.items()) + " " if found else "")
source = st.one_of(st.just(""), st.sampled_from(NAMES).map(lambda name: f":{name} "),
                   st.text(max_size=10).map(lambda name: f":{name} "))


@FUZZ
@given(st.lists(st.tuples(tags, source, st.sampled_from(COMMANDS),
                          st.lists(st.sampled_from(NAMES) | st.text(max_size=10), max_size=5),
                          st.one_of(st.none(), st.text(max_size=20))), max_size=10))
@example([("", "", "KICK", ["#chat"], None), ("", ":srv ", "353", ["modbot"], None)])
def test_real_commands_with_random_parameters(
    lines: list[tuple[str, str, str, list[str], str | None]],
) -> None:
    data = []
    for tag_text, source_text, command, params, trailing in lines:
        middle = " ".join(param.replace(" ", "") for param in params)
        last = f" :{trailing}" if trailing is not None else ""
        data.append(f"{tag_text}{source_text}{command} {middle}{last}\r\n".encode())
    feed_all(data)


class FakeIrcServer:
    """Registers whoever connects (offering account-tag), then lets the test send lines."""

    def __init__(self) -> None:
        self.streams: list[trio.SocketStream] = []
        self.registrations = 0
        self.requested: list[str] = []
        self._locks: dict[trio.SocketStream, trio.Lock] = {}

    async def handle(self, stream: trio.SocketStream) -> None:
        self._locks[stream] = trio.Lock()  # answers and the test's lines take turns
        buffer = b""
        try:
            while True:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buffer += data
                *lines, buffer = buffer.split(b"\r\n")
                for line in lines:
                    await self._answer(stream, line.decode())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _send(self, stream: trio.SocketStream, data: bytes) -> None:
        async with self._locks[stream]:
            await stream.send_all(data)

    async def _answer(self, stream: trio.SocketStream, line: str) -> None:
        if line.startswith("CAP LS"):
            await self._send(stream, b":srv CAP * LS :message-tags account-tag server-time\r\n")
        elif line.startswith("CAP REQ"):
            self.requested.append(line)
            await self._send(stream, f":srv CAP * ACK {line[8:]}\r\n".encode())
        elif line.startswith("CAP END"):
            self.registrations += 1
            await self._send(stream, b":srv 001 modbot :welcome\r\n")
        elif line.startswith("JOIN"):
            channel = line.split()[1]
            await self._send(stream, f":modbot!u@h JOIN {channel}\r\n".encode())
            if stream not in self.streams:
                self.streams.append(stream)
        elif line.startswith("PING"):
            await self._send(stream, f"PONG {line[5:]}\r\n".encode())

    async def send(self, data: bytes) -> bool:
        """Send on the newest connection; False when it has just gone."""
        if not self.streams:
            return False
        try:
            await self._send(self.streams[-1], data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True


FUZZ_CONFIG = """
[engine]
primary = "wordlist"

[engines.wordlist]
delete = ["idiot"]

[[sources]]
type = "stdin"
format = "text"

[[sources]]
type = "irc"
port = {port}
nick = "modbot"
channels = ["#chat"]
reconnect_initial = 0.05
reconnect_max = 0.2
ping_interval = 5.0

[[sinks]]
type = "jsonl"
path = "{out}"
"""


def random_line(rng: random.Random) -> bytes:
    """What no well-behaved server sends, or what one sends oddly."""
    kind = rng.random()
    if kind < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(60)))
    if kind < 0.35:
        return b"x" * rng.randrange(8000, 20000)  # over the line limit
    words = [rng.choice(COMMANDS + CAP_WORDS + NAMES) for _ in range(rng.randrange(6))]
    if rng.random() < 0.5:
        words.insert(0, ":" + rng.choice(NAMES))
    if rng.random() < 0.3:
        words.insert(0, "@" + rng.choice(["a=b", "msgid=x", "account=y", "", "=;;"]))
    if rng.random() < 0.5:
        words.append(":" + "".join(rng.choice(string.printable) for _ in range(10)))
    return " ".join(words).encode()


def decided(daemon: Daemon) -> list[dict[str, Any]]:
    return daemon.decisions()  # type: ignore[return-value]


# Each of these, sent by the server, used to end the daemon with exit 1.
LINES_THAT_ENDED_THE_DAEMON = [b"", b"\r\r\r", b":x", b"@a=b", b"PRIVMSG #chat :x",
                               b"JOIN #chat", b"NICK", b"KICK #chat", b":srv 353 modbot",
                               b"::x!u@h PRIVMSG #chat :idiot"]


@pytest.mark.slow
async def test_no_line_from_the_server_ends_the_daemon(tmp_path: Path) -> None:
    server = FakeIrcServer()
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, server.handle, 0,
                                                 host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        daemon = Daemon(tmp_path, write_config(
            tmp_path / "chatmod.toml", FUZZ_CONFIG.format(port=port,
                                                          out=tmp_path / "decisions.jsonl")))
        try:
            with trio.fail_after(60):
                await eventually(lambda: bool(server.streams))
                for number, line in enumerate(LINES_THAT_ENDED_THE_DAEMON):
                    assert await server.send(line + b"\r\n" + (
                        f":prober!a@h PRIVMSG #chat :after line {number}\r\n".encode()))
                    await eventually(lambda: f"after line {number}" in {  # noqa: B023
                        d["text"] for d in decided(daemon)})
                    assert daemon.process.poll() is None, daemon.log.read_text()
                assert server.registrations == 1  # one connection took them all
        finally:
            daemon.stop()
            for stream in server.streams:
                await stream.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_the_daemon_survives_a_server_sending_anything(tmp_path: Path) -> None:
    server = FakeIrcServer()
    seed = int(os.environ.get("CHATMOD_FUZZ_SEED") or random.randrange(2**32))  # to replay
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, server.handle, 0,
                                                 host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        daemon = Daemon(tmp_path, write_config(
            tmp_path / "chatmod.toml", FUZZ_CONFIG.format(port=port,
                                                          out=tmp_path / "decisions.jsonl")))
        try:
            with trio.fail_after(FUZZ_SECONDS + 60):
                await eventually(lambda: bool(server.streams))
                assert server.requested == ["CAP REQ :message-tags server-time account-tag"]
                sent = probes = stdin_probes = 0
                deadline = trio.current_time() + FUZZ_SECONDS
                while trio.current_time() < deadline:
                    for _ in range(20):
                        sent += await server.send(random_line(rng) + b"\r\n")
                    # From a nick the random lines never rename the bot to.
                    probes += await server.send(
                        f":prober!a@h PRIVMSG #chat :probe {probes}\r\n".encode())
                    assert daemon.process.poll() is None, daemon.log.read_text()
                    daemon.send(f"stdin probe {stdin_probes}")
                    stdin_probes += 1
                    await trio.sleep(0.01)
                # The last probes, on IRC (with an account) and stdin. The IRC one is sent
                # again until decided: a random ERROR may have ended the connection under it.
                daemon.send("stdin last")
                while "last idiot" not in {d["text"] for d in decided(daemon)}:
                    await server.send(b"@account=prober_acct :prober!a@h PRIVMSG #chat "
                                      b":last idiot\r\n")
                    await trio.sleep(0.5)
                await eventually(lambda: "stdin last" in {d["text"] for d in decided(daemon)})
                assert daemon.process.poll() is None, daemon.log.read_text()
                texts = {str(d["text"]) for d in decided(daemon)}
                assert {f"stdin probe {n}" for n in range(stdin_probes)} <= texts
                last = [d for d in decided(daemon) if d["text"] == "last idiot"][-1]
                assert (last["action"], last["author"], last["author_account"]) == (
                    "delete", "prober", "prober_acct")
                irc_decided = sum(1 for t in texts if t.startswith("probe "))
                # Probes sent on a connection the daemon was leaving (after a random ERROR)
                # are not read; the others are.
                assert irc_decided >= 1
                print(f"\nIRC fuzz (seed {seed}): {FUZZ_SECONDS:g} s, {sent} random lines "
                      f"sent, {server.registrations} registrations, {irc_decided}/{probes} "
                      f"IRC probes and {stdin_probes} stdin probes decided")
        finally:
            daemon.stop()
            for stream in server.streams:
                await stream.aclose()
            nursery.cancel_scope.cancel()
