import stat
from pathlib import Path

from chatmod.state.audit import AuditEntry, AuditLog, current_user


def test_entries_are_appended_owner_only_and_read_back(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "state")
    audit.record(AuditEntry(who="alice", what="exempt.add", why="event", detail={"author": "bob"}))
    audit.record(AuditEntry(who="carol", what="exempt.remove", ts=123.0))
    assert audit.path is not None
    assert stat.S_IMODE(audit.path.stat().st_mode) == 0o600
    first, second = audit.read()
    assert (first["who"], first["what"], first["why"], first["author"]) == (
        "alice", "exempt.add", "event", "bob"
    )
    assert first["ts"] > 0
    assert second == {"ts": 123.0, "who": "carol", "what": "exempt.remove", "why": ""}


def test_detail_cannot_overwrite_who_or_when(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    audit.record(AuditEntry(who="alice", what="x", ts=1.0, detail={"who": "mallory", "ts": 9}))
    assert audit.read() == [{"ts": 1.0, "who": "alice", "what": "x", "why": ""}]


def test_without_a_state_dir_nothing_is_written() -> None:
    audit = AuditLog(None)
    record = audit.record(AuditEntry(who="alice", what="x"))
    assert record["who"] == "alice"
    assert audit.read() == []


def test_current_user_is_a_name() -> None:
    assert current_user()
