"""Logging to stderr: one line per record, secrets never shown."""

from __future__ import annotations

import logging
import sys

from chatmod.schema import Secret

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


def setup_logging(level: str = "info", *, debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper()))
    if not debug:
        # Library chatter (connection pools, websocket frames) is for --debug only.
        for noisy in ("httpx", "httpcore", "trio-websocket"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
