"""IRC: a source (channel messages) and an action sink (notice, kick, ban) on one connection.

The source owns the connection (TLS optional, server password, SASL PLAIN, IRCv3 tags) and
shares it through its pipeline's :class:`~chatmod.core.interfaces.SharedConnections`; the sink
finds it there by the source's name (``connection = "irc"``), so it only ever acts through a
connection of its own pipeline. Protocol logic lives in
:mod:`chatmod.protocols.irc`; this module only moves bytes. A dead link is found by PING when
nothing arrives for ``ping_interval``; the bot reconnects with backoff and rejoins. Actions
go through a token bucket (``flood_rate`` lines/s, ``flood_burst``): servers throttle or drop
fast senders. Protocol replies (PONG, registration) skip the bucket.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import trio
from irctokens.line import Line, build

from chatmod.config.schema import Secret, setting
from chatmod.config.state import state_directory, write_private
from chatmod.core.backoff import Backoff
from chatmod.core.interfaces import Intake, SharedConnections, Sink, Source
from chatmod.core.model import JOIN_TEXT_PREFIX, Decision, Message, generate_message_id
from chatmod.errors import ConfigError, ConnectionLost, SinkError
from chatmod.protocols.irc import (
    ChatLine,
    Event,
    IrcFatal,
    IrcLineError,
    IrcSession,
    Joined,
    Kicked,
    ModeRefused,
    NickInUse,
    OperRefused,
    OperUp,
    Registered,
)
from chatmod.protocols.irc_lines import MAX_LINE_BYTES, LineBuffer, is_middle_param, parse_line

READ_SIZE = 16384
OUTGOING_QUEUE = 256
# Remembered message ids, so that one message is never acted on twice.
ACTED_MEMORY = 10_000
ALERT_MAX_BYTES = 400  # an IRC line is 512 bytes with the command and target
# Seconds before reconnecting after the server refused us in a way retrying will not fix
# (credentials, nick, certificate): a configuration problem, so no busy loop.
FATAL_RETRY = 300.0
# Unreadable or unexpected server lines are logged at most this many times a period (s).
LINE_PROBLEMS_LOGGED = 5
LINE_PROBLEMS_PERIOD = 60.0


# The peer named in the connection errors this module raises.
PEER = "irc server"


LINK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
               ConnectionLost)


def _only(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The link or protocol error a group carries (a refusal first, when there are several);
    the group itself when it carries anything else."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    if not leaves or not all(isinstance(exc, (*LINK_ERRORS, IrcFatal)) for exc in leaves):
        return group
    return next((exc for exc in leaves if isinstance(exc, IrcFatal)), leaves[0])


def one_line(text: str) -> str:
    """``text`` as the last parameter of one IRC line: the verdict in it comes from an engine,
    and a line break there would start a command of its own."""
    return " ".join(text.replace("\0", " ").split())


def describe(exc: BaseException) -> str:
    """A reason that is never empty: the error's text, else its type, with its cause's (a
    TLS error is a bare ``BrokenResourceError`` whose cause says what went wrong)."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < 3:
        text = str(current).strip()
        parts.append(text or type(current).__name__)
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__)
    return ": ".join(parts)


class LogLimiter:
    """Lets at most ``burst`` log records through every ``period`` seconds, and says how many
    were left out with the next one: a server sending junk cannot flood the log."""

    def __init__(self, burst: int = LINE_PROBLEMS_LOGGED,
                 period: float = LINE_PROBLEMS_PERIOD) -> None:
        self.burst, self.period = burst, period
        self._window_start = -period
        self._in_window = 0
        self.left_out = 0

    def allow(self) -> str | None:
        """``None`` to leave this record out; else a suffix for it ("" or the count)."""
        now = trio.current_time()
        if now - self._window_start >= self.period:
            self._window_start, self._in_window = now, 0
        if self._in_window >= self.burst:
            self.left_out += 1
            return None
        self._in_window += 1
        suffix = f" ({self.left_out} more left out)" if self.left_out else ""
        self.left_out = 0
        return suffix


