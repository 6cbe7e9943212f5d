"""The C heap, set so the memory a batch frees is reused by the next batch.

The pipeline works in batches: a read of up to a thousand lines becomes messages, decisions
and decision lines, which are all freed together once the lines are written. With glibc's
defaults the heap's top is handed back to the kernel as soon as more than 128 KiB of it is
free, and the next batch faults the same pages in again: about one page fault per message
in the no-op pipeline (``bench/pipeline.py``), and ``b"".join`` of a batch of
``orjson.dumps`` lines cost 2.0 µs a line instead of 0.3. Keeping a few MiB of padding at
the top when the heap grows or shrinks (``M_TOP_PAD``) removes those faults; it costs at
most that much resident memory.

Only glibc has the knob. An operator who sets glibc's own ``MALLOC_*_`` environment
variables (``MALLOC_TOP_PAD_``, ``MALLOC_TRIM_THRESHOLD_``, ...) keeps their settings: the
daemon then leaves the heap alone.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

#: glibc's mallopt parameter for the padding kept when the heap's top grows or is trimmed.
M_TOP_PAD = -2
#: Bytes of padding: a few batches' worth of messages, decisions and lines.
TOP_PAD_BYTES = 4 * 1024 * 1024
#: glibc's environment variables for the same settings: when one is set, the operator chose.
GLIBC_HEAP_VARIABLES = ("MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                        "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def keep_freed_heap(environ: Mapping[str, str] = os.environ) -> str:
    """Set the heap's top padding to :data:`TOP_PAD_BYTES` (glibc only); says what was done,
    for the start-up log."""
    chosen = [name for name in GLIBC_HEAP_VARIABLES if name in environ]
    if chosen:
        return f"left as {chosen[0]} sets it"
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return "left as it is (no mallopt: not glibc)"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_TOP_PAD, TOP_PAD_BYTES) != 1:
        return "left as it is (mallopt refused M_TOP_PAD)"
    return f"top padding {TOP_PAD_BYTES // (1024 * 1024)} MiB"
