"""A real ngircd for tests, on a free loopback port, and a minimal IRC client."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import trio
from irctokens.line import Line, build, tokenise
from irctokens.stateful import StatefulDecoder

from .redis_server import free_port

NGIRCD = shutil.which("ngircd") or (
    "/usr/sbin/ngircd" if Path("/usr/sbin/ngircd").exists() else None)


class IrcServer:
    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        if NGIRCD is None:
            pytest.skip("needs ngircd (scripts/test installs it)")
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = directory / "ngircd.conf"
        ports = f"Ports = {self.port}"
        extra = ""
        if tls:
            cert, key = directory / "cert.pem", directory / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-subj", "/CN=127.0.0.1", "-days", "1", "-keyout", str(key),
                            "-out", str(cert)], check=True, capture_output=True)
            ports = "Ports ="
            extra = f"[SSL]\nCertFile = {cert}\nKeyFile = {key}\nPorts = {self.port}\n"
        self.config.write_text(f"""
[Global]
Name = irc.test
Info = chatmod test server
Listen = 127.0.0.1
{ports}
PidFile = {directory / "ngircd.pid"}
MotdPhrase = test
{f"Password = {password}" if password else ""}
[Limits]
MaxConnectionsIP = 0
[Options]
PAM = no
Ident = no
DNS = no
{extra}""")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert NGIRCD is not None
        self.process = subprocess.Popen([NGIRCD, "-n", "-f", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                assert time.monotonic() < deadline, "ngircd did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class Client:
    """A person in the chat: registers, joins, speaks, and keeps every line it receives."""

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.lines: list[Line] = []
        self._stream: trio.SocketStream | None = None
        self._got_line = trio.Event()

    async def connect(self, nursery: trio.Nursery, port: int, channel: str) -> None:
        self._stream = await trio.open_tcp_stream("127.0.0.1", port)
        nursery.start_soon(self._read)
        await self.send("NICK", self.nick)
        await self.send("USER", self.nick, "0", "*", self.nick)
        await self.wait_for(lambda line: line.command == "001")
        await self.send("JOIN", channel)
        await self.wait_for(lambda line: line.command == "366")  # end of NAMES

    async def send(self, command: str, *params: str) -> None:
        assert self._stream is not None
        await self._stream.send_all(f"{build(command, list(params)).format()}\r\n".encode())

    async def say(self, channel: str, text: str) -> None:
        await self.send("PRIVMSG", channel, text)

    async def wait_for(self, predicate: object, within: float = 10.0) -> Line:
        with trio.fail_after(within):
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):  # type: ignore[operator]
                        return line
                seen = len(self.lines)
                self._got_line = trio.Event()
                await self._got_line.wait()

    async def _read(self) -> None:
        assert self._stream is not None
        decoder = StatefulDecoder()
        while True:
            try:
                data = await self._stream.receive_some(4096)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return  # closed by aclose(), or by the server
            if not data:
                return
            for line in decoder.push(data) or []:
                if line.command == "PING":
                    await self.send("PONG", *line.params)
                self.lines.append(line)
            self._got_line.set()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()


__all__ = ["Client", "IrcServer", "tokenise"]
