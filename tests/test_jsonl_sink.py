from __future__ import annotations

import contextlib
import os
import select
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from chatmod.core.model import Decision, Message, Verdict
from chatmod.errors import SinkError
from chatmod.plugins.jsonl_sink import JsonlConfig, JsonlSink


def decision(i: int) -> Decision:
    return Decision(Message(id=f"m-{i}", text="secret text", source="s"),
                    Verdict("pass", 0.1, "e", "local"), "none", 1.0)


async def test_lines_are_flushed_per_write_and_reopen_follows_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    sink = JsonlSink("jsonl", JsonlConfig(path=str(path), include_text=False))
    await sink.run()
    await sink.write([decision(1), decision(2)])
    # Visible to another reader before the sink is closed: flushed.
    lines = path.read_bytes().splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == ["m-1", "m-2"]
    assert b"secret text" not in path.read_bytes()
    path.rename(tmp_path / "decisions.jsonl.1")
    await sink.write([decision(3)])  # still the old, moved file
    sink.reopen()
    await sink.write([decision(4)])
    await sink.aclose()
    assert [orjson.loads(x)["id"] for x in path.read_bytes().splitlines()] == ["m-4"]
    rotated = (tmp_path / "decisions.jsonl.1").read_bytes().splitlines()
    assert [orjson.loads(x)["id"] for x in rotated] == ["m-1", "m-2", "m-3"]


async def test_unwritable_path_is_a_sink_error(tmp_path: Path) -> None:
    sink = JsonlSink("jsonl", JsonlConfig(path=str(tmp_path / "no" / "such" / "dir.jsonl")))
    with pytest.raises(SinkError, match=r"cannot open .*dir\.jsonl: No such file"):
        await sink.run()


async def test_sink_reports_write_errors(tmp_path: Path) -> None:
    sink = JsonlSink("jsonl", JsonlConfig(path="/dev/full"))
    await sink.run()
    with pytest.raises(SinkError, match="cannot write /dev/full"):
        await sink.write([decision(1)])
    await sink.aclose()  # must not raise although the buffered line can never be flushed


def open_fifo(tmp_path: Path) -> tuple[Path, int]:
    """A named pipe and its reading end (opened first, so the sink's open does not block)."""
    path = tmp_path / "decisions.fifo"
    os.mkfifo(path)
    return path, os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def read_available(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def read_lines(fd: int, count: int) -> bytes:
    """Blocking reads until ``count`` lines that are not empty came."""
    data = b""
    while len(data.split()) < count:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


async def test_a_pipe_with_room_is_written_without_a_worker_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, reader = open_fifo(tmp_path)
    sink = JsonlSink("jsonl", JsonlConfig(path=str(path)))
    await sink.run()
    hand_offs: list[object] = []
    real_run_sync = trio.to_thread.run_sync

    async def counted(function: Any, *args: Any) -> Any:
        hand_offs.append(function)
        return await real_run_sync(function, *args)

    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    await sink.write([decision(1)])
    await sink.write([decision(2), decision(3)])
    assert hand_offs == []
    assert [orjson.loads(x)["id"] for x in read_available(reader).splitlines()] == [
        "m-1", "m-2", "m-3"]
    # A batch over PIPE_BUF may not fit whole: a worker thread writes it.
    big = [decision(i) for i in range(4, 4 + select.PIPE_BUF // 100)]
    await sink.write(big)
    assert len(hand_offs) == 1
    assert len(read_available(reader).splitlines()) == len(big)
    await sink.aclose()
    os.close(reader)


async def test_a_full_pipe_waits_in_a_worker_thread_and_loses_nothing(tmp_path: Path) -> None:
    # The reader stalls with the pipe full: the event loop must keep running, and every
    # line must arrive, in order, once it reads again.
    path, reader = open_fifo(tmp_path)
    sink = JsonlSink("jsonl", JsonlConfig(path=str(path), include_text=False))
    await sink.run()
    await sink.write([decision(0)])
    filler = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    for chunk in (b"\n" * 4096, b"\n"):  # the pipe full to its last byte
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(filler, chunk)
    os.close(filler)
    blocked_write_done = trio.Event()

    async def write_one_more() -> None:
        await sink.write([decision(1)])
        blocked_write_done.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_one_more)
            await trio.testing.wait_all_tasks_blocked()
            assert not blocked_write_done.is_set()  # waiting for the reader, loop alive
            os.set_blocking(reader, True)
            received = await trio.to_thread.run_sync(
                read_lines, reader, 2, abandon_on_cancel=True)
            await blocked_write_done.wait()
    ids = [orjson.loads(x)["id"] for x in received.splitlines() if x]
    assert ids == ["m-0", "m-1"]
    await sink.aclose()
    os.close(reader)


async def test_a_pipe_whose_reader_went_away_is_a_sink_error(tmp_path: Path) -> None:
    # The reader exits: the write from the event loop fails as a thread's would, as a
    # SinkError (the pipeline logs it and hands the batch to the dead letters).
    path, reader = open_fifo(tmp_path)
    sink = JsonlSink("jsonl", JsonlConfig(path=str(path)))
    await sink.run()
    os.close(reader)
    with trio.fail_after(10), pytest.raises(SinkError, match=r"cannot write .*decisions\.fifo"):
        await sink.write([decision(1)])
    await sink.aclose()
