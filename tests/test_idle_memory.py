"""What a daemon loads that its config does not use: the Redis client only with Redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .helpers import WORDLIST_CONFIG, write_config

PROBE = """
import sys
from chatmod.cli.main import main  # everything ``chatmod run`` imports
from chatmod.config.load import load_config
from chatmod.runtime.service import Service
Service(load_config(sys.argv[1]), sys.argv[1])
print("coredis" in sys.modules)
"""


def test_a_daemon_without_redis_does_not_load_the_redis_client(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", WORDLIST_CONFIG.format(
        format="jsonl", path=tmp_path / "d.jsonl"))
    done = subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True,
                          text=True, timeout=60, check=True)
    # Before: always loaded by the service module, 17 MiB of the 52 MiB an idle daemon took.
    assert done.stdout.strip() == "False"
