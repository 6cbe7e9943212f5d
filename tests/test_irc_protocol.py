from __future__ import annotations

import base64
from typing import Any

import pytest
from irctokens import tokenise

from chatmod.protocols.irc import (
    ChatLine,
    IrcFatal,
    IrcLineError,
    IrcSession,
    Joined,
    JoinRefused,
    NickInUse,
    Reaction,
    Registered,
)
from chatmod.protocols.irc_lines import MAX_LINE_BYTES, LineBuffer, is_middle_param, parse_line


def formats(lines: list[Any]) -> list[str]:
    return [line.format() for line in lines]


def receive(session: IrcSession, raw: str | bytes) -> Reaction:
    line = parse_line(raw.encode() if isinstance(raw, str) else raw)
    assert line is not None
    return session.receive(line)


def feed(session: IrcSession, raw: str) -> tuple[list[str], list[ChatLine]]:
    reaction = receive(session, raw)
    return formats(reaction.replies), reaction.chat


def registered(nick: str = "modbot", *channels: str) -> IrcSession:
    session = IrcSession(nick, channels or ("#lobby",))
    receive(session, f":srv 001 {nick} :hi")
    return session


def test_registration_with_caps_and_sasl() -> None:
    session = IrcSession("modbot", ("#lobby",), sasl_user="bot", sasl_password="pw")
    assert formats(session.start()) == ["CAP LS 302", "NICK modbot", "USER chatmod 0 * :chatmod moderation"]
    assert feed(session, ":srv CAP * LS * :multi-prefix sasl")[0] == []
    assert feed(session, ":srv CAP * LS :message-tags server-time account-tag")[0] == [
        "CAP REQ :message-tags server-time account-tag sasl"]
    assert feed(session, ":srv CAP * ACK :message-tags server-time account-tag sasl")[0] == ["AUTHENTICATE PLAIN"]
    token = base64.b64encode(b"bot\0bot\0pw").decode()
    assert feed(session, "AUTHENTICATE +")[0] == [f"AUTHENTICATE {token}"]
    assert feed(session, ":srv 903 modbot :SASL authentication successful")[0] == ["CAP END"]
    reaction = receive(session, ":srv 001 modbot :Welcome")
    assert formats(reaction.replies) == ["JOIN #lobby"]
    assert reaction.events == [Registered("modbot", "modbot")]
    assert session.registered


def test_only_offered_caps_are_requested() -> None:
    # InspIRCd refuses a whole CAP REQ that names one capability it does not offer.
    session = IrcSession("modbot", ("#a",))
    assert feed(session, ":srv CAP * LS :away-notify server-time")[0] == ["CAP REQ server-time"]
    assert feed(session, ":srv CAP * NAK :server-time")[0] == ["CAP END"]
    plain = IrcSession("modbot", ("#a",))
    assert feed(plain, ":srv CAP * LS :away-notify")[0] == ["CAP END"]


def test_sasl_failure_is_fatal_and_only_when_we_asked_for_sasl() -> None:
    session = IrcSession("modbot", ("#a",), sasl_user="bot", sasl_password="pw")
    with pytest.raises(IrcFatal, match="SASL authentication failed"):
        feed(session, ":srv 904 * :SASL authentication failed")
    plain = IrcSession("modbot", ("#a",))
    assert feed(plain, ":srv 904 * :SASL authentication failed") == ([], [])
    assert feed(plain, "PING :abc")[0] == ["PONG abc"]


def test_a_nick_in_use_is_replaced_by_alternatives_then_refused() -> None:
    session = IrcSession("modbot", ("#a",))
    tried = []
    for _ in range(10):
        reaction = receive(session, f":srv 433 * {session.nick} :Nickname is already in use")
        tried += formats(reaction.replies)
    assert tried == ["NICK modbot_"] + [f"NICK modbot{n}" for n in range(1, 10)]
    with pytest.raises(IrcFatal, match="'modbot' and its 10 alternatives are all in use"):
        receive(session, ":srv 433 * modbot9 :in use")


