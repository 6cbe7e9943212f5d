"""The IRC client protocol as a state machine, with no I/O: bytes to lines, lines in, lines
and events out.

Registration with IRCv3 capability negotiation (``message-tags``, ``server-time``,
``account-tag`` when offered; ``sasl`` with SASL PLAIN when credentials are set), alternative
nicks while ours is in use, an optional IRC-operator login (``OPER``), PING/PONG, joining and
re-joining channels (with a backoff when the server refuses a join), and tracking where we are
channel operator or IRC operator (so actions are only tried where they can work). Tokenising
is irctokens', wrapped: a server may send anything, so every handler takes a line with any
number of parameters, any source or none.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from irctokens.line import Line, build

from chatmod.core.backoff import Backoff
from chatmod.errors import IrcFatal, IrcLineError
from chatmod.protocols.irc_events import (
    ChatLine,
    Event,
    Joined,
    JoinRefused,
    Kicked,
    ModeRefused,
    NickInUse,
    OperRefused,
    OperUp,
    Reaction,
    Registered,
)
from chatmod.protocols.irc_lines import is_middle_param

# Re-exported: the errors this protocol raises, and what it reports (in irc_events).
__all__ = ["ChatLine", "Event", "IrcFatal", "IrcLineError", "IrcSession", "JoinRefused", "Joined",
           "Kicked", "ModeRefused", "NickInUse", "OperRefused", "OperUp", "Reaction",
           "Registered"]

WANTED_CAPS = ("message-tags", "server-time", "account-tag")
# Channel modes that take a parameter when set (+) / unset (-): enough to follow +o/-o.
MODES_WITH_PARAM = {"+": set("ovhqabeIkl"), "-": set("ovhqabeIk")}
OPERATOR_PREFIXES = "@&~"
CHANNEL_PREFIXES = "#&!+"
# Nick alternatives tried while ours is in use: nick_, then nick1 ... nick9.
MAX_NICK_ALTERNATIVES = 10
# Numerics by which the server refuses a JOIN: no such channel, too many channels, full,
# invite only, banned, bad key, bad mask, needs a registered nick, TLS only, opers only.
JOIN_REFUSALS = frozenset({"403", "405", "471", "473", "474", "475", "476", "477", "489",
                           "520"})


def _param(line: Line, index: int) -> str:
    """Parameter ``index``, or "" when the line has fewer."""
    return line.params[index] if len(line.params) > index else ""


def _source_nick(line: Line) -> str | None:
    """The nick a line comes from; ``None`` when it names no source."""
    if line.source is None:
        return None
    return line.hostmask.nickname or None


def _is_channel(name: str) -> bool:
    return name[:1] != "" and name[0] in CHANNEL_PREFIXES


@dataclass
class IrcSession:
    """One connection's protocol state: :meth:`start` gives the first lines to send,
    :meth:`receive` what each server line leads to."""

    nick: str
    channels: tuple[str, ...]
    user: str = "chatmod"
    realname: str = "chatmod moderation"
    password: str | None = None
    sasl_user: str | None = None
    sasl_password: str | None = None
    rejoin_initial: float = 30.0
    rejoin_max: float = 600.0
    oper_name: str | None = None
    oper_password: str | None = None
    registered: bool = False
    #: whether the server made us an IRC operator (``OPER`` accepted, user mode +o)
    oper: bool = False
    caps: set[str] = field(default_factory=set)
    joined: set[str] = field(default_factory=set)
    operator_in: set[str] = field(default_factory=set)
    #: channels where the server refused us (482) although we are an IRC operator
    oper_refused_in: set[str] = field(default_factory=set)
    _offered: set[str] = field(default_factory=set)
    _wanted_nick: str = ""
    _nick_attempts: int = 0
    _rejoin_backoff: dict[str, Backoff] = field(default_factory=dict)
    _rejoin_due: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._wanted_nick = self.nick

    def start(self) -> list[Line]:
        lines = [build("CAP", ["LS", "302"])]
        if self.password:
            lines.append(build("PASS", [self.password]))
        lines += [build("NICK", [self.nick]), build("USER", [self.user, "0", "*", self.realname])]
        return lines

    def receive(self, line: Line) -> Reaction:
        """What ``line`` leads to. Raises :class:`IrcFatal` when the server refused us for
        good (credentials, nick); any other line, however malformed, is taken or ignored."""
        reaction = Reaction()
        handler = self._HANDLERS.get(line.command)
        if handler is not None:
            handler(self, line, reaction)
        elif line.command in JOIN_REFUSALS:
            self._on_join_refused(line, reaction)
        return reaction

    def is_me(self, nick: str | None) -> bool:
        return nick is not None and nick.casefold() == self.nick.casefold()

    def can_moderate(self, channel: str) -> bool:
        """Whether kicks and channel modes can work in ``channel``: we are its channel operator,
        or an IRC operator (on a server that lets operators set channel modes: until it
        refuses us there with 482)."""
        key = channel.casefold()
        return key in self.operator_in or (self.oper and key not in self.oper_refused_in)

    def rejoin(self, channel: str) -> list[Line]:
        """The JOIN to send now that a refused ``channel``'s wait is over (none if we got in
        meanwhile)."""
        self._rejoin_due.discard(channel.casefold())
        if channel.casefold() in self.joined or not self.registered:
            return []
        return [build("JOIN", [channel])]

    def _configured(self, channel: str) -> str | None:
        """The configured spelling of ``channel``, or ``None`` when it is not one of ours."""
        for name in self.channels:
            if name.casefold() == channel.casefold():
                return name
        return None

    def _on_ping(self, line: Line, reaction: Reaction) -> None:
        reaction.replies.append(build("PONG", line.params[:1] or [""]))

    def _on_cap(self, line: Line, reaction: Reaction) -> None:
        sub = _param(line, 1).upper()
        listed = line.params[2:][-1:]  # the capabilities are the last parameter, if any
        names = listed[0].split() if listed else []
        if sub == "LS" and not self.registered:
            self._offered.update(cap.split("=")[0] for cap in names)
            if _param(line, 2) == "*" and len(line.params) > 3:
                return  # more to come
            wanted = [c for c in WANTED_CAPS if c in self._offered]
            if self.sasl_user and "sasl" in self._offered:
                wanted.append("sasl")
            elif self.sasl_user:
                raise IrcFatal("the server does not offer SASL, and SASL credentials are set")
            reaction.replies.append(build("CAP", ["REQ", " ".join(wanted)]) if wanted
                                    else build("CAP", ["END"]))
        elif sub == "ACK" and not self.registered:
            self.caps.update(names)
            if "sasl" in self.caps and self.sasl_user:
                reaction.replies.append(build("AUTHENTICATE", ["PLAIN"]))
            else:
                reaction.replies.append(build("CAP", ["END"]))
        elif sub == "NAK" and not self.registered:
            reaction.replies.append(build("CAP", ["END"]))

    def _on_authenticate(self, line: Line, reaction: Reaction) -> None:
        if line.params[:1] == ["+"] and self.sasl_user and self.sasl_password is not None:
            token = f"{self.sasl_user}\0{self.sasl_user}\0{self.sasl_password}".encode()
            reaction.replies.append(build("AUTHENTICATE", [base64.b64encode(token).decode()]))

    def _on_bad_password(self, line: Line, reaction: Reaction) -> None:  # 464
        if not self.registered:
            raise IrcFatal("the server password was refused")
        if self.oper_name:  # after registration 464 can only be about our OPER
            self._on_oper_refused(line, reaction)

    def _on_oper_refused(self, line: Line, reaction: Reaction) -> None:  # 491 (and 464)
        if self.registered and self.oper_name:
            reaction.events.append(OperRefused(line.command, _param(line, 1) or "refused"))

    def _on_oper_up(self, line: Line, reaction: Reaction) -> None:  # 381
        if self.registered and self.oper_name:
            self.oper = True
            reaction.events.append(OperUp())

    def _on_mode_refused(self, line: Line, reaction: Reaction) -> None:  # 482
        channel = _param(line, 1)
        key = channel.casefold()
        if (self.oper and channel and key not in self.operator_in
                and key not in self.oper_refused_in):
            self.oper_refused_in.add(key)
            reaction.events.append(ModeRefused(channel))

    def _on_sasl_success(self, line: Line, reaction: Reaction) -> None:  # 903
        if not self.registered:
            reaction.replies.append(build("CAP", ["END"]))

    def _on_sasl_failure(self, line: Line, reaction: Reaction) -> None:  # 904, 905
        if self.sasl_user and not self.registered:
            raise IrcFatal("SASL authentication failed (check the account and password)")

    def _on_welcome(self, line: Line, reaction: Reaction) -> None:  # 001
        if self.registered:
            return
        self.registered = True
        if is_middle_param(_param(line, 0)):
            self.nick = line.params[0]
        reaction.events.append(Registered(self.nick, self._wanted_nick))
        if self.oper_name and self.oper_password is not None:
            # Before the joins: an operator may act in a channel it joins without being op.
            reaction.replies.append(build("OPER", [self.oper_name, self.oper_password]))
        reaction.replies += [build("JOIN", [channel]) for channel in self.channels]

    def _on_nick_in_use(self, line: Line, reaction: Reaction) -> None:  # 433, 436
        if self.registered:
            return  # we never change nick once registered; not about us
        self._nick_attempts += 1
        if self._nick_attempts > MAX_NICK_ALTERNATIVES:
            raise IrcFatal(f"the nick {self._wanted_nick!r} and its {MAX_NICK_ALTERNATIVES} "
                           f"alternatives are all in use")
        refused = self.nick
        suffix = "_" if self._nick_attempts == 1 else str(self._nick_attempts - 1)
        self.nick = self._wanted_nick + suffix
        reaction.events.append(NickInUse(refused, self.nick))
        reaction.replies.append(build("NICK", [self.nick]))

    def _on_erroneous_nick(self, line: Line, reaction: Reaction) -> None:  # 432
        if self.registered:
            return
        reason = _param(line, 2)  # 432 <me> <nick> :<reason>
        also = "" if self.nick == self._wanted_nick else (
            f" (tried because {self._wanted_nick!r} is in use)")
        raise IrcFatal(f"the server refused the nick {self.nick!r}{also}: "
                       f"{reason or 'erroneous nickname'}")

    def _on_nick(self, line: Line, reaction: Reaction) -> None:
        if self.is_me(_source_nick(line)) and is_middle_param(_param(line, 0)):
            self.nick = line.params[0]
        elif _source_nick(line) is not None and is_middle_param(_param(line, 0)):
            # We do not track who is in which channel: the new name is checked in each one
            # we are in (acting where they are not in is refused by the server, harmlessly).
            for channel in self.channels:
                if channel.casefold() in self.joined:
                    reaction.chat.append(self._joining(line, channel, line.params[0]))

    def _on_join(self, line: Line, reaction: Reaction) -> None:
        channel = _param(line, 0)
        nick = _source_nick(line)
        if self.is_me(nick) and channel:
            self.joined.add(channel.casefold())
            self._rejoin_backoff.pop(channel.casefold(), None)
            reaction.events.append(Joined(channel))
        elif nick is not None and channel.casefold() in self.joined:
            reaction.chat.append(self._joining(line, channel, nick))

    def _joining(self, line: Line, channel: str, nick: str) -> ChatLine:
        hostmask, tags = line.hostmask, line.tags or {}
        return ChatLine(channel, nick, hostmask.username, hostmask.hostname, "", None,
                        tags.get("time") or None, tags.get("account") or None, event="join")

    def _on_part(self, line: Line, reaction: Reaction) -> None:
        if self.is_me(_source_nick(line)):
            self._left(_param(line, 0))

    def _on_kick(self, line: Line, reaction: Reaction) -> None:
        channel, victim = _param(line, 0), _param(line, 1)
        if not channel or not self.is_me(victim):
            return
        self._left(channel)
        reaction.events.append(Kicked(channel, _source_nick(line) or "?", _param(line, 2)))
        reaction.replies.append(build("JOIN", [channel]))  # a moderator should stay

    def _on_join_refused(self, line: Line, reaction: Reaction) -> None:
        channel = self._configured(_param(line, 1))
        if channel is None or channel.casefold() in self.joined or not self.registered:
            return
        key = channel.casefold()
        reason = _param(line, 2) if len(line.params) > 2 else "refused"
        if key in self._rejoin_due:
            reaction.events.append(JoinRefused(channel, line.command, reason, None))
            return
        backoff = self._rejoin_backoff.setdefault(
            key, Backoff(self.rejoin_initial, self.rejoin_max))
        self._rejoin_due.add(key)
        reaction.events.append(JoinRefused(channel, line.command, reason, backoff.next_delay()))

    def _left(self, channel: str) -> None:
        self.joined.discard(channel.casefold())
        self.operator_in.discard(channel.casefold())

    def _on_names(self, line: Line, reaction: Reaction) -> None:  # 353
        if len(line.params) < 4:
            return
        channel = line.params[2].casefold()
        for name in line.params[-1].split():
            if name[0] in OPERATOR_PREFIXES and self.is_me(
                    name.lstrip(OPERATOR_PREFIXES + "%+")):
                self.operator_in.add(channel)

    def _on_mode(self, line: Line, reaction: Reaction) -> None:
        if len(line.params) >= 2 and self.is_me(line.params[0]):
            self._on_user_mode(line.params[1])
            return
        if len(line.params) < 2 or not _is_channel(line.params[0]):
            return
        channel, modes, args = line.params[0].casefold(), line.params[1], line.params[2:]
        sign = "+"
        for char in modes:
            if char in "+-":
                sign = char
                continue
            if char in MODES_WITH_PARAM[sign]:
                target = args.pop(0) if args else ""
                if char == "o" and self.is_me(target):
                    if sign == "+":
                        self.operator_in.add(channel)
                    else:
                        self.operator_in.discard(channel)

    def _on_user_mode(self, modes: str) -> None:
        """Our own user modes: ``-o`` (an operator took our status away) ends the
        IRC-operator rights; ``+o`` counts only after our own OPER."""
        sign = "+"
        for char in modes:
            if char in "+-":
                sign = char
            elif char == "o":
                self.oper = sign == "+" and self.oper_name is not None
                if not self.oper:
                    self.oper_refused_in.clear()

    def _on_privmsg(self, line: Line, reaction: Reaction) -> None:
        nick = _source_nick(line)
        if len(line.params) < 2 or nick is None or self.is_me(nick):
            return
        target, text = line.params[0], line.params[1]
        if not _is_channel(target):
            return  # private messages to the bot are not chat
        if text.startswith("\x01ACTION ") and text.endswith("\x01"):
            text = text[8:-1]
        elif text.startswith("\x01"):
            return  # other CTCP
        tags = line.tags or {}
        hostmask = line.hostmask
        reaction.chat.append(ChatLine(target, nick, hostmask.username, hostmask.hostname, text,
                                      tags.get("msgid") or None, tags.get("time") or None,
                                      tags.get("account") or None))

    _HANDLERS: ClassVar[dict[str, Callable[[IrcSession, Line, Reaction], None]]] = {
        "PING": _on_ping, "CAP": _on_cap, "AUTHENTICATE": _on_authenticate,
        "464": _on_bad_password, "903": _on_sasl_success, "904": _on_sasl_failure,
        "905": _on_sasl_failure, "001": _on_welcome, "433": _on_nick_in_use,
        "436": _on_nick_in_use, "432": _on_erroneous_nick, "NICK": _on_nick,
        "JOIN": _on_join, "PART": _on_part, "KICK": _on_kick, "353": _on_names,
        "MODE": _on_mode, "PRIVMSG": _on_privmsg, "381": _on_oper_up, "491": _on_oper_refused,
        "482": _on_mode_refused,
    }
