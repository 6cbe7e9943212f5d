"""The C heap kept padded, so a batch's freed memory is reused instead of faulted back."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from chatmod.runtime.allocator import GLIBC_HEAP_VARIABLES, keep_freed_heap

from .helpers import SUBPROCESS_TIMEOUT, WORDLIST_CONFIG, chatmod_command, write_config

GLIBC = platform.libc_ver()[0] == "glibc"

# A child that builds and frees 50 batches of decision-sized lines, as the sink stage does,
# and prints the page faults they took; with "keep" it first pads the heap as the daemon does.
BATCHES = """
import resource, sys
import orjson
from chatmod.runtime.allocator import keep_freed_heap
if sys.argv[1] == "keep":
    print(keep_freed_heap(), file=sys.stderr)
def batch():
    lines = [orjson.dumps({"id": f"m-{i}", "text": "x" * 300}) for i in range(1000)]
    return len(b"".join(lines))
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def plain_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in GLIBC_HEAP_VARIABLES}


def page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", BATCHES, mode], env=plain_environment(),
                          capture_output=True, check=True, timeout=SUBPROCESS_TIMEOUT)
    return int(done.stdout)


@pytest.mark.skipif(not GLIBC, reason="the knob is glibc's")
def test_batches_reuse_freed_memory_instead_of_faulting_it_back() -> None:
    # Counts, not times: each batch takes about 1,000 faults with glibc's defaults (53,900 for
    # 50 batches measured) and the pages are faulted in once when the heap is padded (4,300).
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 20_000
    assert kept * 5 < default


@pytest.mark.skipif(not GLIBC, reason="the knob is glibc's")
def test_padding_is_set_on_glibc() -> None:
    assert keep_freed_heap({}) == "top padding 4 MiB"


@pytest.mark.parametrize("variable", GLIBC_HEAP_VARIABLES)
def test_an_operators_own_glibc_setting_is_left_alone(variable: str) -> None:
    assert keep_freed_heap({variable: "0"}) == f"left as {variable} sets it"


@pytest.mark.skipif(not GLIBC, reason="the knob is glibc's")
def test_the_daemon_pads_the_heap_at_start_unless_the_operator_chose(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chatmod.toml", "[daemon]\nlog_level = \"debug\"\n"
                          + WORDLIST_CONFIG.format(format="jsonl", path=tmp_path / "out.jsonl"))

    def run(env: dict[str, str]) -> bytes:
        done = subprocess.run(chatmod_command("run", "-c", str(config)), input=b"", env=env,
                              capture_output=True, timeout=SUBPROCESS_TIMEOUT, check=False)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert b"C heap: top padding 4 MiB" in run(plain_environment())
    chosen = run({**plain_environment(), "MALLOC_TOP_PAD_": "65536"})
    assert b"C heap: left as MALLOC_TOP_PAD_ sets it" in chosen
