"""The IRC-operator login (`oper_name`): OPER after registration, the rights it gives (acting
where the bot is not channel operator) and their limits (482, a deop), a refusal that is
logged once and never fatal; the protocol part with no I/O, fuzzed."""

from __future__ import annotations

import logging
import os
import string

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatmod.config.schema import Secret
from chatmod.errors import ConfigError
from chatmod.plugins.irc import IrcConnection, IrcSourceConfig
from chatmod.protocols.irc import (
    IrcFatal,
    IrcLineError,
    IrcSession,
    ModeRefused,
    OperRefused,
    OperUp,
    Reaction,
)
from chatmod.protocols.irc_lines import parse_line

EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def receive(session: IrcSession, raw: str) -> Reaction:
    line = parse_line(raw.encode())
    assert line is not None
    return session.receive(line)


def oper_session() -> IrcSession:
    return IrcSession("modbot", ("#lobby",), oper_name="bot", oper_password="s3cret pw")


def test_oper_is_sent_after_registration_before_the_joins() -> None:
    session = oper_session()
    assert not any(line.command == "OPER" for line in session.start())
    reaction = receive(session, ":srv 001 modbot :hi")
    assert [line.format() for line in reaction.replies] == ["OPER bot :s3cret pw",
                                                            "JOIN #lobby"]


def test_no_oper_without_a_login() -> None:
    session = IrcSession("modbot", ("#lobby",))
    reaction = receive(session, ":srv 001 modbot :hi")
    assert [line.format() for line in reaction.replies] == ["JOIN #lobby"]
    # A server saying we are an operator (or +o) without our asking gives no rights.
    assert receive(session, ":srv 381 modbot :You are now an IRC Operator").events == []
    receive(session, ":srv MODE modbot :+o")
    assert not session.oper
    assert not session.can_moderate("#lobby")


def test_an_irc_operator_can_moderate_where_it_is_not_channel_operator() -> None:
    session = oper_session()
    receive(session, ":srv 001 modbot :hi")
    assert not session.can_moderate("#lobby")
    assert receive(session, ":srv 381 modbot :You are now an IRC Operator").events == [OperUp()]
    receive(session, ":srv MODE modbot :+o")
    assert session.oper
    assert session.can_moderate("#lobby")
    assert session.can_moderate("#Elsewhere")


def test_a_482_takes_away_the_operators_rights_in_that_channel_only() -> None:
    session = oper_session()
    receive(session, ":srv 001 modbot :hi")
    receive(session, ":srv 381 modbot :You are now an IRC Operator")
    reaction = receive(session, ":srv 482 modbot #Lobby :You're not channel operator")
    assert reaction.events == [ModeRefused("#Lobby")]
    assert receive(session, ":srv 482 modbot #lobby :again").events == []  # once
    assert not session.can_moderate("#lobby")
    assert session.can_moderate("#other")
    receive(session, ":chanserv!s@h MODE #lobby +o modbot")  # as channel operator it can
    assert session.can_moderate("#lobby")


def test_losing_the_operator_mode_ends_the_rights() -> None:
    session = oper_session()
    receive(session, ":srv 001 modbot :hi")
    receive(session, ":srv 381 modbot :You are now an IRC Operator")
    receive(session, ":modbot MODE modbot :-o")
    assert not session.oper
    assert not session.can_moderate("#lobby")


@pytest.mark.parametrize("raw", [":srv 491 modbot :No O-lines for your host",
                                 ":srv 464 modbot :Invalid password"])
def test_a_refused_oper_login_is_an_event_not_fatal(raw: str) -> None:
    session = oper_session()
    receive(session, ":srv 001 modbot :hi")
    reaction = receive(session, raw)
    assert reaction.events == [OperRefused(raw.split()[1], raw.split(":")[2])]
    assert session.registered
    assert not session.can_moderate("#lobby")


def test_a_bad_server_password_before_registration_is_still_fatal() -> None:
    with pytest.raises(IrcFatal):
        receive(oper_session(), ":srv 464 * :Password incorrect")


def test_the_login_needs_its_password_and_a_sendable_name() -> None:
    with pytest.raises(ConfigError, match="oper_password: required with oper_name"):
        IrcSourceConfig(channels=("#lobby",), oper_name="bot")
    with pytest.raises(ConfigError, match="oper_name"):
        IrcSourceConfig(channels=("#lobby",), oper_name="a bot",
                        oper_password=Secret("env X", "pw"))


async def test_a_refused_login_is_logged_once_without_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    config = IrcSourceConfig(channels=("#lobby",), oper_name="bot",
                             oper_password=Secret("env X", "s3cret-oper-pw"))

    async def ignore(_chat: object) -> None:
        return None

    log = logging.getLogger("chatmod.test.irc_oper")
    connection = IrcConnection("irc", config, ignore, log)
    session = oper_session()
    with caplog.at_level(logging.DEBUG, logger="chatmod.test.irc_oper"):
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # as at each reconnect
                connection._on_event(OperRefused("491", "No O-lines"), session, nursery)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "login bot was refused (491 No O-lines)" in errors[0].getMessage()
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 2
    assert "s3cret-oper-pw" not in caplog.text


COMMANDS = ["001", "381", "491", "464", "482", "MODE", "JOIN", "KICK", "353", "PRIVMSG", "PING"]
NAMES = ["modbot", "MODBOT", "#lobby", "#LOBBY", "+o", "-o", "+oO", "-o+o", "o", "+", "-", "",
         ":", "@modbot", "srv", "modbot!u@h"]
token = st.one_of(st.sampled_from(COMMANDS + NAMES),
                  st.text(alphabet=string.printable + ":@!#\x00\xe9", max_size=12))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["", ":srv ", ":modbot ", ":x!y@z "]),
                          st.sampled_from(COMMANDS), st.lists(token, max_size=5)),
                max_size=10))
@example([(":srv ", "381", []), (":srv ", "MODE", ["modbot"]), (":srv ", "482", [])])
def test_an_oper_session_takes_any_line(lines: list[tuple[str, str, list[str]]]) -> None:
    """The property: only typed errors, and IrcFatal only before registration; the rights
    come only from a 381 or a +o the server sent after our login."""
    session = oper_session()
    receive(session, ":srv 001 modbot :hi")
    for prefix, command, params in lines:
        raw = f"{prefix}{command} {' '.join(p.replace(' ', '') for p in params)}"
        try:
            line = parse_line(raw.encode("utf-8", errors="replace"))
        except IrcLineError:
            continue
        if line is None:
            continue
        reaction = session.receive(line)
        for reply in reaction.replies:
            assert not any(char in reply.format() for char in "\r\n\0")
    if session.oper:
        assert any(command in ("381", "MODE") for _, command, _ in lines)
