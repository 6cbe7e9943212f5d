"""Live rules: time-limited exemptions and per-channel switches changed while the daemon runs.

Pure data and the control protocol's messages (no I/O). A change is made through the daemon's
control socket (:mod:`chatmod.state.control`), written to the store (shared through Redis by
every daemon of a group) and to the audit log; each daemon keeps the live rules in memory and
reads them again from the store every ``[state] refresh`` seconds, so the policy's lookups
never wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chatmod.errors import ControlError

# Channel switches `chatmod channel set` may change, and their type.
CHANNEL_SWITCHES = {"shadow": bool}
ANY_CHANNEL = ""


@dataclass(frozen=True, slots=True)
class Exemption:
    """``author`` is exempt in ``channel`` ("": every channel) until ``until`` (None: until
    removed); ``why`` and ``by`` as the operator said."""

    author: str
    channel: str = ANY_CHANNEL
    until: float | None = None
    why: str = ""
    by: str = ""

    def live(self, now: float) -> bool:
        return self.until is None or now < self.until

    def as_record(self) -> dict[str, Any]:
        return {"author": self.author, "channel": self.channel, "until": self.until,
                "why": self.why, "by": self.by}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Exemption:
        """From :meth:`as_record`'s shape; :class:`ControlError` if it is not."""
        author, channel = record.get("author"), record.get("channel", ANY_CHANNEL)
        until, why, by = record.get("until"), record.get("why", ""), record.get("by", "")
        if not isinstance(author, str) or not author:
            raise ControlError("'author' must be a non-empty string")
        if not isinstance(channel, str):
            raise ControlError("'channel' must be a string")
        if until is not None and (isinstance(until, bool) or not isinstance(until, int | float)):
            raise ControlError("'until' must be a number or null")
        if not isinstance(why, str) or not isinstance(by, str):
            raise ControlError("'why' and 'by' must be strings")
        return cls(author, channel, None if until is None else float(until), why, by)


@dataclass
class LiveRules:
    """What the policy reads on every message: exemptions and channel switches."""

    exemptions: dict[tuple[str, str], Exemption] = field(default_factory=dict)
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)

    def replace_all(self, exemptions: Iterable[Exemption],
                    channels: Mapping[str, Mapping[str, Any]]) -> None:
        self.exemptions = {(e.author, e.channel): e for e in exemptions}
        self.channels = {name: dict(values) for name, values in channels.items()}

    def exemption_for(self, author: str | None, channel: str | None,
                      now: float) -> Exemption | None:
        """The live exemption covering ``author`` in ``channel``, if any."""
        if not author:
            return None
        for key in ((author, channel or ANY_CHANNEL), (author, ANY_CHANNEL)):
            found = self.exemptions.get(key)
            if found is not None and found.live(now):
                return found
        return None

    def switch(self, channel: str | None, name: str) -> Any:
        """A channel switch set live, or None when it was not."""
        return self.channels.get(channel or ANY_CHANNEL, {}).get(name)


def parse_switch(text: str) -> tuple[str, Any]:
    """``"shadow=true"`` -> ("shadow", True); :class:`ControlError` naming what is wrong."""
    name, sep, raw = text.partition("=")
    kind = CHANNEL_SWITCHES.get(name.strip())
    if not sep or kind is None:
        raise ControlError(f"expected NAME=VALUE with NAME one of "
                           f"{', '.join(CHANNEL_SWITCHES)}, found {text!r}")
    value = raw.strip().lower()
    if kind is bool:
        if value not in ("true", "false"):
            raise ControlError(f"{name.strip()}: expected true or false, found {raw!r}")
        return name.strip(), value == "true"
    raise ControlError(f"{name}: unsupported")  # pragma: no cover - every switch is handled
