"""Live control: ``chatmod exempt`` and ``chatmod channel`` change a running daemon with no
reload, through its control socket; every change is audited; the request parser only ever
raises ControlError."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatmod.errors import ControlError
from chatmod.state.control import (
    MAX_CONNECTIONS,
    OPERATIONS,
    SOCKET_NAME,
    TOKEN_NAME,
    ControlRequest,
    parse_request,
    send_request,
    serve_control,
)

from .helpers import Daemon, run_chatmod, write_config

FUZZ_EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 300
TOKEN = "t" * 43

CONFIG = """
[daemon]
state_dir = "{state}"
stats_interval = 0
[state]
control = true
refresh = 0.2
[engine]
primary = "wordlist"
[engines.wordlist]
delete = ["idiot"]
[policy.ladder]
steps = ["warn", "timeout 10m", "ban"]
window = 3600
[[sources]]
type = "stdin"
format = "jsonl"
[[sinks]]
type = "jsonl"
path = "{out}"
"""


def line(n: int, author: str = "bob", channel: str = "#lobby") -> str:
    return orjson.dumps({"id": f"m{n}", "text": "you idiot", "author": author,
                         "channel": channel}).decode()


def decide(daemon: Daemon, n: int, **kwargs: str) -> dict[str, object]:
    daemon.send(line(n, **kwargs))
    daemon.wait_for(lambda: any(d["id"] == f"m{n}" for d in daemon.decisions()),
                    f"decision m{n}")
    return next(d for d in daemon.decisions() if d["id"] == f"m{n}")


def control(config: Path, *args: str) -> dict[str, object]:
    result = run_chatmod(*args, "-c", str(config))
    assert result.returncode == 0, result.stderr.decode()
    reply = orjson.loads(result.stdout)
    assert isinstance(reply, dict)
    return reply


@pytest.mark.slow
def test_exempt_for_a_while_on_a_running_daemon_then_not(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path / "chatmod.toml",
                          CONFIG.format(state=state, out=tmp_path / "decisions.jsonl"))
    with Daemon(tmp_path, config) as daemon:
        daemon.wait_for(lambda: (state / SOCKET_NAME).exists(), "the control socket")
        assert stat.S_IMODE((state / SOCKET_NAME).stat().st_mode) == 0o600
        assert stat.S_IMODE((state / TOKEN_NAME).stat().st_mode) == 0o600
        assert decide(daemon, 1)["step"] == "warn"
        # 8 s: long enough for the next message to be decided within it on a loaded machine.
        added = control(config, "exempt", "add", "bob", "--for", "8s", "--why", "stream guest",
                        "--by", "mod-ann")
        assert added["ok"] is True
        exemption = added["exemption"]
        assert isinstance(exemption, dict)
        until = exemption["until"]
        assert isinstance(until, float)
        readable = datetime.fromtimestamp(until, tz=UTC).isoformat(timespec="seconds")
        assert exemption["until_utc"] == readable.replace("+00:00", "Z")
        exempt = decide(daemon, 2)
        assert time.time() < until, "too slow to test within the exemption"
        assert (exempt["action"], exempt["exempt"], "step" in exempt) == ("none", True, False)
        assert str(exempt["reason"]).startswith("exempt until ")
        assert str(exempt["reason"]).endswith("(mod-ann: stream guest)")
        assert decide(daemon, 3, author="eve")["step"] == "warn"  # others are not exempt
        listed = control(config, "exempt", "list")
        assert [e["author"] for e in listed["exemptions"]] == ["bob"]  # type: ignore[union-attr]
        # Messages until one is decided after the exemption ran out.
        n = 4
        while True:
            decision = decide(daemon, n)
            if not decision.get("exempt"):
                break
            assert time.time() < until + 20, "the exemption did not end"
            n += 1
        assert time.time() >= until
        # Exempt messages earned no strikes: bob's second strike.
        assert (decision["action"], decision["strikes"], decision["step"]) == (
            "delete", 2, "timeout 10m")
        switched = control(config, "channel", "set", "#lobby", "shadow=true", "--why", "test")
        assert switched["switches"] == {"shadow": True}
        assert decide(daemon, 100_000)["shadow"] is True  # ids past the loop's
        assert "shadow" not in decide(daemon, 100_001, channel="#games")
        assert control(config, "channel", "list")["channels"] == {"#lobby": {"shadow": True}}
        assert control(config, "channel", "list", "#games")["channels"] == {}
        assert daemon.finish() == 0
    # Live changes outlive a restart (they are in the store): the next start says so.
    with Daemon(tmp_path, config) as daemon:
        daemon.wait_for_log("live rules in effect from the sqlite store: 0 exemption(s); "
                            "#lobby: shadow=true")
        assert decide(daemon, 200_000)["shadow"] is True
        assert daemon.finish() == 0
    audit = [orjson.loads(x) for x in (state / "audit.jsonl").read_bytes().splitlines()]
    assert [(a["who"], a["what"], a["why"]) for a in audit] == [
        ("mod-ann", "exempt.add", "stream guest"),
        (audit[1]["who"], "channel.set", "test")]
    assert (audit[0]["author"], audit[0]["until"], audit[0]["channel"]) == ("bob", until, None)
    assert audit[1]["switches"] == {"shadow": True}


@pytest.mark.slow
def test_control_commands_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chatmod.toml", CONFIG.format(
        state=tmp_path / "state", out=tmp_path / "d.jsonl"))
    no_daemon = run_chatmod("exempt", "add", "bob", "-c", str(config))
    assert no_daemon.returncode == 1
    # It names the socket, says why, and that nothing was changed.
    assert str(tmp_path / "state" / "control.sock").encode() in no_daemon.stderr
    assert b"is chatmod running" in no_daemon.stderr
    assert b"the change was not made" in no_daemon.stderr
    bad_duration = run_chatmod("exempt", "add", "bob", "--for", "forever", "-c", str(config))
    assert bad_duration.returncode == 2
    assert b"--for" in bad_duration.stderr
    bad_switch = run_chatmod("channel", "set", "#a", "loud=true", "-c", str(config))
    assert bad_switch.returncode == 2
    assert b"NAME=VALUE" in bad_switch.stderr


async def test_a_wrong_token_is_refused_and_a_bad_request_does_not_stop_the_server(
        tmp_path: Path) -> None:
    seen: list[ControlRequest] = []

    async def handler(request: ControlRequest) -> dict[str, object]:
        seen.append(request)
        return {"done": request.op}

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, tmp_path, handler)
            good = {"op": "exempt.list", "by": "ann"}
            assert await send_request(tmp_path, good) == {"ok": True, "done": "exempt.list"}
            (tmp_path / TOKEN_NAME).write_text("not-the-token")
            refused = await send_request(tmp_path, good)
            assert refused == {"ok": False, "error": "wrong token"}
            stream = await trio.open_unix_socket(str(tmp_path / SOCKET_NAME))
            async with stream:
                await stream.send_all(b"\xff garbage\n")
                assert b'"ok":false' in await stream.receive_some(1000)
            nursery.cancel_scope.cancel()
    assert len(seen) == 1
    assert not (tmp_path / SOCKET_NAME).exists()
    # The test wrote its own token over the daemon's: that file is not the daemon's to remove.
    assert (tmp_path / TOKEN_NAME).read_text() == "not-the-token"


async def test_the_token_goes_with_the_daemon(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, tmp_path, _done)
            assert (tmp_path / TOKEN_NAME).exists()
            nursery.cancel_scope.cancel()
    assert not (tmp_path / TOKEN_NAME).exists()
    assert not (tmp_path / SOCKET_NAME).exists()


async def _done(request: ControlRequest) -> dict[str, object]:
    return {"done": request.op}


async def test_connections_over_the_cap_are_told_busy_and_the_rest_answered(
        tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_control, tmp_path, _done)
            # Silent clients hold every slot (each until REQUEST_TIMEOUT).
            silent = [await trio.open_unix_socket(str(tmp_path / SOCKET_NAME))
                      for _ in range(MAX_CONNECTIONS)]
            await trio.testing.wait_all_tasks_blocked()  # the server took every one
            busy = await send_request(tmp_path, {"op": "exempt.list", "by": "ann"})
            assert busy["ok"] is False
            assert "busy" in str(busy["error"])
            for stream in silent:
                await stream.aclose()
            await trio.testing.wait_all_tasks_blocked()  # the server saw them go
            # Slots come back once those clients go: a request is answered again.
            reply = await send_request(tmp_path, {"op": "exempt.list", "by": "ann"})
            assert reply == {"ok": True, "done": "exempt.list"}
            nursery.cancel_scope.cancel()


def test_requests_parse() -> None:
    request = parse_request(orjson.dumps({
        "token": TOKEN, "op": "exempt.add", "by": "ann", "author": "bob", "for": 3600}), TOKEN)
    assert (request.op, request.author, request.channel, request.duration) == (
        "exempt.add", "bob", "", 3600.0)
    for wrong, error in [
        ({"op": "exempt.add", "by": "ann", "author": "bob"}, "wrong token"),
        ({"token": TOKEN, "op": "rm -rf", "by": "ann"}, "'op' must be one of"),
        ({"token": TOKEN, "op": "exempt.add", "by": "ann"}, "'author' is required"),
        ({"token": TOKEN, "op": "exempt.add", "by": "ann", "author": "b", "for": -1},
         "'for' must be"),
        ({"token": TOKEN, "op": "channel.set", "by": "ann", "channel": "#a",
          "switches": {"shadow": "yes"}}, "switch 'shadow'"),
        ({"token": TOKEN, "op": "channel.set", "by": "ann", "channel": "#a"},
         "at least one switch"),
    ]:
        with pytest.raises(ControlError, match=error):
            parse_request(orjson.dumps(wrong), TOKEN)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["token", "op", "by", "why", "author", "channel", "for",
                                     "switches", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
                              st.text(max_size=10), st.just(TOKEN),
                              st.sampled_from(["exempt.add", "channel.set", "exempt.list"]),
                              st.dictionaries(st.text(max_size=8), st.booleans(), max_size=2)),
                    max_size=9).map(orjson.dumps)))
@example(orjson.dumps({"token": TOKEN, "op": "exempt.add", "by": "a", "author": "b",
                       "for": float("inf")}))
@example(b'{"token": "' + TOKEN.encode() + b'", "op": "channel.set", "by": "a", "channel": "c", '
         b'"switches": {"shadow": 1}}')
def test_request_fuzz_only_control_errors(data: bytes) -> None:
    try:
        request = parse_request(data, TOKEN)
    except ControlError:
        return
    # What gets through is a request the daemon can carry out.
    assert request.op in OPERATIONS
    assert request.by
    assert request.duration is None or request.duration > 0
