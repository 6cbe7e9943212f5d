"""The IRC client protocol as a state machine, with no I/O: lines in, lines and events out.

Registration with IRCv3 capability negotiation (``message-tags``, ``server-time``, ``msgid``
when offered; ``sasl`` with SASL PLAIN when credentials are set), nick-in-use handling,
PING/PONG, joining and re-joining channels, and tracking where we are channel operator (so
actions are only tried where they can work). Framing is irctokens'.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from irctokens.line import Line, build

WANTED_CAPS = ("message-tags", "server-time", "msgid")
# Channel modes that take a parameter when set (+) / unset (-): enough to follow +o/-o.
MODES_WITH_PARAM = {"+": set("ovhqabeIkl"), "-": set("ovhqabeIk")}
OPERATOR_PREFIXES = "@&~"


class IrcFatal(Exception):
    """The server refused us in a way a reconnect will not fix (e.g. SASL failed)."""


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


@dataclass
class IrcSession:
    nick: str
    channels: tuple[str, ...]
    user: str = "chatmod"
    realname: str = "chatmod moderation"
    password: str | None = None
    sasl_user: str | None = None
    sasl_password: str | None = None
    registered: bool = False
    caps: set[str] = field(default_factory=set)
    joined: set[str] = field(default_factory=set)
    operator_in: set[str] = field(default_factory=set)
    _offered: set[str] = field(default_factory=set)

    def start(self) -> list[Line]:
        lines = [build("CAP", ["LS", "302"])]
        if self.password:
            lines.append(build("PASS", [self.password]))
        lines += [build("NICK", [self.nick]), build("USER", [self.user, "0", "*", self.realname])]
        return lines

    def receive(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        """What to send back, and the chat lines ``line`` carried."""
        command = line.command.upper()
        handler = getattr(self, f"_on_{command.lower()}", None)
        if handler is None:
            return [], []
        result: tuple[list[Line], list[ChatLine]] = handler(line)
        return result

    def is_me(self, nick: str) -> bool:
        return nick.casefold() == self.nick.casefold()

    def _on_ping(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        return [build("PONG", line.params[:1] or [""])], []

    def _on_cap(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        sub = line.params[1].upper() if len(line.params) > 1 else ""
        if sub == "LS":
            more = len(line.params) > 3 and line.params[2] == "*"
            self._offered.update(cap.split("=")[0] for cap in line.params[-1].split())
            if more:
                return [], []
            wanted = [c for c in WANTED_CAPS if c in self._offered]
            if self.sasl_user and "sasl" in self._offered:
                wanted.append("sasl")
            elif self.sasl_user:
                raise IrcFatal("the server does not offer SASL, and SASL credentials are set")
            if not wanted:
                return [build("CAP", ["END"])], []
            return [build("CAP", ["REQ", " ".join(wanted)])], []
        if sub == "ACK":
            self.caps.update(line.params[-1].split())
            if "sasl" in self.caps and self.sasl_user:
                return [build("AUTHENTICATE", ["PLAIN"])], []
            return [build("CAP", ["END"])], []
        if sub == "NAK":
            return [build("CAP", ["END"])], []
        return [], []

    def _on_authenticate(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        if line.params[:1] == ["+"] and self.sasl_user and self.sasl_password is not None:
            token = f"{self.sasl_user}\0{self.sasl_user}\0{self.sasl_password}".encode()
            return [build("AUTHENTICATE", [base64.b64encode(token).decode()])], []
        return [], []

    def _on_464(self, line: Line) -> tuple[list[Line], list[ChatLine]]:  # bad password
        raise IrcFatal("the server password was refused")

    def _on_903(self, line: Line) -> tuple[list[Line], list[ChatLine]]:  # SASL success
        return [build("CAP", ["END"])], []

    def _on_904(self, line: Line) -> tuple[list[Line], list[ChatLine]]:  # SASL failed
        raise IrcFatal("SASL authentication failed (check the account and password)")

    _on_905 = _on_904

    def _on_001(self, line: Line) -> tuple[list[Line], list[ChatLine]]:  # welcome
        self.registered = True
        if line.params:
            self.nick = line.params[0]
        return [build("JOIN", [channel]) for channel in self.channels], []

    def _on_433(self, line: Line) -> tuple[list[Line], list[ChatLine]]:  # nick in use
        if self.registered:
            return [], []
        self.nick = self.nick + "_"
        return [build("NICK", [self.nick])], []

    def _on_nick(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        if line.hostmask is not None and self.is_me(line.hostmask.nickname):
            self.nick = line.params[0]
        return [], []

    def _on_join(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        if line.hostmask is not None and self.is_me(line.hostmask.nickname):
            self.joined.add(line.params[0].casefold())
        return [], []

    def _on_part(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        if line.hostmask is not None and self.is_me(line.hostmask.nickname):
            self._left(line.params[0])
        return [], []

    def _on_kick(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        channel, victim = line.params[0], line.params[1]
        if self.is_me(victim):
            self._left(channel)
            return [build("JOIN", [channel])], []  # a moderator should stay
        return [], []

    def _left(self, channel: str) -> None:
        self.joined.discard(channel.casefold())
        self.operator_in.discard(channel.casefold())

    def _on_353(self, line: Line) -> tuple[list[Line], list[ChatLine]]:  # NAMES
        channel = line.params[2].casefold()
        for name in line.params[-1].split():
            if self.is_me(name.lstrip(OPERATOR_PREFIXES + "%+")) and name[0] in OPERATOR_PREFIXES:
                self.operator_in.add(channel)
        return [], []

    def _on_mode(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        if len(line.params) < 2 or line.params[0][:1] not in "#&!+":
            return [], []
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
        return [], []

    def _on_privmsg(self, line: Line) -> tuple[list[Line], list[ChatLine]]:
        if len(line.params) < 2 or line.hostmask is None or self.is_me(line.hostmask.nickname):
            return [], []
        target, text = line.params[0], line.params[1]
        if target[:1] not in "#&!+":
            return [], []  # private messages to the bot are not chat
        if text.startswith("\x01ACTION ") and text.endswith("\x01"):
            text = text[8:-1]
        elif text.startswith("\x01"):
            return [], []  # other CTCP
        tags = line.tags or {}
        return [], [ChatLine(target, line.hostmask.nickname, line.hostmask.username,
                             line.hostmask.hostname, text, tags.get("msgid"), tags.get("time"))]

    def can_moderate(self, channel: str) -> bool:
        return channel.casefold() in self.operator_in
