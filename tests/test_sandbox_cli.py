"""``chatmod sandbox`` and ``chatmod run`` as real processes, talking over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .helpers import decision_lines, run_chatmod
from .servers import SandboxProcess

pytestmark = pytest.mark.slow

SANDBOX_KEY = "c.sandbox.key-0123456789"


@pytest.fixture
def sandbox_config(tmp_path: Path) -> Iterator[Path]:
    with SandboxProcess(tmp_path, SANDBOX_KEY, "--latency", "0:5") as sandbox:
        yield sandbox.config
    assert "chatsight sandbox: stopped; " in sandbox.stop()


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
