from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest
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


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Unclosed sockets and files warn in the test that leaked them, not a later one."""
    yield
    gc.collect()
