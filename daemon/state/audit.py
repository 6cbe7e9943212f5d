"""The audit log: one JSON line per change an operator made (who, what, when, why).

Strikes cleared, exemptions added, reviews decided: every change by a person is appended to
``audit.jsonl`` under the state directory (mode 0600, append-only, one ``write`` per line so
concurrent writers never interleave within a line) and logged on ``chatmod.audit``.
"""

from __future__ import annotations

import getpass
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from chatmod.core.text import printable

AUDIT_FILE_NAME = "audit.jsonl"
# Characters of a name or reason shown in the log line (the file keeps them whole).
LOG_FIELD_WIDTH = 200
log = logging.getLogger("chatmod.audit")


def current_user() -> str:
    """The name of the person running this command (``--by`` defaults to it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@dataclass(frozen=True)
class AuditEntry:
    """One change: ``who`` did ``what`` (e.g. ``exempt.add``) at ``ts`` because ``why``."""

    who: str
    what: str
    why: str = ""
    detail: Mapping[str, Any] | None = None
    ts: float = 0.0

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "ts": self.ts or time.time(),
            "who": self.who,
            "what": self.what,
            "why": self.why,
        }
        if self.detail:
            record.update({key: value for key, value in self.detail.items() if key not in record})
        return record


class AuditLog:
    """Appends audit entries to ``<state_dir>/audit.jsonl``; no state dir means log only."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / AUDIT_FILE_NAME if state_dir is not None else None

    def record(self, entry: AuditEntry) -> dict[str, Any]:
        """Write one entry and return the record written. Raises OSError if the file cannot
        be written: a change that cannot be audited should not be reported as made."""
        record = entry.as_record()
        line = orjson.dumps(record) + b"\n"
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        # Escaped: a name or reason with a newline must not forge a second log line.
        why = f" ({printable(entry.why, LOG_FIELD_WIDTH)})" if entry.why else ""
        log.info("audit: %s by %s%s", printable(entry.what, LOG_FIELD_WIDTH),
                 printable(entry.who, LOG_FIELD_WIDTH), why)
        return record

    def read(self) -> list[dict[str, Any]]:
        """Every entry so far, oldest first (for ``chatmod audit`` and tests)."""
        if self.path is None or not self.path.exists():
            return []
        return [orjson.loads(line) for line in self.path.read_bytes().splitlines() if line.strip()]
