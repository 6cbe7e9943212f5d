"""The in-flight table remembers at most REMEMBERED_REFERENCES settled references: the
oldest is forgotten first (a reply for it is then ``unknown``), the newer ones still tell a
duplicate or a late reply."""

from __future__ import annotations

import pytest

from chatmod.chatsight import inflight
from chatmod.chatsight.engine import RouteRace
from chatmod.core.model import Message


def test_answered_references_are_remembered_up_to_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inflight, "REMEMBERED_REFERENCES", 3)
    race = RouteRace(verdict_timeout=5.0)
    entries = [race.sent_over_ws(Message(id=f"m-{n}", text="hi", source="test"), 0.0, 1,
                                 lambda result: True) for n in range(5)]
    for entry in entries[:4]:
        [found] = race.ws_answered_many([entry.reference])
        assert found is entry
    race.table.abandon(entries[4])
    # Five settled, three remembered: the two oldest are forgotten.
    assert race.ws_answered_many([e.reference for e in entries]) == [
        "unknown", "unknown", "duplicate", "duplicate", "late"]
    assert race.ws_reply(entries[3].reference, answered=True).status == "duplicate"
