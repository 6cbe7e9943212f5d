from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from chatmod.config.schema import Secret
from chatmod.runtime.logsetup import JournalFormatter, RedactSecrets, setup_logging

from .helpers import WORDLIST_CONFIG, chatmod_command


def test_log_records_are_scrubbed_of_secret_values(caplog: pytest.LogCaptureFixture) -> None:
    Secret("env TEST", "tok-very-secret-123")
    logger = logging.getLogger("chatmod.test.redact")
    logger.addFilter(RedactSecrets())
    try:
        with caplog.at_level(logging.INFO, logger="chatmod.test.redact"):
            logger.info("connecting with %s to %s", "tok-very-secret-123", "host")
    finally:
        logger.filters.clear()
    assert caplog.messages == ["connecting with *** to host"]


def test_journal_prefixes_every_line_with_its_priority() -> None:
    formatter = JournalFormatter()
    for level, prefix in ((logging.DEBUG, "<7>"), (logging.INFO, "<6>"),
                          (logging.WARNING, "<4>"), (logging.ERROR, "<3>"),
                          (logging.CRITICAL, "<2>")):
        record = logging.LogRecord("chatmod.x", level, __file__, 1, "two\nlines", None, None)
        assert formatter.format(record) == f"{prefix}chatmod.x: two\n{prefix}lines"


def stderr_lines(tmp_path: Path, config_text: str, journal: bool) -> list[str]:
    config = tmp_path / "c.toml"
    config.write_text(config_text)
    log = tmp_path / "stderr.log"
    with log.open("wb") as stderr:
        stat = os.fstat(stderr.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}" if journal
               else "1:1"}
        subprocess.run(chatmod_command("run", "-c", str(config)), input=b"hello\n\xff bad\n",
                       stdout=subprocess.DEVNULL, stderr=stderr, env=env, timeout=60, check=True)
    return log.read_text().splitlines()


def test_daemon_writes_priorities_only_when_stderr_is_the_journal(tmp_path: Path) -> None:
    config = WORDLIST_CONFIG.format(format="text", path="-")
    journal = stderr_lines(tmp_path, config, journal=True)
    assert journal
    assert all(line[:3] in ("<6>", "<4>", "<3>") for line in journal), journal
    assert any(line.startswith("<4>chatmod.pipeline: stdin: line 2: invalid UTF-8")
               for line in journal)
    plain = stderr_lines(tmp_path, config, journal=False)  # inherited, but not our stderr
    assert not any(line.startswith("<") for line in plain)


def test_json_log_format(tmp_path: Path) -> None:
    config = "[daemon]\nlog_format = 'json'\n" + WORDLIST_CONFIG.format(format="text", path="-")
    records = [orjson.loads(line) for line in stderr_lines(tmp_path, config, journal=False)]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    assert any(r["level"] == "warning" and "invalid UTF-8" in r["message"] for r in records)


async def test_log_sink_shows_alerts(caplog: pytest.LogCaptureFixture) -> None:
    from chatmod.plugins.log_sink import LogConfig, LogSink

    sink = LogSink("log", LogConfig())
    with caplog.at_level(logging.WARNING, logger="chatmod.decisions"):
        await sink.write_alert({"type": "alert", "alert": "keyword", "keyword": "pizza\x1b[2J",
                                "metadata": {"room": 5}, "text": "secret text"})
    assert caplog.messages == [
        "ALERT alert=keyword, keyword=pizza\\x1b[2J, metadata={'room': 5}"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_peer_chosen_string_cannot_forge_a_log_line(
        monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    # A message id, author or reason comes from chat input; logged as is, a newline in it
    # would start a line the operator takes for the daemon's own.
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("info", fmt=fmt)
        logging.getLogger("chatmod.pipeline").error(
            "message %s failed", "m1\n2026-01-01 00:00:00 INFO    chatmod: all clear\x1b[2J")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("chatmod.pipeline").exception("with a traceback")
    finally:
        root.handlers[:], root.level = saved
    lines = stream.getvalue().splitlines()
    if fmt == "json":
        assert orjson.loads(lines[0])["message"].endswith("all clear\x1b[2J failed")
        assert len(lines) == 2  # the JSON encoding escapes by itself
        return
    assert lines[0].endswith(
        "message m1\\n2026-01-01 00:00:00 INFO    chatmod: all clear\\x1b[2J failed")
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert "Traceback (most recent call last):" in lines  # a traceback keeps its lines
