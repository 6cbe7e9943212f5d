"""Real servers for tests (redis-server, ngircd, InspIRCd): free loopback ports, private
directories, stopped after."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import NoReturn

import pytest

REDIS_SERVER = shutil.which("redis-server")
NGIRCD = shutil.which("ngircd") or (
    "/usr/sbin/ngircd" if Path("/usr/sbin/ngircd").exists() else None)
INSPIRCD = shutil.which("inspircd") or (
    "/usr/sbin/inspircd" if Path("/usr/sbin/inspircd").exists() else None)


REQUIRE_ALL_ENV = "CHATMOD_TEST_REQUIRE_ALL"


def missing(what: str) -> NoReturn:
    """Skip a test that needs ``what``; under ``scripts/test``, which installs everything,
    fail instead, so a test never goes quietly unrun there."""
    message = f"needs {what} (scripts/test installs it)"
    if os.environ.get(REQUIRE_ALL_ENV):
        pytest.fail(f"{message}, but it is missing")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LoopbackServer:
    """A server process on ``self.port``; :meth:`start` returns once it answers."""

    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self, conn: socket.socket) -> bool:
        """Whether the server is ready, judged on a fresh connection to it."""
        return True

    def start(self) -> None:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    if self.answers(conn):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{self.name} did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class RedisServer(LoopbackServer):
    """Append-only with fsync always, so a restart keeps what was written."""

    name = "redis-server"

    def __init__(self, directory: Path) -> None:
        if REDIS_SERVER is None:
            missing("redis-server")
        super().__init__()
        self.directory = directory

    def command(self) -> list[str]:
        assert REDIS_SERVER is not None
        return [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory),
                "--protected-mode", "no"]

    def answers(self, conn: socket.socket) -> bool:
        conn.sendall(b"PING\r\n")
        return conn.recv(16).startswith(b"+PONG")


# The IRC-operator login the test servers accept (``oper=True``).
OPER_NAME = "modbot"
OPER_PASSWORD = "oper-secret-for-tests"


class IrcServer(LoopbackServer):
    """ngircd, optionally with a server password or TLS (``cert``: the certificate and key
    files; by default a fresh self-signed certificate), or an IRC operator (``oper``:
    ``OPER_NAME``/``OPER_PASSWORD``, allowed to set modes in any channel)."""

    name = "ngircd"

    def __init__(self, directory: Path, password: str | None = None, tls: bool = False,
                 cert: tuple[Path, Path] | None = None, oper: bool = False) -> None:
        if NGIRCD is None:
            missing("ngircd")
        super().__init__()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "ngircd.conf"
        ports = f"Ports = {self.port}"
        extra = ""
        if tls and cert is not None:
            ports = "Ports ="
            extra = f"[SSL]\nCertFile = {cert[0]}\nKeyFile = {cert[1]}\nPorts = {self.port}\n"
        elif tls:
            cert_file, key = directory / "cert.pem", directory / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-subj", "/CN=127.0.0.1", "-days", "1", "-keyout", str(key),
                            "-out", str(cert_file)], check=True, capture_output=True)
            ports = "Ports ="
            extra = f"[SSL]\nCertFile = {cert_file}\nKeyFile = {key}\nPorts = {self.port}\n"
        if oper:
            extra += f"[Operator]\nName = {OPER_NAME}\nPassword = {OPER_PASSWORD}\n"
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
OperCanUseMode = {"yes" if oper else "no"}
{extra}""")

    def command(self) -> list[str]:
        assert NGIRCD is not None
        return [NGIRCD, "-n", "-f", str(self.config)]


class InspircdServer(LoopbackServer):
    """InspIRCd 3 with the IRCv3 modules a network runs (server-time, msgid, account-tag),
    optionally with a server password or an IRC operator (``oper``: ``OPER_NAME``/
    ``OPER_PASSWORD``, allowed through the override module to set modes and kick in any
    channel). No TLS: the TLS tests use ngircd."""

    name = "inspircd"

    def __init__(self, directory: Path, password: str | None = None,
                 oper: bool = False) -> None:
        if INSPIRCD is None:
            missing("inspircd")
        super().__init__()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "inspircd.conf"
        self.log = directory / "inspircd.log"
        modules = "".join(f'<module name="{module}">\n' for module in (
            "cap", "ircv3", "ircv3_servertime", "ircv3_msgid", "ircv3_ctctags",
            "services_account", "ircv3_accounttag", *(("override",) if oper else ())))
        if oper:
            modules += (
                '<override noisy="no" requirekey="no" enableumode="no">\n'
                '<class name="Moderation" commands="MODE KICK" chanmodes="*" usermodes="*">\n'
                '<type name="Moderator" classes="Moderation" override="KICK OTHERMODE">\n'
                f'<oper name="{OPER_NAME}" password="{OPER_PASSWORD}" host="*@*" '
                'type="Moderator">\n')
        # No DNS or ident lookups (they delay registration); no limits a test could reach.
        self.config.write_text(f"""
<server name="irc.test" description="chatmod test server" network="test">
<admin name="test" nick="test" email="test@localhost">
<bind address="127.0.0.1" port="{self.port}" type="clients">
<connect allow="*" resolvehostnames="no" useident="no" timeout="60" pingfreq="120"
  localmax="1000" globalmax="1000" maxconnwarn="off" limit="5000" recvq="65536"
  softsendq="65536" hardsendq="1048576" threshold="1000" commandrate="100000"
  fakelag="off" {f'password="{password}"' if password else ""}>
<dns server="127.0.0.1" timeout="1">
<pid file="{directory / "inspircd.pid"}">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{self.log}">
{modules}""")

    def command(self) -> list[str]:
        assert INSPIRCD is not None
        return [INSPIRCD, "--config", str(self.config), "--nofork", "--nopid", "--runasroot"]


IRC_SERVERS = {"ngircd": IrcServer, "inspircd": InspircdServer}


class SandboxProcess:
    """``chatmod sandbox`` as a real process on free ports; its config written for chatmod.

    Use as a context manager; ``config`` is the file ``--write-config`` wrote, ``http_url``
    and ``ws_url`` its addresses. :meth:`stop` (also on exit) stops it with SIGTERM; it must
    exit 0, and its key must be in none of its output.
    """

    def __init__(self, workdir: Path, api_key: str, *extra: str) -> None:
        self.config = workdir / "sandbox.toml"
        self.log = workdir / "sandbox.log"
        self.api_key = api_key
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SandboxProcess:
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatmod", "sandbox", "--ws-port", "0",
                 "--http-port", "0", "--verdicts", "wordlist", *self.extra,
                 "--write-config", str(self.config)],
                env={"CHATSIGHT_API_KEY": self.api_key, "PATH": "/usr/bin:/bin"},
                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 20
        while not self.config.exists():  # written whole (renamed into place)
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "sandbox did not start"
            time.sleep(0.05)
        engine = tomllib.loads(self.config.read_text())["engines"]["chatsight"]
        self.ws_url, self.http_url = engine["ws_url"], engine["http_url"]
        return self

    def engine_table(self) -> str:
        """The written config's ``[engines.chatsight]`` lines, to build other configs on."""
        return self.config.read_text().split("[engines.chatsight]")[1].split("[[")[0]

    def stop(self) -> str:
        """Stop it (once); its log."""
        assert self.process is not None
        try:
            if self.process.returncode is None:
                self.process.send_signal(signal.SIGTERM)
                assert self.process.wait(timeout=10) == 0, self.log.read_text()
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        log = self.log.read_text()
        assert self.api_key not in log
        return log

    def __exit__(self, *exc: object) -> None:
        self.stop()
