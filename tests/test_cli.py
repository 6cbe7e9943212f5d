"""The real CLI as a subprocess: the contracts an operator sees."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .helpers import (
    EXAMPLE_CONFIG,
    WORDLIST_CONFIG,
    chatmod_command,
    decision_lines,
    run_chatmod,
    write_config,
)
from .test_config import SIX_MISTAKES

pytestmark = pytest.mark.slow


def test_example_config_decides_each_line() -> None:
    result = run_chatmod("run", "-c", str(EXAMPLE_CONFIG),
                         input=b"hello friends\nyou are a fucking idiot\n")
    assert result.returncode == 0, result.stderr.decode()
    by_text = {d["text"]: d for d in decision_lines(result.stdout)}
    assert set(by_text) == {"hello friends", "you are a fucking idiot"}
    assert by_text["hello friends"]["verdict"] == "pass"
    assert by_text["you are a fucking idiot"]["verdict"] != "pass"
    assert by_text["you are a fucking idiot"]["engine"] == "local"
    # The readable log line for each decision is on stderr.
    assert result.stderr.count(b"chatmod.decisions:") == 2


def test_bad_input_does_not_stop_the_run() -> None:
    data = (
        b"before\n"
        b"bad \xff\xfe utf8\n"
        b"\n\n   \n"
        + b"A" * (1024 * 1024) + b"\n"
        + b"control \x00\x07\x1b[2J chars\n"
        b"after\n"
    )
    result = run_chatmod("run", "-c", str(EXAMPLE_CONFIG), input=data)
    assert result.returncode == 0, result.stderr.decode()
    texts = sorted(d["text"] for d in decision_lines(result.stdout))
    assert texts == sorted(["before", "bad \ufffd\ufffd utf8", "control \x00\x07\x1b[2J chars",
                            "after"])
    stderr = result.stderr.decode()
    assert "line 2: invalid UTF-8 replaced" in stderr
    assert "line 6: 1048576 bytes is over max_line_bytes (65536); skipped" in stderr
    # Control characters are escaped in the readable log, never sent to the terminal raw.
    assert "\x1b[2J" not in stderr
    assert "\\x1b[2J" in stderr


def test_jsonl_input_reports_bad_lines_and_goes_on(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", WORDLIST_CONFIG.format(format="jsonl", path="-"))
    data = (b'{"id": "a", "text": "hi", "channel": "#lobby", "author": "al"}\n'
            b'not json\n{"text": "you idiot", "id": "b"}\n')
    result = run_chatmod("run", "-c", str(config), input=data)
    assert result.returncode == 0, result.stderr.decode()
    decisions = {d["id"]: d for d in decision_lines(result.stdout)}
    assert decisions["a"]["action"] == "none"
    assert (decisions["a"]["channel"], decisions["a"]["author"]) == ("#lobby", "al")
    assert decisions["b"]["action"] == "delete"
    assert decisions["b"]["scores"] == {"matched": "idiot"}
    assert "stdin: line 2: invalid JSON" in result.stderr.decode()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[daemon]\ndrain_timout = 5\n", "daemon.drain_timout: unknown key (did you mean 'drain_timeout'?)"),
        ("[daemon]\ndrain_timeout = 'five'\n", "daemon.drain_timeout: expected a number >= 0, found 'five'"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_bad_config_exits_2_naming_the_key(
    tmp_path: Path, extra: str, expected: str, command: str
) -> None:
    config = write_config(tmp_path / "c.toml",
                          extra + WORDLIST_CONFIG.format(format="text", path="-"))
    result = run_chatmod(command, "-c", str(config))
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert expected in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_check_config_prints_resolved_config_with_secrets_masked(tmp_path: Path) -> None:
    text = WORDLIST_CONFIG.format(format="text", path="-")
    config = write_config(tmp_path / "c.toml", text)
    result = run_chatmod("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr.decode()
    resolved = orjson.loads(result.stdout)
    assert resolved["engines"]["wordlist"]["delete"] == ["idiot"]
    assert resolved["daemon"]["drain_timeout"] == 10.0
    assert resolved["sinks"][0] == {"name": "jsonl", "type": "jsonl", "path": "-",
                                    "include_text": True}


def test_fatal_runtime_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        WORDLIST_CONFIG.format(format="text", path=str(tmp_path / "missing" / "d.jsonl")),
    )
    result = run_chatmod("run", "-c", str(config), input=b"hi\n")
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "chatmod: error: cannot open" in stderr
    assert "Traceback" not in stderr
    debug = run_chatmod("run", "-c", str(config), "--debug", input=b"hi\n")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr.decode()


def test_version_plugins_and_usage() -> None:
    version = run_chatmod("--version")
    assert version.returncode == 0
    assert version.stdout.decode().startswith("chatmod 0.")
    plugins = run_chatmod("plugins").stdout.decode()
    for row in ("source  stdin", "sink    jsonl", "sink    log", "engine  chatsight",
                "engine  local", "engine  wordlist"):
        assert row in plugins
    assert "chatmod.plugins.local:LocalEngine" in plugins
    assert run_chatmod("run").returncode == 2
    assert run_chatmod("frobnicate").returncode == 2


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The daemon reading a stdin pipe that stays open, deciding into a file.

    Its stderr goes to ``stderr.log`` beside the decisions file.
    """
    out = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "c.toml", WORDLIST_CONFIG.format(format="text", path=out))
    with (tmp_path / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            chatmod_command("run", "-c", str(config)),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        yield process, out
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdin is not None
        process.stdin.close()


def wait_for_log(path: Path, text: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged in {timeout} s:\n{path.read_text()}")


def send_lines(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("".join(line + "\n" for line in lines).encode())
    process.stdin.flush()


def wait_for_ids(path: Path, count: int, timeout: float = 15.0) -> list[dict[str, object]]:
    """Decisions in ``path`` once there are ``count`` of them (the writer keeps the file open)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            data = path.read_bytes()
            # Only whole lines: the daemon may be in the middle of writing the last one.
            records = decision_lines(data[:data.rfind(b"\n") + 1])
            if len(records) >= count:
                return records
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} decisions in {timeout} s")


def test_decisions_are_visible_while_input_is_still_open(
    daemon: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, out = daemon
    send_lines(process, ["first", "you idiot"])
    records = wait_for_ids(out, 2)
    assert sorted(r["text"] for r in records) == ["first", "you idiot"]  # type: ignore[type-var]
    assert process.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_finishes_what_was_read_and_exits_0(
    daemon: tuple[subprocess.Popen[bytes], Path], signum: int,
) -> None:
    process, out = daemon
    send_lines(process, [f"line {i}" for i in range(200)])
    wait_for_ids(out, 200)
    process.send_signal(signum)
    assert process.wait(timeout=15) == 0
    assert len(decision_lines(out.read_bytes())) == 200
    stderr = (out.parent / "stderr.log").read_text()
    assert "stopped reading" in stderr
    assert "200 received, 200 decided" in stderr


def test_sighup_reopens_the_decisions_file(
    daemon: tuple[subprocess.Popen[bytes], Path], tmp_path: Path,
) -> None:
    process, out = daemon
    send_lines(process, ["before rotation"])
    wait_for_ids(out, 1)
    rotated = tmp_path / "decisions.jsonl.1"
    out.rename(rotated)
    process.send_signal(signal.SIGHUP)
    wait_for_log(tmp_path / "stderr.log", "SIGHUP: reopened output files")
    send_lines(process, ["after rotation"])
    records = wait_for_ids(out, 1)
    assert [r["text"] for r in records] == ["after rotation"]
    assert [r["text"] for r in decision_lines(rotated.read_bytes())] == ["before rotation"]
    assert process.stdin is not None
    process.stdin.close()  # end of input: drain and exit 0
    assert process.wait(timeout=15) == 0


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "chatmod"
    result = subprocess.run([str(script), "--version"], capture_output=True, check=False,
                            timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith(b"chatmod ")




@pytest.mark.parametrize("command", ["run", "check-config"])
def test_six_mistakes_one_run_six_lines_exit_2(tmp_path: Path, command: str) -> None:
    config = write_config(tmp_path / "six.toml", SIX_MISTAKES)
    result = run_chatmod(command, "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    keys = ["daemon.drain_timeot", "daemon.log_level", "engines.wordlist.delete",
            "engine.fallback[0]", "sources[0].type", "sinks[0].pth"]
    assert len(lines) == 6, lines
    for line, key in zip(lines, keys, strict=True):
        assert line.startswith(f"chatmod: config error: {config}: {key}: "), line


def test_run_without_c_reads_chatmod_config_and_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path / "env.toml",
                          WORDLIST_CONFIG.format(format="text", path="-"))
    result = run_chatmod("run", input=b"hello\n", env={"CHATMOD_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr.decode()
    assert [d["text"] for d in decision_lines(result.stdout)] == ["hello"]
    assert f"config {config} ($CHATMOD_CONFIG)" in result.stderr.decode()
    missing = run_chatmod("run", env={"CHATMOD_CONFIG": str(tmp_path / "nope.toml")})
    assert missing.returncode == 2
    assert missing.stderr.decode() == (
        f"chatmod: config error: {tmp_path / 'nope.toml'}: no config file there "
        "($CHATMOD_CONFIG); give -c FILE or set CHATMOD_CONFIG\n")


def test_log_level_option_overrides_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path / "quiet.toml", "[daemon]\nlog_level = 'error'\n"
                          + WORDLIST_CONFIG.format(format="text", path="-"))
    quiet = run_chatmod("run", "-c", str(config), input=b"hello\n")
    assert quiet.returncode == 0, quiet.stderr.decode()
    assert b" INFO " not in quiet.stderr
    loud = run_chatmod("run", "-c", str(config), "--log-level", "info", input=b"hello\n")
    assert loud.returncode == 0, loud.stderr.decode()
    assert f"config {config} (-c)".encode() in loud.stderr
    assert run_chatmod("run", "-c", str(config), "--log-level", "loud").returncode == 2


def test_config_reference_prints_markdown() -> None:
    result = run_chatmod("config", "reference")
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert text.startswith("<!-- BEGIN config reference")
    assert "### `[daemon]`" in text
    assert "| `drain_timeout` | number >= 0 | `10.0` |" in text


def test_log_level_option_survives_a_reload(tmp_path: Path) -> None:
    out = tmp_path / "decisions.jsonl"
    config = write_config(tmp_path / "c.toml", "[daemon]\nlog_level = 'error'\n"
                          + WORDLIST_CONFIG.format(format="text", path=out))
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            chatmod_command("run", "-c", str(config), "--log-level", "info"),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    try:
        send_lines(process, ["before"])
        wait_for_ids(out, 1)
        process.send_signal(signal.SIGHUP)
        # Logged at info after the reload applied the config: only seen if info still shows.
        wait_for_log(log, "config reloaded (no change)")
        assert process.stdin is not None
        process.stdin.close()
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_a_port_in_use_is_one_line_naming_the_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "c.toml", WORDLIST_CONFIG.format(
            format="text", path=tmp_path / "out.jsonl") + f"\n[http]\nenabled = true\nport = {port}\n")
        result = run_chatmod("run", "-c", str(config))
    assert result.returncode == 1
    last = result.stderr.decode().strip().splitlines()[-1]
    # Was "fatal: ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)".
    assert last.startswith("chatmod: fatal: OSError: [Errno 98]"), last
    assert "Address already in use" in last


def test_command_line_mistakes_are_usage_errors_and_config_mistakes_config_errors(
        tmp_path: Path) -> None:
    # Both exit 2; the label says which to fix: the command line or the config file.
    config = write_config(tmp_path / "c.toml", WORDLIST_CONFIG.format(format="text", path="-"))
    missing = run_chatmod("replay", str(tmp_path / "nothere.jsonl"), "-c", str(config))
    assert missing.returncode == 2
    assert missing.stderr.decode() == (
        f"chatmod: usage error: {tmp_path / 'nothere.jsonl'}: no such file\n")
    # No state directory for the queue or the strikes: both name the config key, both exit 2.
    review = run_chatmod("review", "list", "-c", str(config))
    strikes = run_chatmod("strikes", "show", "bob", "-c", str(config))
    assert (review.returncode, strikes.returncode) == (2, 2)
    assert review.stderr.decode().startswith("chatmod: config error: review.backend: ")
    assert strikes.stderr.decode().startswith("chatmod: config error: state.backend: ")
