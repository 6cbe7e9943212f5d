"""``chatmod sandbox`` and ``chatmod run`` as real processes, talking over loopback."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .helpers import chatmod_command, decision_lines, run_chatmod

pytestmark = pytest.mark.slow

SANDBOX_KEY = "c.sandbox.key-0123456789"


@pytest.fixture
def sandbox_config(tmp_path: Path) -> Iterator[Path]:
    config = tmp_path / "sandbox.toml"
    log = tmp_path / "sandbox.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*chatmod_command("sandbox", "--ws-port", "0", "--http-port", "0",
                              "--verdicts", "wordlist", "--latency", "0:5",
                              "--write-config", str(config))],
            env={"CHATSIGHT_API_KEY": SANDBOX_KEY, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 20
        while not config.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "sandbox did not start"
            time.sleep(0.05)
        yield config
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert "chatsight sandbox: stopped; " in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert SANDBOX_KEY not in log.read_text()


def test_daemon_moderates_through_the_sandbox_websocket(sandbox_config: Path) -> None:
    result = run_chatmod("run", "-c", str(sandbox_config),
                         input=b"hello friends\nyou stupid idiot\n",
                         env={"CHATSIGHT_API_KEY": SANDBOX_KEY})
    assert result.returncode == 0, result.stderr.decode()
    by_text = {d["text"]: d for d in decision_lines(result.stdout)}
    assert by_text["hello friends"]["verdict"] == "pass"
    assert by_text["you stupid idiot"]["verdict"] == "delete"
    assert {d["route"] for d in by_text.values()} == {"ws"}
    assert {d["engine"] for d in by_text.values()} == {"chatsight"}
    assert SANDBOX_KEY.encode() not in result.stdout + result.stderr


def test_rejected_key_gives_fallback_decisions_and_is_never_printed(
    sandbox_config: Path,
) -> None:
    wrong = "c.sandbox.WRONG-9876543210"
    result = run_chatmod("run", "-c", str(sandbox_config), input=b"one\ntwo\n",
                         env={"CHATSIGHT_API_KEY": wrong})
    assert result.returncode == 0, result.stderr.decode()
    decisions = decision_lines(result.stdout)
    assert len(decisions) == 2
    assert {(d["route"], d["verdict"]) for d in decisions} == {("failclosed", "flag")}
    stderr = result.stderr.decode()
    assert stderr.count("Chatsight rejected the API key") == 1
    assert wrong not in stderr
    assert wrong.encode() not in result.stdout


def test_check_config_masks_the_key(sandbox_config: Path) -> None:
    result = run_chatmod("check-config", "-c", str(sandbox_config),
                         env={"CHATSIGHT_API_KEY": SANDBOX_KEY})
    assert result.returncode == 0, result.stderr.decode()
    engine = orjson.loads(result.stdout)["engines"]["chatsight"]
    assert engine["api_key"] == "*** (env CHATSIGHT_API_KEY, set)"
    assert SANDBOX_KEY.encode() not in result.stdout + result.stderr
    missing = run_chatmod("check-config", "-c", str(sandbox_config),
                          env={"CHATSIGHT_API_KEY": ""})
    assert missing.returncode == 2
    assert b"engines.chatsight.api_key_env: environment variable CHATSIGHT_API_KEY is not set" in (
        missing.stderr)