@dataclass(frozen=True)
class IrcSourceConfig:
    """Channel messages from an IRC server (the message id is the IRCv3 `msgid` tag when the
    server sends one; the author's account, from the `account-tag` capability, is the decision
    line's `author_account`). The connection is shared with the `irc` action sink. It logs
    connecting, registering and joining at info. Nothing the server sends stops the daemon: an
    unreadable line (or one that trips a defect) is counted and skipped, with at most 5 log
    lines a minute about them. A refused server password, SASL login, nick (432) or
    certificate is logged as an error and retried only after 300 s: it needs the configuration
    fixed. A join the server refuses (banned, invite only, full, bad key) is logged and tried
    again with the `rejoin_*` backoff. With `oper_name` the bot logs in as IRC operator
    (`OPER`) and then acts also where it is not channel operator, as far as the server lets
    operators (ngircd: `OperCanUseMode = yes`; InspIRCd: the `override` module, the oper
    type's `override`); a refused login is logged once, not fatal. Tested against ngircd and
    InspIRCd."""

    host: str = setting("127.0.0.1", nonempty=True, help="the IRC server")
    port: int = setting(6667, min=1, max=65535, help="its port")
    tls: bool = setting(False, help="connect with TLS")
    tls_verify: bool = setting(True, help="check the server's certificate")
    tls_ca_file: str = setting("", help="PEM file of the CA(s) the server's certificate is "
                                        "checked against; '' the system's")
    nick: str = setting("chatmod", nonempty=True,
                        help="the bot's nick (while it is taken: nick_, then nick1..nick9)")
    user: str = setting("chatmod", nonempty=True, help="the bot's user name")
    realname: str = setting("chatmod moderation", help="the bot's real name")
    password: Secret | None = setting(None, help="the server password")
    sasl_user: str = setting("", help="SASL PLAIN account (with sasl_password)")
    sasl_password: Secret | None = setting(None, help="the SASL PLAIN password")
    oper_name: str = setting("", help="IRC-operator login sent as OPER after registering (with "
                                      "oper_password), so the bot can act where it is not "
                                      "channel operator, e.g. after a restart; '' none")
    oper_password: Secret | None = setting(None, help="the IRC-operator password")
    channels: tuple[str, ...] = setting(
        (), one_or_many=True,
        help="channels to join (and rejoin after a kick or a reconnect); at least one")
    quiet_channels: tuple[str, ...] = setting(
        (), one_or_many=True, help="channels joined only to post in (e.g. keyword alerts to "
                                   "moderators); their chat is not moderated")
    check_usernames: bool = setting(
        False, help="someone joining a channel, or taking a new nick, becomes a `join` record: "
                    "the engine checks the name (chatsight: its username check, beta) and "
                    "`[policy] actions` maps `reject` to kick by default")
    connect_timeout: float = setting(10.0, min=0.01, help="seconds for TCP, TLS and registration")
    ping_interval: float = setting(60.0, min=0.01, help="seconds of silence before a PING")
    ping_timeout: float = setting(30.0, min=0.01, help="seconds a PING may go unanswered")
    reconnect_initial: float = setting(
        1.0, min=0.001, help="seconds before the first reconnect; doubled per failure")
    reconnect_max: float = setting(60.0, min=0.001, help="longest wait between reconnects")
    rejoin_initial: float = setting(30.0, min=0.001, help="first wait before joining again a "
                                                          "channel the server refused")
    rejoin_max: float = setting(600.0, min=0.001, help="longest wait between joins of a "
                                                       "refused channel")
    flood_rate: float = setting(2.0, min=0.01, help="action lines per second, sustained")
    flood_burst: int = setting(5, min=1, help="action lines sent at once before flood_rate applies")

    def __post_init__(self) -> None:
        if not self.channels:
            raise ConfigError("channels: expected at least one channel, found none")
        if self.sasl_user and self.sasl_password is None:
            raise ConfigError("sasl_password: required with sasl_user; set sasl_password_env "
                              "or sasl_password_file")
        if self.oper_name and self.oper_password is None:
            raise ConfigError("oper_password: required with oper_name; set oper_password_env "
                              "or oper_password_file")
        if self.oper_name and not is_middle_param(self.oper_name):
            raise ConfigError(f"oper_name: {self.oper_name!r} is not a name IRC can carry")
        if self.tls_ca_file and not self.tls:
            raise ConfigError("tls_ca_file: set, but tls is false")
        if self.tls_ca_file and not Path(self.tls_ca_file).is_file():
            raise ConfigError(f"tls_ca_file: {self.tls_ca_file!r} is not a readable file")

    def tls_context(self) -> ssl.SSLContext:
        """The TLS settings; :class:`IrcFatal` when ``tls_ca_file`` holds no certificate."""
        try:
            context = ssl.create_default_context(cafile=self.tls_ca_file or None)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise IrcFatal(f"tls_ca_file {self.tls_ca_file!r}: {describe(exc)}") from None
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.updated = trio.current_time()

    async def take(self) -> None:
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            await trio.sleep((1 - self.tokens) / self.rate)
            self.tokens, self.updated = 1.0, trio.current_time()
        self.tokens -= 1


