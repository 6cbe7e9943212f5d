"""The daemon's state directory: where keys and counters outlive a restart."""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIRECTORY_ENV = "STATE_DIRECTORY"


def state_directory(configured: str) -> Path | None:
    """The configured state directory, else systemd's ``$STATE_DIRECTORY``, else None."""
    if configured:
        return Path(configured)
    from_systemd = os.environ.get(STATE_DIRECTORY_ENV, "")
    return Path(from_systemd.split(":")[0]) if from_systemd else None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (0600), replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
