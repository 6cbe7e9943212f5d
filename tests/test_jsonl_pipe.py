"""The jsonl sink writing to a pipe (stdout to another program): small batches from the event
loop, without a worker thread's round trip; a full pipe still holds the sink back."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from chatmod.core.model import Decision, Message, Verdict
from chatmod.plugins.jsonl_sink import JsonlConfig, JsonlSink


def decision(i: int, text: str = "hello") -> Decision:
    return Decision(Message(id=f"m-{i}", text=text, source="s"),
                    Verdict("pass", 0.1, "e", "local"), "none", 1.0)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A named pipe and its read end (non-blocking), open before the sink opens it."""
    path = tmp_path / "decisions.fifo"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, reader
    os.close(reader)


def read_all(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def thread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions handed to a worker thread."""
    calls: list[str] = []
    real = trio.to_thread.run_sync

    async def counted(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(function, "__name__", repr(function)))
        return await real(function, *args, **kwargs)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    return calls


async def test_small_batches_reach_a_pipe_without_a_worker_thread(
    fifo: tuple[Path, int], thread_calls: list[str],
) -> None:
    path, reader = fifo
    sink = JsonlSink("jsonl", JsonlConfig(path=str(path)))
    await sink.run()
    thread_calls.clear()  # opening the file is a thread's job (a path may block)
    await sink.write([decision(1), decision(2)])
    # On the reader's side as soon as write() returned, and no worker thread was asked
    # (before: one round trip to a thread per batch, tens to hundreds of µs each).
    assert [orjson.loads(x)["id"] for x in read_all(reader).splitlines()] == ["m-1", "m-2"]
    assert thread_calls == []
    # A batch over PIPE_BUF bytes could block part-way: it still goes through a thread.
    big = [decision(i, "x" * 2000) for i in range(3, 6)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.write, big)
        received = b""
        with trio.fail_after(10):
            while received.count(b"\n") < 3:
                await trio.lowlevel.wait_readable(reader)  # the thread may fill the pipe
                received += read_all(reader)
    assert [orjson.loads(x)["id"] for x in received.splitlines()] == ["m-3", "m-4", "m-5"]
    assert thread_calls == ["_write_blocking"]
    await sink.aclose()


async def test_a_full_pipe_holds_the_sink_back_and_the_loop_keeps_running(
    fifo: tuple[Path, int],
) -> None:
    path, reader = fifo
    sink = JsonlSink("jsonl", JsonlConfig(path=str(path)))
    await sink.run()
    filler = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        filled = 0
        for size in (4096, 1):  # whole pages, then the last page's remaining bytes
            with contextlib.suppress(BlockingIOError):
                while True:
                    filled += os.write(filler, b"." * size)
    finally:
        os.close(filler)
    written = trio.Event()

    async def write() -> None:
        await sink.write([decision(1)])
        written.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            # Every task waits: the sink waits for room without blocking the event loop.
            await trio.testing.wait_all_tasks_blocked()
            assert not written.is_set()
            drained = read_all(reader)
            assert drained == b"." * filled
            await written.wait()
    assert [orjson.loads(x)["id"] for x in read_all(reader).splitlines()] == ["m-1"]
    await sink.aclose()
