"""The daemon as systemd runs it: a real subprocess, a notify socket the test owns, signals."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import Daemon, decision_lines, write_config
from .servers import SandboxProcess

pytestmark = pytest.mark.slow

SANDBOX_KEY = "c.service-test.key-0123456789"

LOCAL_CONFIG = """
[daemon]
drain_timeout = 10.0
[engine]
primary = "local"
[engines.local]
flag_threshold = {flag}
[cache]
enabled = false
[[sources]]
type = "stdin"
[[sinks]]
type = "jsonl"
path = "{out}"
"""


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(0.2)
        yield sock, path


def wait_message(sock: socket.socket, field: str, timeout: float = 20.0) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            continue
        seen.append(message)
        if field in message.split("\n"):
            return seen
    raise AssertionError(f"no {field} within {timeout} s; got {seen}")


def test_notify_ready_watchdog_reloading_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    config = write_config(tmp_path / "c.toml", LOCAL_CONFIG.format(flag=0.5, out=tmp_path / "d"))
    daemon = Daemon(tmp_path, config, env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        ready = wait_message(sock, "READY=1")
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in ready)
        for _ in range(3):  # every 0.2 s (half of WATCHDOG_USEC), while it runs
            wait_message(sock, "WATCHDOG=1")
        daemon.process.send_signal(signal.SIGHUP)
        after_hup = wait_message(sock, "RELOADING=1")
        assert any(line.startswith("MONOTONIC_USEC=") for m in after_hup
                   for line in m.split("\n"))
        wait_message(sock, "READY=1")
        daemon.process.send_signal(signal.SIGTERM)
        wait_message(sock, "STOPPING=1")
        assert daemon.process.wait(timeout=15) == 0
    finally:
        daemon.stop()


def test_sighup_applies_new_thresholds_and_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    out = tmp_path / "decisions.jsonl"
    write_config(config, LOCAL_CONFIG.format(flag=0.5, out=out))
    daemon = Daemon(tmp_path, config)
    stop_feeding = threading.Event()

    def feed() -> None:  # continuous input across the reloads
        while not stop_feeding.is_set():
            daemon.send("hello friends")
            time.sleep(0.01)

    feeder = threading.Thread(target=feed)
    try:
        daemon.wait_for(lambda: daemon.decisions() or daemon.send("hello friends"),
                        "the first decision")
        feeder.start()
        daemon.wait_for(lambda: len(daemon.decisions()) >= 20, "decisions while fed")
        write_config(config, LOCAL_CONFIG.format(flag=0.01, out=out))  # 0.024 now flags
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log("config reloaded (engine local)")
        daemon.wait_for(lambda: any(d["verdict"] == "flag" for d in daemon.decisions()),
                        "a decision under the new threshold")
        config.write_text("[daemon]\ndrain_timeout = 'soon'\n")
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log("reload refused, the running config stays")
        refused_at = len(daemon.decisions())
        daemon.wait_for(lambda: len(daemon.decisions()) >= refused_at + 20,
                        "decisions after the refused reload")
        stop_feeding.set()
        feeder.join()
        assert daemon.process.stdin is not None
        daemon.process.stdin.close()
        assert daemon.process.wait(timeout=20) == 0
    finally:
        stop_feeding.set()
        daemon.stop()
    decisions = daemon.decisions()
    assert len(decisions) == daemon.sent  # none lost across both reloads
    verdicts = [d["verdict"] for d in decisions]
    first_flag = verdicts.index("flag")
    assert set(verdicts[:first_flag]) == {"pass"}
    # After the new threshold, and still after the refused reload: flagged.
    assert set(verdicts[first_flag:]) == {"flag"}
    assert "Traceback" not in daemon.log.read_text()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    with SandboxProcess(tmp_path, SANDBOX_KEY, "--latency", "20:80") as running:
        yield running


def chatsight_config(sandbox: SandboxProcess, out: Path, delete_action: str) -> str:
    engine = sandbox.engine_table()
    return f"""
[daemon]
drain_timeout = 10.0
[engine]
primary = "chatsight"
[engines.chatsight]
{engine}
[policy]
actions = {{ delete = "{delete_action}" }}
[[sources]]
type = "stdin"
[[sinks]]
type = "jsonl"
path = "{out}"
"""


def test_reload_keeps_the_engine_connection_and_sigterm_drains_under_load(
    tmp_path: Path, sandbox: SandboxProcess,
) -> None:
    config = tmp_path / "c.toml"
    out = tmp_path / "decisions.jsonl"
    config.write_text(chatsight_config(sandbox, out, "delete"))
    daemon = Daemon(tmp_path, config, env={"CHATSIGHT_API_KEY": SANDBOX_KEY})
    stop_feeding = threading.Event()

    def feed() -> None:
        i = 0
        while not stop_feeding.is_set():
            daemon.send(f"you idiot {i}", f"hello {i}")
            i += 1
            time.sleep(0.005)

    feeder = threading.Thread(target=feed)
    try:
        daemon.wait_for_log("websocket connected")
        feeder.start()
        daemon.wait_for(lambda: len(daemon.decisions()) > 50, "decisions")
        config.write_text(chatsight_config(sandbox, out, "kick"))
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log("config reloaded (policy)")
        daemon.wait_for(lambda: any(d["action"] == "kick" for d in daemon.decisions()),
                        "a decision under the new policy")
        stop_feeding.set()
        feeder.join()
        # Replies take 20-80 ms: messages are in flight when the signal comes.
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10.0  # within drain_timeout
    finally:
        stop_feeding.set()
        daemon.stop()
    log = daemon.log.read_text()
    assert log.count("websocket connected") == 1  # the reload did not reconnect
    decisions = daemon.decisions()
    # Every message read before the signal has exactly one decision. (Lines still in the
    # pipe when the signal came were never read: stopping means stopping reading.)
    ids = [d["id"] for d in decisions]
    assert len(ids) == len(set(ids))
    summary = re.search(r"done: (\d+) received, (\d+) decided", log)
    assert summary is not None, log
    assert int(summary[1]) == int(summary[2]) == len(ids) <= daemon.sent
    actions = {d["action"] for d in decisions}
    assert {"kick", "none"} <= actions
    assert "ws_connections 1," in sandbox.stop()


def test_sighup_applies_source_and_sink_changes(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    template = """
[engine]
primary = "wordlist"
[[sources]]
type = "stdin"
channel = "{channel}"
[[sinks]]
type = "jsonl"
path = "{out}"
"""
    write_config(config, template.format(channel="#before", out=first))
    daemon = Daemon(tmp_path, config)
    daemon.out = first
    try:
        daemon.send("one")
        daemon.wait_for(lambda: len(daemon.decisions()) == 1, "the first decision")
        write_config(config, template.format(channel="#after", out=second))
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log("config reloaded (source stdin, sinks)")
        # The sinks are swapped once the new ones have started: decisions before that still
        # go to the old ones.
        daemon.wait_for_log("new sinks are taking decisions")
        daemon.send("two")
        daemon.out = second
        daemon.wait_for(lambda: len(daemon.decisions()) == 1, "a decision in the new sink")
        assert daemon.process.stdin is not None
        daemon.process.stdin.close()
        assert daemon.process.wait(timeout=20) == 0
    finally:
        daemon.stop()
    assert [d["channel"] for d in decision_lines(first.read_bytes())] == ["#before"]
    assert [d["channel"] for d in decision_lines(second.read_bytes())] == ["#after"]
