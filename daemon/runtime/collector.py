"""Python's cyclic garbage collector, set for a long-running daemon with a latency budget.

Reference counting frees almost everything a message allocates; the cyclic collector is for
the rest. Its full (oldest generation) collections walk every tracked object, and after
start-up those are mostly the daemon's own: modules, the config, compiled patterns, a
loaded model. That walk took 15-20 ms with the default plugins (more with a local model),
a pause every message in flight waits through. Start-up objects live as long as the
daemon, so once it has started they are moved out of the collector's sight
(``gc.freeze()``): full collections then walk only what came after.

The youngest generation is collected every 700 new container objects by default. With
thousands of messages in flight that is once every few dozen messages, each collection
walking what is still alive (the in-flight messages' objects): 2 ms of CPU a thousand
messages in a websocket run at full speed. Once started, it is collected every
:data:`YOUNG_COLLECTION_THRESHOLD` instead: a collection walks about the same survivors, so
its pause is about as long (0.13 -> 0.17 ms on average), and comes a tenth as often (0.5 ms
a thousand messages).

A reload replaces components (engines, sinks) that were frozen with the rest; frozen
garbage is never collected. So a reload thaws everything (the collector sees it all again),
and the daemon freezes again once the replaced components have had time to retire.
"""

from __future__ import annotations

import gc
import logging
import time

import trio

log = logging.getLogger("chatmod.gc")

# Seconds after a reload before freezing again: a replaced engine may answer for up to a
# minute (the pipeline's ENGINE_RETIRE_GRACE) and old sinks get a few seconds to close.
REFREEZE_DELAY = 90.0
# New container objects (net of those freed) between two collections of the youngest
# generation once started; Python's default is 700.
YOUNG_COLLECTION_THRESHOLD = 10_000


def freeze_survivors() -> int:
    """Collect what start-up left behind, then freeze every object still alive; returns
    how many objects are frozen."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("garbage collector: %d start-up objects frozen (%.1f ms)", frozen,
              (time.perf_counter() - started) * 1000)
    return frozen


class StartUpFreezer:
    """Freezes the daemon's objects once it has started (:meth:`run`, with
    ``nursery.start``); :meth:`thaw` on a reload, which freezes again
    :data:`REFREEZE_DELAY` seconds after the last one."""

    def __init__(self, refreeze_delay: float = REFREEZE_DELAY) -> None:
        self.refreeze_delay = refreeze_delay
        self._thawed = trio.Event()
        self._refreeze_at = 0.0
        self._waiting: trio.CancelScope | None = None
        self.freezes = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self._freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
        task_status.started()
        try:
            while True:
                await self._thawed.wait()
                self._thawed = trio.Event()
                with trio.CancelScope(deadline=self._refreeze_at) as self._waiting:
                    await trio.sleep_forever()  # until the deadline, which a reload moves
                self._waiting = None
                self._freeze()
        finally:
            # Stopped (the daemon exits, or a test): leave the interpreter as it was.
            gc.unfreeze()
            gc.set_threshold(*thresholds)

    def thaw(self) -> None:
        """Make every frozen object collectable again (components are being replaced)."""
        gc.unfreeze()
        self._refreeze_at = trio.current_time() + self.refreeze_delay
        if self._waiting is not None:  # already waiting to freeze: later
            self._waiting.deadline = self._refreeze_at
        else:
            self._thawed.set()

    def _freeze(self) -> None:
        freeze_survivors()
        self.freezes += 1
