"""The systemd units pass scripts/check-units, and the check does fail on a weak unit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="needs systemd-analyze (scripts/test installs it)")


def check_units(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "scripts" / "check-units"), str(directory)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_shipped_units_pass() -> None:
    result = check_units(REPO / "systemd")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chatmod.service: Overall exposure level" in result.stdout
    assert "chatmod@.service: Overall exposure level" in result.stdout


def test_weakened_or_broken_units_fail(tmp_path: Path) -> None:
    unit = (REPO / "systemd" / "chatmod.service").read_text()
    weak = tmp_path / "weak"
    weak.mkdir()
    # Everything from DynamicUser= (where the hardening starts) to [Install] removed.
    hardening = unit[unit.index("DynamicUser="):unit.index("[Install]")]
    (weak / "chatmod.service").write_text(unit.replace(hardening, "\n"))
    assert check_units(weak).returncode != 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "chatmod.service").write_text(unit.replace("WatchdogSec=30", "WatchdogSec=thirty"))
    result = check_units(broken)
    assert result.returncode != 0
    assert "Failed to parse sec value, ignoring: thirty" in result.stdout