class IrcConnection:
    def __init__(self, name: str, config: IrcSourceConfig,
                 on_chat: Callable[[ChatLine], Awaitable[None]], log: logging.Logger) -> None:
        self.name = name
        self.log = log
        self.config = config
        self.on_chat = on_chat
        self.session: IrcSession | None = None
        self.registered = trio.Event()
        self.stats: dict[str, int] = {"connects": 0, "lines_in": 0, "actions_sent": 0,
                                      "quiet_lines": 0, "lines_unreadable": 0,
                                      "lines_failed": 0, "failures": 0}
        self.where = f"IRC {config.host}:{config.port}"
        self._stream: trio.abc.Stream | None = None
        self._write_lock = trio.Lock()
        self._actions: trio.MemorySendChannel[Line] | None = None
        self._line_problems = LogLimiter()
        self._oper_refusal_logged = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Connect, serve, and reconnect with backoff, forever: nothing the server sends
        ends it. ``task_status.started()`` once registered (or after the first failure)."""
        try:
            await self._serve_forever(task_status)
        finally:
            # Stopped: actions fail at once (the sink's SinkError), never wait on a dead link.
            self._down()

    def _down(self) -> None:
        self.session, self._stream, self._actions = None, None, None
        self.registered = trio.Event()

    async def _serve_forever(self, task_status: trio.TaskStatus[None]) -> None:
        config = self.config
        backoff = Backoff(config.reconnect_initial, config.reconnect_max)
        log = self.log
        started = False
        while True:
            delay = backoff.next_delay()
            try:
                try:
                    await self._connect_and_serve(task_status if not started else None)
                except BaseExceptionGroup as group:  # from the connection's nursery
                    raise _only(group) from None
            except IrcFatal as exc:
                log.error("%s: %s; retrying in %g s", self.where, exc, FATAL_RETRY)
                delay = FATAL_RETRY
            except LINK_ERRORS as exc:
                if self.registered.is_set():
                    backoff.reset()
                    delay = backoff.next_delay()
                log.warning("%s: %s; reconnecting in %.1f s", self.where, describe(exc), delay)
            except Exception as exc:  # a defect: contained here, counted, visible
                self.stats["failures"] += 1
                log.exception("%s: unexpected error: %s; reconnecting in %.1f s", self.where,
                              describe(exc), delay)
            if self.registered.is_set():
                started = True  # task_status was used when it registered
            self._down()
            if not started:
                started = True
                task_status.started()  # not connected yet, but reading can start
            await trio.sleep(delay)

    async def _open(self) -> trio.abc.Stream:
        """A connected stream (TLS handshake done), within ``connect_timeout``."""
        config = self.config
        try:
            with trio.fail_after(config.connect_timeout):
                if not config.tls:
                    return await trio.open_tcp_stream(config.host, config.port)
                stream = await trio.open_ssl_over_tcp_stream(
                    config.host, config.port, ssl_context=config.tls_context())
                try:
                    await stream.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
                return stream
        except trio.TooSlowError:
            raise ConnectionLost(f"no connection within {config.connect_timeout:g} s",
                                 peer=PEER) from None
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise IrcFatal(f"the server's TLS certificate failed verification: "
                               f"{cause.verify_message or describe(cause)} (tls_ca_file names "
                               f"the CA to trust)") from None
            raise ConnectionLost(f"TLS handshake failed: {describe(exc)}", peer=PEER) from None

    async def _connect_and_serve(self, task_status: trio.TaskStatus[None] | None) -> None:
        config = self.config
        stream = await self._open()
        self.stats["connects"] += 1
        self.log.info("%s: connected%s", self.where, " (TLS)" if config.tls else "")
        async with stream:
            self._stream = stream
            session = self.session = IrcSession(
                config.nick, config.channels + config.quiet_channels, config.user,
                config.realname,
                password=config.password.reveal() if config.password else None,
                sasl_user=config.sasl_user or None,
                sasl_password=config.sasl_password.reveal() if config.sasl_password else None,
                rejoin_initial=config.rejoin_initial, rejoin_max=config.rejoin_max,
                oper_name=config.oper_name or None,
                oper_password=config.oper_password.reveal() if config.oper_password else None)
            actions, to_send = trio.open_memory_channel[Line](OUTGOING_QUEUE)
            self._actions = actions
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_actions, to_send)
                await self._write(session.start())
                await self._read(stream, session, nursery, task_status)
                nursery.cancel_scope.cancel()

    async def _read(self, stream: trio.abc.Stream, session: IrcSession, nursery: trio.Nursery,
                    task_status: trio.TaskStatus[None] | None) -> None:
        buffer = LineBuffer()
        awaiting_pong = False
        while True:
            wait = self.config.ping_timeout if awaiting_pong else self.config.ping_interval
            with trio.move_on_after(wait) as idle:
                data = await stream.receive_some(READ_SIZE)
            if idle.cancelled_caught:
                if awaiting_pong:
                    raise ConnectionLost(
                        f"no answer to PING within {self.config.ping_timeout:g} s", peer=PEER)
                awaiting_pong = True
                await self._write([build("PING", ["chatmod"])])
                continue
            if not data:
                raise ConnectionLost("the server closed the connection", peer=PEER)
            awaiting_pong = False
            overlong = buffer.overlong
            for raw in buffer.push(bytes(data)):
                self.stats["lines_in"] += 1
                await self._handle(raw, session, nursery)
                if session.registered and not self.registered.is_set():
                    self.registered.set()
                    if task_status is not None:
                        task_status.started()
                        task_status = None
            if buffer.overlong > overlong:
                self.stats["lines_unreadable"] += buffer.overlong - overlong
                self._line_problem("a line over %d bytes from the server, skipped",
                                   MAX_LINE_BYTES)

    async def _handle(self, raw: bytes, session: IrcSession, nursery: trio.Nursery) -> None:
        """One line from the server: whatever is wrong with it skips it, never more."""
        try:
            line = parse_line(raw)
        except IrcLineError as exc:
            self.stats["lines_unreadable"] += 1
            self._line_problem("%s, skipped", exc)
            return
        if line is None:
            return  # a blank line
        if line.command == "ERROR":
            text = " ".join(line.params) or "(no reason given)"
            if not session.registered and any(
                    word in text.lower() for word in ("password", "access denied")):
                raise IrcFatal(f"the server refused us: {text}")  # a retry now would not help
            raise ConnectionLost(f"server: {text}", peer=PEER)
        try:
            reaction = session.receive(line)
        except IrcFatal:
            raise
        except Exception:  # a defect in a handler: this line is skipped, not the connection
            self.stats["lines_failed"] += 1
            suffix = self._line_problems.allow()
            if suffix is not None:
                self.log.exception("%s: could not handle %r, skipped%s", self.where,
                                   raw[:200], suffix)
            return
        if reaction.replies:
            await self._write(reaction.replies)
        for event in reaction.events:
            self._on_event(event, session, nursery)
        for chat_line in reaction.chat:
            await self.on_chat(chat_line)

    def _line_problem(self, message: str, *args: object) -> None:
        suffix = self._line_problems.allow()
        if suffix is not None:
            self.log.warning(f"%s: {message}%s", self.where, *args, suffix)

    def _on_event(self, event: Event, session: IrcSession, nursery: trio.Nursery) -> None:
        """Log what happened; a refused join is also tried again later."""
        log = self.log
        if isinstance(event, Registered):
            taken = "" if event.nick == event.wanted else f" ({event.wanted} is in use)"
            log.info("%s: registered as %s%s", self.where, event.nick, taken)
        elif isinstance(event, Joined):
            log.info("%s: joined %s", self.where, event.channel)
        elif isinstance(event, Kicked):
            log.warning("%s: kicked from %s by %s (%s); joining again", self.where,
                        event.channel, event.by, event.reason)
        elif isinstance(event, OperUp):
            log.info("%s: logged in as IRC operator %s", self.where, self.config.oper_name)
        elif isinstance(event, OperRefused):
            # Once per run: it comes back at every reconnect, and only a config change helps.
            level = logging.DEBUG if self._oper_refusal_logged else logging.ERROR
            self._oper_refusal_logged = True
            log.log(level, "%s: the IRC-operator login %s was refused (%s %s): acting only "
                    "where channel operator", self.where, self.config.oper_name, event.code,
                    event.reason)
        elif isinstance(event, ModeRefused):
            log.warning("%s: the server refused an IRC operator's action in %s (it does not "
                        "let operators set channel modes there): acting there only as channel "
                        "operator", self.where, event.channel)
        elif isinstance(event, NickInUse):
            log.warning("%s: the nick %s is in use; trying %s", self.where, event.nick,
                        event.trying)
        elif event.retry_in is not None:
            log.warning("%s: cannot join %s: %s %s; trying again in %.1f s", self.where,
                        event.channel, event.code, event.reason, event.retry_in)
            nursery.start_soon(self._join_later, session, event.channel, event.retry_in)
        else:
            log.debug("%s: cannot join %s: %s %s (a retry is due)", self.where,
                      event.channel, event.code, event.reason)

    async def _join_later(self, session: IrcSession, channel: str, delay: float) -> None:
        await trio.sleep(delay)
        lines = session.rejoin(channel)
        if lines:
            await self._write(lines)

    async def _write(self, lines: Sequence[Line]) -> None:
        stream = self._stream
        if stream is None:
            raise ConnectionLost("not connected", peer=PEER)
        data = b"".join(f"{line.format()}\r\n".encode() for line in lines)
        async with self._write_lock:
            await stream.send_all(data)

    async def _send_actions(self, lines: trio.MemoryReceiveChannel[Line]) -> None:
        bucket = TokenBucket(self.config.flood_rate, self.config.flood_burst)
        async for line in lines:
            await bucket.take()
            await self._write([line])
            self.stats["actions_sent"] += 1

    async def act(self, lines: Sequence[Line]) -> None:
        """Queue action lines (flood-controlled); :class:`ConnectionLost` when not connected."""
        actions = self._actions
        if actions is None or not self.registered.is_set():
            raise ConnectionLost("not connected", peer=PEER)
        for line in lines:
            await actions.send(line)


class IrcSource(Source[IrcSourceConfig]):
    Config = IrcSourceConfig

    def __init__(self, name: str, config: IrcSourceConfig) -> None:
        super().__init__(name, config)
        self._intake: Intake | None = None
        self._quiet = {channel.casefold() for channel in config.quiet_channels}
        self.connection = IrcConnection(name, config, self._chat, self.log)

    def bind(self, connections: SharedConnections) -> None:
        """Share the connection with the IRC sinks of this pipeline (``connection = name``)."""
        connections.provide(self.name, self.connection)

    async def run(self, intake: Intake, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._intake = intake
        await self.connection.run(task_status=task_status)

    async def _chat(self, chat: ChatLine) -> None:
        assert self._intake is not None
        if chat.event is not None and not self.config.check_usernames:
            return
        if chat.channel.casefold() in self._quiet:
            self.connection.stats["quiet_lines"] += 1
            return
        metadata = {"irc_host": chat.host or "", "irc_user": chat.user or ""}
        if chat.server_time:
            metadata["irc_time"] = chat.server_time
        text = chat.text if chat.event is None else JOIN_TEXT_PREFIX + chat.nick  # a join
        await self._intake.submit(Message(
            id=chat.msgid or generate_message_id(), text=text, source=self.name,
            author=chat.nick, channel=chat.channel, metadata=metadata,
            author_account=chat.account, event=chat.event))

    def statistics(self) -> dict[str, float]:
        return dict(self.connection.stats)


IrcAction = Literal["notice", "kick", "ban", "none"]
# A ladder's step (chatmod.policy.ladder) wins over the action: IRC cannot delete a line, and
# the step says what this offence costs its author. A timeout is a ban lifted when it ends.
STEP_ACTIONS = {"warn": "notice", "kick": "kick", "ban": "ban", "timeout": "timeout"}
# Seconds between attempts at an unban while the connection is down or lacks the rights.
UNBAN_RETRY = 5.0
UNBANS_FILE = "irc-unbans-{name}.json"


@dataclass(frozen=True)
class IrcSinkConfig:
    """Turns decisions about messages from an `irc` source into IRC actions, at most once per
    message, and kicks or bans only where the bot is channel operator or IRC operator (the
    source's `oper_name`; a warning is logged once per channel where it is neither). Shadow
    and exempt decisions are never acted on. Actions: `notice` (to the author), `kick`, `ban`
    (`*!*@host`, then kick) or `none`."""

    connection: str = setting("irc", nonempty=True, help="name of the irc source")
    actions: dict[str, IrcAction] = setting(
        {"delete": "kick", "kick": "kick", "ban": "ban", "warn": "notice"},
        help="chatmod action -> what the bot does on IRC")
    reason: str = setting("moderated by chatmod ({verdict})", help="kick reason; {verdict}, "
                                                                    "{action}, {score}")
    notice: str = setting(
        "Please keep it friendly ({verdict}).",
        help="the notice sent to the author; {verdict}, {action}, {score}")
    alerts_channel: str = setting("", help="where keyword alerts are posted as a NOTICE "
                                           "(join it with the source's quiet_channels); '' "
                                           "none")
    alert_format: str = setting("keyword alert: {keyword!r} from {author} in {channel}: {text}",
                                help="{keyword}, {author}, {channel}, {text}")
    state_dir: str = setting("", help="where the bans of running timeouts are kept, to be "
                                      "lifted also after a restart (default: [daemon] "
                                      "state_dir); unset: in memory only")

    def __post_init__(self) -> None:
        if self.alerts_channel and not is_middle_param(self.alerts_channel):
            raise ConfigError(f"alerts_channel: {self.alerts_channel!r} is not a channel name "
                              f"IRC can carry")


class IrcActionSink(Sink[IrcSinkConfig]):
    """Turns decisions about messages from its IRC source into IRC actions, once each, and
    only where the bot is channel operator or IRC operator (kick, ban)."""

    Config = IrcSinkConfig

    def __init__(self, name: str, config: IrcSinkConfig) -> None:
        super().__init__(name, config)
        self._acted: OrderedDict[str, None] = OrderedDict()
        self._warned_no_rights: set[str] = set()
        self._unusable_logged = LogLimiter()
        self.stats: dict[str, int] = {"notice": 0, "kick": 0, "ban": 0, "no_rights": 0,
                                      "alerts": 0, "unusable": 0, "timeout": 0, "unban": 0}
        # Handed over by the pipeline (bind); a sink never bound has no connection.
        self._connections = SharedConnections()
        # (channel, ban mask) -> when (wall clock) the timeout's ban is lifted
        state = state_directory(config.state_dir)
        self._unbans_file = state / UNBANS_FILE.format(name=name) if state else None
        self._unbans: dict[tuple[str, str], float] = self._load_unbans()
        self._unban_added = trio.Event()
        self._lifting = trio.CancelScope()  # the unbans, until the sink is closed

    def _load_unbans(self) -> dict[tuple[str, str], float]:
        if self._unbans_file is None or not self._unbans_file.exists():
            return {}
        try:
            saved = orjson.loads(self._unbans_file.read_bytes())
            return {(str(channel), str(mask)): float(due) for channel, mask, due in saved}
        except (OSError, orjson.JSONDecodeError, TypeError, ValueError) as exc:
            self.log.error("cannot read the pending unbans in %s (%s): those bans stay",
                           self._unbans_file, exc)
            return {}

    def _save_unbans(self) -> None:
        if self._unbans_file is not None:
            write_private(self._unbans_file, orjson.dumps(
                [[channel, mask, due] for (channel, mask), due in self._unbans.items()]).decode())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Lift each timeout's ban when it ends (also those a previous run set)."""
        task_status.started()
        with self._lifting:
            await self._lift_bans()
        await trio.sleep_forever()  # closed: what is left is for the next run, in the file

    async def aclose(self) -> None:
        self._lifting.cancel()

    async def _lift_bans(self) -> None:
        while True:
            if not self._unbans:
                self._unban_added = trio.Event()
                await self._unban_added.wait()
                continue
            (channel, mask), due = min(self._unbans.items(), key=lambda item: item[1])
            if due > time.time():
                self._unban_added = trio.Event()  # an earlier one may come meanwhile
                with trio.move_on_after(due - time.time()):
                    await self._unban_added.wait()
                continue
            connection = self._connection()
            session = connection.session if connection is not None else None
            if connection is None or session is None or not session.can_moderate(channel):
                await trio.sleep(UNBAN_RETRY)
                continue
            try:
                await connection.act([build("MODE", [channel, "-b", mask])])
            except ConnectionLost:
                await trio.sleep(UNBAN_RETRY)
                continue
            self._unbans.pop((channel, mask), None)
            self._save_unbans()
            self.stats["unban"] += 1

    def bind(self, connections: SharedConnections) -> None:
        """Act through the connection the ``connection`` source shares in this pipeline."""
        self._connections = connections
        if connections.find(self.config.connection, IrcConnection) is None:
            self.log.warning("no irc source named %r in this pipeline: every action fails "
                             "(to the dead letters)", self.config.connection)

    def _connection(self) -> IrcConnection | None:
        return self._connections.find(self.config.connection, IrcConnection)

    async def write(self, decisions: Sequence[Decision]) -> None:
        failed: list[Decision] = []
        for decision in decisions:
            message = decision.message
            what: str = self.config.actions.get(decision.action, "none")
            if decision.step is not None:  # a redelivered step was taken already
                what = "none" if decision.repeated else STEP_ACTIONS.get(
                    decision.step.split()[0], what)
            if (what == "none" or decision.shadow or decision.exempt
                    or message.source != self.config.connection or not message.channel
                    or not message.author or message.id in self._acted):
                continue
            connection = self._connection()
            if connection is None or connection.session is None:
                failed.append(decision)
                continue
            lines = self._lines(decision, what, connection.session)
            if not lines:
                continue
            try:
                await connection.act(lines)
            except ConnectionLost:
                failed.append(decision)
                continue
            self._acted[message.id] = None
            if what == "timeout":
                self._timed_out(lines[0], decision.duration or 0.0)
            if len(self._acted) > ACTED_MEMORY:
                self._acted.popitem(last=False)
            self.stats[what] += 1
        if failed:
            raise SinkError(f"IRC connection {self.config.connection!r} is down",
                            failed=failed)

    def _lines(self, decision: Decision, what: str, session: IrcSession) -> list[Line]:
        message = decision.message
        assert message.channel is not None
        assert message.author is not None
        if not (is_middle_param(message.channel) and is_middle_param(message.author)):
            # A server may send a nick or channel no command can carry (":x", say).
            self.stats["unusable"] += 1
            suffix = self._unusable_logged.allow()
            if suffix is not None:
                self.log.warning("cannot %s %r in %r: not a usable IRC name%s", what,
                                 message.author[:50], message.channel[:50], suffix)
            return []
        fields = {"verdict": decision.verdict.action, "action": decision.action,
                  "score": decision.verdict.score}
        if what == "notice":
            return [build("NOTICE", [message.author,
                                     one_line(self.config.notice.format(**fields))])]
        if not session.can_moderate(message.channel):
            self.stats["no_rights"] += 1
            if message.channel.casefold() not in self._warned_no_rights:
                self._warned_no_rights.add(message.channel.casefold())
                self.log.warning("not operator in %s: cannot %s there", message.channel, what)
            return []
        kick = build("KICK", [message.channel, message.author,
                              one_line(self.config.reason.format(**fields))])
        if what == "timeout":
            host = message.metadata.get("irc_host") or "*"
            return [build("MODE", [message.channel, "+b", f"*!*@{host}"])]
        if what == "ban":
            host = message.metadata.get("irc_host") or "*"
            return [build("MODE", [message.channel, "+b", f"*!*@{host}"]), kick]
        return [kick]

    def _timed_out(self, ban: Line, duration: float) -> None:
        """The ban ``ban`` (``MODE #c +b mask``) is lifted ``duration`` seconds from now."""
        channel, mask = ban.params[0], ban.params[2]
        self._unbans[(channel, mask)] = time.time() + duration
        self._save_unbans()
        self._unban_added.set()

    async def write_alert(self, record: Mapping[str, Any]) -> None:
        """A keyword alert as a NOTICE to ``alerts_channel`` (nothing when it is unset)."""
        channel = self.config.alerts_channel
        if not channel or record.get("type") != "alert":
            return
        connection = self._connection()
        if connection is None or connection.session is None:
            raise SinkError(f"IRC connection {self.config.connection!r} is down")
        metadata = record.get("metadata")
        context = metadata if isinstance(metadata, Mapping) else {}
        text = record.get("text")
        notice = self.config.alert_format.format(
            keyword=str(record.get("keyword", "")),
            author=context.get("chatmod_author") or "?",
            channel=context.get("chatmod_channel") or "?",
            text=text if isinstance(text, str) else "(text not included)")
        # One line: IRC has no room for newlines, and a long text is cut, not split.
        clean = " ".join(notice.split()).encode()[:ALERT_MAX_BYTES].decode(errors="ignore")
        try:
            await connection.act([build("NOTICE", [channel, clean])])
        except ConnectionLost as exc:
            raise SinkError(f"IRC connection {self.config.connection!r}: {exc}") from None
        self.stats["alerts"] += 1

    def statistics(self) -> dict[str, float]:
        return dict(self.stats)
