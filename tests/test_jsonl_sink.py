from __future__ import annotations

from pathlib import Path

import orjson
import pytest

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
