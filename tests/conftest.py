from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Unclosed sockets and files warn in the test that leaked them, not a later one."""
    yield
    gc.collect()
