"""Logging to stderr: one line per record, secrets never shown."""

from __future__ import annotations

import logging
import os
import sys

import orjson

from chatmod.config.schema import Secret
from chatmod.core.model import format_timestamp
from chatmod.core.text import CONTROL_ESCAPES
from chatmod.runtime.systemd import syslog_priority

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class RedactSecrets(logging.Filter):
    """Replaces any resolved secret's value in a record by ``***`` (defence in depth)."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = Secret.revealed_values()
        if values:
            message = record.getMessage()
            redacted = message
            for value in values:
                redacted = redacted.replace(value, "***")
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


class EscapeControls(logging.Filter):
    """Escapes control characters in a record's message: a chat line's id, author or text in
    a log line can neither forge another line (a newline) nor rewrite the operator's terminal.
    Tracebacks (``exc_info``) keep their lines; JSON output escapes by itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = message.translate(CONTROL_ESCAPES)
        if shown != message:
            record.msg, record.args = shown, None
        return True


class JournalFormatter(logging.Formatter):
    """``<priority>`` first, so journald records each line's level; no timestamp (journald
    keeps its own). Wraps the text or JSON formatter."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__("%(name)s: %(message)s")
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record) if self.inner else super().format(record)
        prefix = f"<{syslog_priority(record.levelno)}>"
        # Every line of a multi-line record (a traceback) keeps the record's level.
        return "\n".join(prefix + line for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message`` (+ ``exception``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": format_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def stderr_is_journal() -> bool:
    """systemd sets ``$JOURNAL_STREAM`` to the journal stream's ``device:inode``; it may be
    inherited by a child whose stderr goes elsewhere, so compare it with stderr's."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


def set_level(level: str) -> None:
    logging.getLogger().setLevel(getattr(logging, level.upper()))


def skip_unused_record_fields() -> None:
    """No caller lookup (a walk up the stack), thread, process or multiprocessing names per
    record: no format here shows them, and the log sink makes a record per decision, on the
    decision path (the logging HOWTO's "Optimization": about a third of a record's cost)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def setup_logging(level: str = "info", *, debug: bool = False, fmt: str = "text") -> None:
    skip_unused_record_fields()
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if fmt == "json" else None
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter(formatter))
    else:
        handler.setFormatter(formatter or logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(RedactSecrets())
    if fmt != "json":
        handler.addFilter(EscapeControls())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper()))
    if not debug:
        # Library chatter (connection pools, websocket frames) is for --debug only.
        for noisy in ("httpx", "httpcore", "trio-websocket"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
