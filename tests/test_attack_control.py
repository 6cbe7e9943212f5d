"""What a hostile or careless local peer does to live control and the audit log."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path

import pytest
import trio

from chatmod.cli.control import build_request
from chatmod.errors import ConfigError, ControlError
from chatmod.state.audit import AuditEntry, AuditLog
from chatmod.state.control import (
    SOCKET_NAME,
    TOKEN_NAME,
    ControlRequest,
    send_request,
    serve_control,
)

LIST = {"op": "exempt.list", "by": "ann"}


async def _answer(request: ControlRequest) -> dict[str, object]:
    return {"done": request.op}


def test_the_audit_log_line_cannot_be_forged_by_a_name_or_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    forged = "2026-11-26 03:00:00 INFO    chatmod.audit: audit: strikes.clear by root"
    caplog.set_level(logging.INFO, logger="chatmod.audit")
    record = AuditLog(tmp_path).record(AuditEntry(
        who=f"mallory\n{forged}", what="exempt.add", why=f"spam\r\n{forged}\x1b[2J"))
    lines = [r.getMessage() for r in caplog.records if r.name == "chatmod.audit"]
    assert len(lines) == 1
    assert not any(c in lines[0] for c in "\n\r\x1b")
    assert "mallory\\n" in lines[0]
    assert "\\x1b" in lines[0]
    # The file keeps the names whole (JSON escapes them).
    assert AuditLog(tmp_path).read() == [record]
    assert record["who"] == f"mallory\n{forged}"


async def test_a_socket_left_by_a_killed_daemon_does_not_stop_a_start(tmp_path: Path) -> None:
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(tmp_path / SOCKET_NAME))
    left.close()  # a killed daemon: the file stays, nobody listens
    assert (tmp_path / SOCKET_NAME).exists()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, tmp_path, _answer)
            assert await send_request(tmp_path, LIST) == {"ok": True, "done": "exempt.list"}
            nursery.cancel_scope.cancel()
    assert not (tmp_path / SOCKET_NAME).exists()


async def test_a_second_daemon_does_not_steal_a_live_socket(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, tmp_path, _answer)
            token = (tmp_path / TOKEN_NAME).read_text()
            with pytest.raises(ControlError, match="another daemon serves live control"):
                await nursery.start(serve_control, tmp_path, _answer)
            # The first keeps its socket and its token: clients still reach it.
            assert (tmp_path / TOKEN_NAME).read_text() == token
            assert await send_request(tmp_path, LIST) == {"ok": True, "done": "exempt.list"}
            nursery.cancel_scope.cancel()


async def test_a_stopping_daemon_leaves_a_successors_socket(tmp_path: Path) -> None:
    path = tmp_path / SOCKET_NAME
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, tmp_path, _answer)
            # Someone removed our file and a successor bound the path.
            path.unlink()
            successor = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            successor.bind(str(path))
            successor.listen(1)
            nursery.cancel_scope.cancel()
    try:
        assert path.exists()
    finally:
        successor.close()


def test_an_exemption_too_long_is_refused_by_the_command_naming_for() -> None:
    def exempt(duration: str) -> argparse.Namespace:
        return argparse.Namespace(command="exempt", control_action="add", by="ann", why="",
                                  channel="", author="bob", duration=duration)

    assert build_request(exempt("30d"))["for"] == 30 * 86400.0
    for wrong in ("99999999d", "abc", "0s", "1e3s", "-1h", "inf"):
        with pytest.raises(ConfigError, match=r"--for"):
            build_request(exempt(wrong))