def test_a_nick_in_use_is_reported_and_the_alternative_is_who_we_are() -> None:
    session = IrcSession("modbot", ("#a",))
    reaction = receive(session, ":srv 433 * modbot :Nickname is already in use")
    assert reaction.events == [NickInUse("modbot", "modbot_")]
    assert receive(session, ":srv 001 modbot_ :hi").events == [Registered("modbot_", "modbot")]
    assert session.is_me("MODBOT_")
    assert feed(session, ":srv 433 * x :in use") == ([], [])  # once registered: not about us


def test_an_erroneous_nick_is_a_fatal_error_naming_it_and_the_reason() -> None:
    session = IrcSession("1bad", ("#a",))
    with pytest.raises(IrcFatal, match="refused the nick '1bad': Erroneous Nickname"):
        receive(session, ":srv 432 * 1bad :Erroneous Nickname")
    alternative = IrcSession("modbot", ("#a",))
    receive(alternative, ":srv 433 * modbot :in use")
    with pytest.raises(IrcFatal, match=r"'modbot_' \(tried because 'modbot' is in use\)"):
        receive(alternative, ":srv 432 * modbot_ :Erroneous Nickname")
    assert receive(registered(), ":srv 432 modbot x :Erroneous Nickname").events == []


def test_a_refused_join_is_reported_with_a_growing_wait_and_joined_again() -> None:
    session = IrcSession("modbot", ("#lobby", "#mods"), rejoin_initial=10, rejoin_max=25)
    receive(session, ":srv 001 modbot :hi")
    first = receive(session, ":srv 474 modbot #Lobby :Cannot join channel (+b)").events
    assert len(first) == 1
    assert isinstance(first[0], JoinRefused)
    assert (first[0].channel, first[0].code, first[0].reason) == (
        "#lobby", "474", "Cannot join channel (+b)")
    assert first[0].retry_in is not None
    assert 5 <= first[0].retry_in <= 10
    # Refused again before the retry: reported, but the retry already due is not doubled.
    assert receive(session, ":srv 474 modbot #lobby :banned").events == [
        JoinRefused("#lobby", "474", "banned", None)]
    assert formats(session.rejoin("#lobby")) == ["JOIN #lobby"]
    second = receive(session, ":srv 474 modbot #lobby :banned").events[0]
    assert isinstance(second, JoinRefused)
    assert second.retry_in is not None
    assert 10 <= second.retry_in <= 20
    third = receive(session, ":srv 471 modbot #lobby :full").events[0]
    assert isinstance(third, JoinRefused)
    assert third.retry_in is None
    assert formats(session.rejoin("#lobby")) == ["JOIN #lobby"]
    fourth = receive(session, ":srv 471 modbot #lobby :full").events[0]
    assert isinstance(fourth, JoinRefused)
    assert fourth.retry_in is not None
    assert 12.5 <= fourth.retry_in <= 25
    # Once in, the wait starts over, and a due retry sends nothing.
    assert receive(session, ":modbot!u@h JOIN #lobby").events == [Joined("#lobby")]
    assert session.rejoin("#lobby") == []
    # Refusals for channels that are not ours are not ours to retry.
    assert receive(session, ":srv 473 modbot #other :Cannot join channel (+i)").events == []


def test_operator_tracking_and_rejoin_after_kick() -> None:
    session = registered()
    feed(session, ":modbot!u@h JOIN #lobby")
    feed(session, ":srv 353 modbot = #lobby :@modbot alice")
    assert session.can_moderate("#LOBBY")
    feed(session, ":alice!u@h MODE #lobby +v-o alice modbot")
    assert not session.can_moderate("#lobby")
    feed(session, ":op!u@h MODE #lobby +bo *!*@bad modbot")
    assert session.can_moderate("#lobby")
    assert feed(session, ":op!u@h KICK #lobby modbot :bye")[0] == ["JOIN #lobby"]
    assert not session.can_moderate("#lobby")


