"""The suite's own time bounds: a test that hangs fails, it does not stall the run.

Runs pytest in a subprocess on a few hanging tests, with this suite's conftest.py and
pytest settings (pyproject.toml), only the limits made short.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from .helpers import REPO, SUBPROCESS_TIMEOUT

HANGING_TESTS = '''
import time

import pytest
import trio
import trio.testing


@pytest.mark.time_limit(0.5)
async def test_waits_forever(nursery: trio.Nursery) -> None:
    nursery.start_soon(trio.sleep_forever)
    await trio.Event().wait()


@pytest.mark.time_limit(0.5)
async def test_deadlocks_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    await trio.Event().wait()


@pytest.mark.time_limit(5)
async def test_sleeps_through_virtual_hours(autojump_clock: trio.testing.MockClock) -> None:
    await trio.sleep(3 * 3600)


@pytest.mark.time_limit(5)
async def test_waits_on_a_thread_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    # Every task waits on the thread: the clock may jump, the deadline must not come.
    await trio.to_thread.run_sync(time.sleep, 0.3)
    await trio.sleep(0)  # where a deadline the clock jumped to would be delivered


@pytest.mark.parametrize("n", [1, 2])
async def test_ends(n: int) -> None:
    await trio.sleep(0)
'''

BLOCKED_SYNC_TEST = '''
import time


def test_blocks(tmp_path):
    time.sleep(600)
'''


def suite_settings(timeout: int) -> str:
    """This suite's ``[tool.pytest.ini_options]`` as a pytest.ini, with ``timeout`` set."""
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]
    ini = dict(options["ini_options"], timeout=timeout)
    ini.pop("testpaths", None)
    lines = ["[pytest]"]
    for key, value in ini.items():
        if isinstance(value, list):
            lines.append(f"{key} =")
            lines.extend(f"    {item}" for item in value)
        else:
            lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    return "\n".join(lines) + "\n"


def run_pytest(tmp_path: Path, tests: str, timeout: int) -> tuple[subprocess.CompletedProcess[str], float]:
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text(suite_settings(timeout))
    (tmp_path / "test_hanging.py").write_text(tests)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=False)
    return result, time.monotonic() - started


def test_a_hanging_async_test_fails_at_its_deadline(tmp_path: Path) -> None:
    result, took = run_pytest(tmp_path, HANGING_TESTS, timeout=SUBPROCESS_TIMEOUT)
    summary = result.stdout.strip().splitlines()[-1]
    assert "2 failed, 4 passed" in summary, result.stdout
    for name in ("test_waits_forever", "test_deadlocks_in_virtual_time"):
        assert f"FAILED test_hanging.py::{name} - TooSlowError" in result.stdout
    assert took < 30  # the deadlines were 0.5 s


def test_a_blocked_sync_test_ends_the_run_with_every_stack(tmp_path: Path) -> None:
    result, took = run_pytest(tmp_path, BLOCKED_SYNC_TEST, timeout=1)
    assert result.returncode != 0
    assert "Timeout" in result.stdout + result.stderr
    assert "time.sleep(600)" in result.stdout + result.stderr  # where it was stuck
    assert took < 30
