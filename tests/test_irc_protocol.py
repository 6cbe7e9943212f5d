from __future__ import annotations

import base64

import pytest
from irctokens import tokenise

from chatmod.protocols.irc import IrcFatal, IrcSession


def formats(lines: list[object]) -> list[str]:
    return [line.format() for line in lines]  # type: ignore[attr-defined]


def feed(session: IrcSession, raw: str) -> tuple[list[str], list[object]]:
    out, chat = session.receive(tokenise(raw))
    return formats(out), chat


def test_registration_with_caps_and_sasl() -> None:
    session = IrcSession("modbot", ("#lobby",), sasl_user="bot", sasl_password="pw")
    assert formats(session.start()) == ["CAP LS 302", "NICK modbot", "USER chatmod 0 * :chatmod moderation"]
    assert feed(session, ":srv CAP * LS * :multi-prefix sasl")[0] == []
    assert feed(session, ":srv CAP * LS :message-tags server-time")[0] == [
        "CAP REQ :message-tags server-time sasl"]
    assert feed(session, ":srv CAP * ACK :message-tags server-time sasl")[0] == ["AUTHENTICATE PLAIN"]
    token = base64.b64encode(b"bot\0bot\0pw").decode()
    assert feed(session, "AUTHENTICATE +")[0] == [f"AUTHENTICATE {token}"]
    assert feed(session, ":srv 903 modbot :SASL authentication successful")[0] == ["CAP END"]
    assert feed(session, ":srv 001 modbot :Welcome")[0] == ["JOIN #lobby"]
    assert session.registered


def test_sasl_failure_is_fatal_and_nick_in_use_retries() -> None:
    session = IrcSession("modbot", ("#a",), sasl_user="bot", sasl_password="pw")
    with pytest.raises(IrcFatal, match="SASL authentication failed"):
        feed(session, ":srv 904 * :SASL authentication failed")
    plain = IrcSession("modbot", ("#a",))
    assert feed(plain, ":srv CAP * LS :away-notify")[0] == ["CAP END"]
    assert feed(plain, ":srv 433 * modbot :Nickname already in use")[0] == ["NICK modbot_"]
    assert feed(plain, ":srv 001 modbot_ :hi")[0] == ["JOIN #a"]
    assert feed(plain, "PING :abc")[0] == ["PONG abc"]


def test_operator_tracking_and_rejoin_after_kick() -> None:
    session = IrcSession("modbot", ("#lobby",))
    feed(session, ":srv 001 modbot :hi")
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
    session = IrcSession("modbot", ("#lobby",))
    _, chat = feed(session, "@msgid=m-7;time=2026-11-22T03:00:00.000Z "
                            ":alice!al@host.example PRIVMSG #lobby :hello there")
    assert chat[0].nick == "alice"  # type: ignore[attr-defined]
    assert chat[0].host == "host.example"  # type: ignore[attr-defined]
    assert chat[0].msgid == "m-7"  # type: ignore[attr-defined]
    assert chat[0].server_time == "2026-11-22T03:00:00.000Z"  # type: ignore[attr-defined]
    assert feed(session, ":alice!a@h PRIVMSG #lobby :\x01ACTION waves\x01")[1][0].text == "waves"  # type: ignore[attr-defined]
    assert feed(session, ":alice!a@h PRIVMSG modbot :psst")[1] == []
    assert feed(session, ":alice!a@h PRIVMSG #lobby :\x01VERSION\x01")[1] == []
    assert feed(session, ":modbot!a@h PRIVMSG #lobby :my own")[1] == []
