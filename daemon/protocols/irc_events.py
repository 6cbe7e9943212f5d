"""What an IRC session reports, with no I/O: chat lines, events worth logging, and the
:class:`Reaction` to one server line (lines to send back, chat, events)."""

from __future__ import annotations

from dataclasses import dataclass, field

from irctokens.line import Line


@dataclass(frozen=True)
class ChatLine:
    """Someone else's message in a channel we are in."""

    channel: str
    nick: str
    user: str | None
    host: str | None
    text: str
    msgid: str | None
    server_time: str | None
    account: str | None = None
    #: ``"join"``: not a message but ``nick`` joining ``channel`` (or taking that nick while
    #: we are in it); its name is checked (``text`` is empty).
    event: str | None = None


@dataclass(frozen=True)
class Registered:
    """The server accepted us; ``wanted`` is the configured nick when we got another one."""

    nick: str
    wanted: str


@dataclass(frozen=True)
class Joined:
    """We are in ``channel``."""

    channel: str


@dataclass(frozen=True)
class Kicked:
    """We were kicked from ``channel`` (and join it again at once)."""

    channel: str
    by: str
    reason: str


@dataclass(frozen=True)
class NickInUse:
    """``nick`` is taken; we are trying ``trying`` instead."""

    nick: str
    trying: str


@dataclass(frozen=True)
class JoinRefused:
    """The server refused to let us in; ``retry_in`` seconds before we try again (``None``:
    a retry is already due)."""

    channel: str
    code: str
    reason: str
    retry_in: float | None


@dataclass(frozen=True)
class OperUp:
    """The server made us an IRC operator (381)."""


@dataclass(frozen=True)
class OperRefused:
    """The server refused our ``OPER`` (491 no O-line for our host, 464 bad password)."""

    code: str
    reason: str


@dataclass(frozen=True)
class ModeRefused:
    """The server refused a channel mode or kick of ours in ``channel`` (482): we are not
    channel operator there, and our IRC-operator status does not let us act there either."""

    channel: str


Event = Registered | Joined | Kicked | NickInUse | JoinRefused | OperUp | OperRefused | ModeRefused


@dataclass
class Reaction:
    """What one server line leads to: lines to send back, chat lines, events worth logging."""

    replies: list[Line] = field(default_factory=list)
    chat: list[ChatLine] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
