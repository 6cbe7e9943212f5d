from __future__ import annotations

import contextlib
import functools
import gc
import os
import threading
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings

# Property tests run under a named hypothesis profile (HYPOTHESIS_PROFILE picks it):
# "default" keeps the suite fast and reproducible (the same examples every run, no database);
# "thorough" explores 10,000 fresh examples per property and keeps failures in .hypothesis/.
# No deadline in either: a loaded machine would make per-example timing flaky.
settings.register_profile(
    "default", max_examples=200, deadline=None, derandomize=True,
    print_blob=True,
)
settings.register_profile(
    "thorough", max_examples=10_000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Every async test has a deadline in real seconds: a test that waits for something that never
# comes fails with TooSlowError (its fixtures torn down, the run going on), rather than
# hanging. pytest-timeout (pyproject, method "thread") is the last resort behind it, for what
# trio cannot interrupt: a sync test, a blocked event loop, a fixture's teardown.
ASYNC_TEST_DEADLINE = 60.0

Test = Callable[..., Awaitable[None]]


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Unclosed sockets and files warn in the test that leaked them, not a later one."""
    yield
    gc.collect()


def within_deadline(test: Test, seconds: float) -> Test:
    """``test`` cancelled, and failed with TooSlowError, after ``seconds`` of real time.

    A timer thread keeps the time, not ``trio.fail_after``: under an autojump MockClock a
    virtual deadline is where the clock jumps whenever every task waits, even on a thread or
    a socket, so it would fail a test that is merely waiting for real work.
    """

    @functools.wraps(test)
    async def run_within_deadline(**kwargs: Any) -> None:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:

            def expire() -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(scope.cancel)

            timer = threading.Timer(seconds, expire)
            timer.daemon = True
            timer.start()
            try:
                await test(**kwargs)
            finally:
                timer.cancel()
                timer.join()
        if scope.cancelled_caught:
            raise trio.TooSlowError(f"the test did not end within {seconds:g} s")

    run_within_deadline.__dict__["chatmod_deadline"] = seconds  # marks it wrapped
    return run_within_deadline


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Bound each trio test before pytest-trio wraps it into ``trio.run``.

    Not an autouse async fixture: pytest-trio runs only the trio fixtures the test itself
    asks for, and each fixture in its own task, where a cancel scope would not cover the test.
    Running first (``tryfirst``), this wraps the test function that pytest-trio then runs.
    """
    if isinstance(item, pytest.Function) and item.get_closest_marker("trio") is not None:
        marker = item.get_closest_marker("time_limit")
        seconds = float(marker.args[0]) if marker else ASYNC_TEST_DEADLINE
        hypothesis = getattr(item.obj, "hypothesis", None)
        if hypothesis is not None:
            if not hasattr(hypothesis.inner_test, "chatmod_deadline"):
                hypothesis.inner_test = within_deadline(hypothesis.inner_test, seconds)
        elif not hasattr(item.obj, "chatmod_deadline") and not getattr(
                item.obj, "_trio_test_runner_wrapped", False):
            item.obj = within_deadline(item.obj, seconds)
    return (yield)
