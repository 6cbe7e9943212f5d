"""The cyclic collector after start-up: start-up objects frozen, thawed by a reload, the
interpreter left as it was at the stop."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from chatmod.config.load import load_config
from chatmod.plugins.stdin import StdinSource
from chatmod.runtime.collector import (
    YOUNG_COLLECTION_THRESHOLD,
    StartUpFreezer,
    freeze_survivors,
)
from chatmod.runtime.service import Service
from chatmod.runtime.systemd import Notifier

from .helpers import WORDLIST_CONFIG, write_config


class Cycle:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _thawed_after() -> Iterator[None]:
    yield
    gc.unfreeze()  # whatever a failed test left frozen


def frozen_cycle() -> weakref.ref[Cycle]:
    """A cycle that was alive at the freeze and is garbage after it."""
    cycle = Cycle()
    gone = weakref.ref(cycle)
    freeze_survivors()
    del cycle
    return gone


def test_start_up_garbage_is_collected_before_the_freeze() -> None:
    cycle = Cycle()
    gone = weakref.ref(cycle)
    del cycle  # garbage, but in a cycle: still there until a collection
    assert gone() is not None
    assert freeze_survivors() == gc.get_freeze_count() > 0
    assert gone() is None  # not frozen forever
    # What was frozen is out of the collector's sight: a full collection no longer walks it.
    assert len(gc.get_objects(generation=2)) < gc.get_freeze_count()


async def test_once_started_the_young_generation_is_collected_less_often() -> None:
    before = gc.get_threshold()
    freezer = StartUpFreezer()
    async with trio.open_nursery() as nursery:
        await nursery.start(freezer.run)
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
        assert before[0] < YOUNG_COLLECTION_THRESHOLD
        nursery.cancel_scope.cancel()
    assert gc.get_threshold() == before  # the interpreter as it was


async def test_a_reload_thaws_and_freezes_again_after_the_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    freezer = StartUpFreezer(refreeze_delay=90.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(freezer.run)
        assert gc.get_freeze_count() > 0
        assert freezer.freezes == 1
        replaced = frozen_cycle()  # e.g. an engine the reload replaces
        gc.collect()
        assert replaced() is not None  # frozen garbage is never collected...
        freezer.thaw()
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert replaced() is None  # ...until a reload thaws it
        await trio.sleep(60.0)
        freezer.thaw()  # a second reload within the delay postpones the freeze
        await trio.sleep(60.0)
        assert freezer.freezes == 1
        assert gc.get_freeze_count() == 0
        await trio.sleep(31.0)  # 90 s after the last reload
        assert freezer.freezes == 2
        assert gc.get_freeze_count() > 0
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0  # stopped: the interpreter as it was


class ReadyNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__({})
        self.is_ready = trio.Event()

    def ready(self, status: str) -> None:
        self.is_ready.set()


async def test_the_daemon_freezes_its_start_up_objects_and_a_reload_thaws_them(
    tmp_path: Path,
) -> None:
    out = tmp_path / "d.jsonl"
    config_path = write_config(tmp_path / "c.toml", WORDLIST_CONFIG.format(format="text",
                                                                           path=out))
    notifier = ReadyNotifier()
    service = Service(load_config(config_path), config_path, notifier)
    read_end, write_end = os.pipe()
    source = service.pipeline.sources["stdin"]
    assert isinstance(source, StdinSource)
    source.fd = read_end  # the test's pipe, not the test runner's stdin
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(service.serve)
                await notifier.is_ready.wait()
                assert gc.get_freeze_count() > 0  # before this work: 0, never frozen
                assert service.freezer.freezes == 1
                # A reload that changes something thaws what it may have replaced.
                config_path.write_text(config_path.read_text().replace('"pizza"', '"pasta"'))
                notifier.is_ready = trio.Event()
                service.reload()
                await notifier.is_ready.wait()
                assert service.reloads == 1
                assert gc.get_freeze_count() == 0
                os.write(write_end, b"one pasta please\n")
                os.close(write_end)
                write_end = -1
        assert b'"flag"' in out.read_bytes()  # the reloaded list decided it
        assert gc.get_freeze_count() == 0
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