def test_channel_messages_become_chat_lines() -> None:
    session = registered()
    _, chat = feed(session, "@msgid=m-7;time=2026-11-22T03:00:00.000Z;account=alice_acct "
                            ":alice!al@host.example PRIVMSG #lobby :hello there")
    assert chat == [ChatLine("#lobby", "alice", "al", "host.example", "hello there", "m-7",
                             "2026-11-22T03:00:00.000Z", "alice_acct")]
    assert feed(session, ":alice!a@h PRIVMSG #lobby :\x01ACTION waves\x01")[1][0].text == "waves"
    assert feed(session, ":alice!a@h PRIVMSG #lobby :hi")[1][0].account is None
    assert feed(session, ":alice!a@h PRIVMSG modbot :psst")[1] == []
    assert feed(session, ":alice!a@h PRIVMSG #lobby :\x01VERSION\x01")[1] == []
    assert feed(session, ":modbot!a@h PRIVMSG #lobby :my own")[1] == []


# Each of these, sent by a server, used to end the daemon (exit 1).
HOSTILE_LINES = [b"", b"\r", b"\r\r\r", b"   ", b":x", b"@a=b", b"@a=b ", b"@a=b :x", b": ",
                 b"PRIVMSG #chat :x", b"JOIN #chat", b"NICK", b"KICK #chat", b"PART",
                 b":srv 353 modbot = #chat", b":srv 353", b":srv 353 modbot", b":srv 001",
                 b":srv 432", b":srv 433", b":srv 474", b"CAP", b"CAP * LS", b"CAP * ACK",
                 b"MODE", b"MODE #chat", b"MODE  +o", b"AUTHENTICATE", b"PING",
                 b"@\xff\xfe=\xff :a!b@c PRIVMSG #chat :\xff\xfe latin-1",
                 b":!@ PRIVMSG #chat :no nick", b"::x!u@h PRIVMSG #chat :colon nick",
                 b"\x00PRIVMSG #chat :nul first", b"KICK #chat :"]


@pytest.mark.parametrize("raw", HOSTILE_LINES)
def test_a_malformed_line_is_skipped_or_a_typed_error(raw: bytes) -> None:
    for session in (IrcSession("modbot", ("#chat",)), registered("modbot", "#chat")):
        try:
            line = parse_line(raw)
        except IrcLineError:
            continue
        if line is None:
            continue
        try:
            reaction = session.receive(line)
        except IrcFatal:
            assert not session.registered  # a refusal only counts before we are in
            continue
        formats(reaction.replies)  # every reply can be sent


@pytest.mark.parametrize("raw", [b":x", b"@a=b", b"@a=b ", b": :x", b"  :x"])
def test_a_line_with_no_command_is_an_input_error(raw: bytes) -> None:
    with pytest.raises(IrcLineError, match="no command"):
        parse_line(raw)


def test_blank_lines_are_none_and_text_that_is_not_utf8_is_latin1() -> None:
    assert parse_line(b"") is None
    assert parse_line(b"\r") is None
    line = parse_line(b"PRIVMSG #a :caf\xe9")
    assert line is not None
    assert line.params == ["#a", "caf\xe9"]


def test_the_line_buffer_splits_at_lf_and_drops_overlong_lines() -> None:
    buffer = LineBuffer()
    assert buffer.push(b"PING :a\r\nPI") == [b"PING :a"]
    assert buffer.push(b"NG :b\n\r\n") == [b"PING :b", b""]
    assert buffer.push(b"x" * (MAX_LINE_BYTES + 1)) == []
    assert buffer.overlong == 1
    assert buffer.push(b"x" * 100_000) == []  # still the same line: nothing kept
    assert buffer.push(b"tail\nPING :c\n") == [b"PING :c"]
    assert buffer.overlong == 1
    assert buffer.push(b"y" * (MAX_LINE_BYTES + 5) + b"\nPING :d\n") == [b"PING :d"]
    assert buffer.overlong == 2
    assert buffer.push(b"z" * MAX_LINE_BYTES + b"\n") == [b"z" * MAX_LINE_BYTES]


def test_middle_params() -> None:
    assert is_middle_param("alice")
    for bad in ("", ":x", "a b", "a\r", "a\0"):
        assert not is_middle_param(bad)


def test_tokenise_is_still_what_irctokens_does_for_good_lines() -> None:
    raw = "@time=2026-11-22T03:00:00.000Z :a!b@c PRIVMSG #x :hi there"
    line = parse_line(raw.encode())
    assert line is not None
    assert line.format() == tokenise(raw).format()
