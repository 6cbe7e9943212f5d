"""Moderation statistics: the protocol's rules, the paced search against the sandbox, the
daemon's own per-minute counts in SQLite, and ``chatmod stats`` as a real process."""

from __future__ import annotations

import os
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from chatmod.chatsight.account import AccountClient, search_range
from chatmod.chatsight.stats import (
    EMPTY_RECORDS,
    Counts,
    Record,
    api_range,
    parse_lifetime,
    parse_search,
    parse_time,
    round_to_hour,
    search_reply,
    split_range,
)
from chatmod.core.model import Decision, Message, Verdict
from chatmod.errors import AccountError
from chatmod.http.server import HttpRequest
from chatmod.runtime.stats_store import DecisionStats
from chatmod.sandbox.server import Sandbox

from .helpers import WORDLIST_CONFIG, Daemon, run_chatmod, write_config
from .servers import SandboxProcess, free_port
from .test_http import wait_ready

KEY = "stats-test-key-0123456789"


def utc(text: str) -> datetime:
    return parse_time(text)


def test_hour_rounding_is_the_documents() -> None:
    # The document's example: 20:27:00 to 21:30:00 is searched as 20:00:00 to 22:00:00.
    assert api_range(utc("2021-05-10 20:27:00"), utc("2021-05-11 21:30:00")) == (
        utc("2021-05-10 20:00:00"), utc("2021-05-11 22:00:00"))
    assert round_to_hour(utc("2021-05-10 20:29:59")) == utc("2021-05-10 20:00:00")
    assert round_to_hour(utc("2021-05-10 23:45:00")) == utc("2021-05-11 00:00:00")
    with pytest.raises(ValueError, match="YYYY-MM-DD HH:MM:SS"):
        parse_time("2021-05-10T20:27:00Z")


def test_a_range_splits_into_requests_of_1440_records() -> None:
    start = utc("2026-11-01 00:00:00")
    pieces = split_range(start, start + timedelta(days=3))
    assert [(b - a) for a, b in pieces] == [timedelta(hours=24)] * 3
    assert pieces[1][0] == pieces[0][1]  # contiguous, nothing searched twice
    assert split_range(start, start + timedelta(hours=25))[-1][1] - start == timedelta(hours=25)


def test_the_documents_replies_are_read() -> None:
    lifetime = (b'{"api": "chatsight-lang-text", "success": true, "response": {"commentsPassed":'
                b' "2002887", "commentsTotal": "2021398", "commentsDeleted": "11191",'
                b' "commentsFlagged": "1102"}}')
    assert parse_lifetime(lifetime) == Counts(passed=2002887, flagged=1102, deleted=11191,
                                              total=2021398)
    # The document's search sample, less its // annotations (not JSON).
    search = b"""{"api": "chatsight-lang-text", "success": true, "response": [
        {"commentsPassed": 6, "commentsTotal": 6, "commentsDeleted": 0, "commentsFlagged": 0,
         "requestTime": {"value": "2021-05-10T20:31:55.000Z"}},
        {"commentsPassed": 4, "commentsTotal": 4, "commentsDeleted": 0, "commentsFlagged": 0,
         "requestTime": {"value": "2021-05-10T20:42:55.000Z"}}]}"""
    records = parse_search(search)
    assert [(r.minute, r.counts.passed) for r in records] == [
        (utc("2021-05-10 20:31:00"), 6), (utc("2021-05-10 20:42:00"), 4)]
    assert parse_search(search_reply(records)) == records  # our servers write the same shape
    empty = orjson.dumps({"api": "chatsight-lang-text", "success": False,
                          "response": EMPTY_RECORDS})
    assert parse_search(empty) == []
    assert search_reply([]) == empty


def sandbox_client(sandbox: Sandbox) -> AccountClient:
    """The sandbox's own HTTP routes, called in-process: virtual time passes for both."""
    async def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        answer = await sandbox._http_route(HttpRequest(
            request.method, path, "", {k.lower(): v for k, v in request.headers.items()},
            await request.aread()))
        return httpx.Response(answer.status, content=answer.body,
                              headers=list(answer.headers))

    return AccountClient("http://sandbox.invalid", KEY, transport=httpx.MockTransport(handler))


async def test_three_days_take_three_requests_two_minutes_apart(
        autojump_clock: trio.testing.MockClock) -> None:
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    start = utc("2026-11-01 00:00:00")
    for day in range(3):
        for minute in (5, 600, 1439):  # early, middle and last minute of each day
            sandbox.account.add_history(start + timedelta(days=day, minutes=minute),
                                        Counts(passed=day + 1, flagged=1, deleted=0, total=day + 2))
    sent: list[float] = []
    waits: list[tuple[int, int, int]] = []
    original = AccountClient.search_stats

    async def record_time(self: AccountClient, a: datetime, b: datetime) -> httpx.Response:
        sent.append(trio.current_time())
        return await original(self, a, b)

    t0 = trio.current_time()
    async with sandbox_client(sandbox) as client:
        client.search_stats = record_time.__get__(client)  # type: ignore[method-assign]
        records = await search_range(client, utc("2026-11-01 00:10:00"),
                                     utc("2026-11-03 23:50:00"),
                                     on_wait=lambda left, n, total: waits.append(
                                         (round(left), n, total)))
    assert [t - t0 for t in sent] == [0.0, 120.0, 240.0]
    assert (sandbox.stats["searches"], sandbox.stats["search_rate_limited"]) == (3, 0)
    # 00:10 rounds down to 00:00, 23:50 up to the next midnight: every record is in.
    assert len(records) == 9
    assert [r.counts.passed for r in records] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert records == sorted(records, key=lambda r: r.minute)
    # The countdown is told once a second, from 120 down, before each later request.
    assert [waits[0], waits[119], waits[120], waits[-1]] == [
        (120, 2, 3), (1, 2, 3), (120, 3, 3), (1, 3, 3)]
    assert len(waits) == 240


async def test_a_search_soon_after_another_waits_out_the_limit(
        autojump_clock: trio.testing.MockClock) -> None:
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    start = utc("2026-11-01 00:00:00")
    async with sandbox_client(sandbox) as client:
        assert await search_range(client, start, start + timedelta(hours=1)) == []  # empty
        t0 = trio.current_time()
        await trio.sleep(30)
        await search_range(client, start, start + timedelta(hours=1))  # a second run, 30 s on
        waited = trio.current_time() - t0
    assert sandbox.stats["search_rate_limited"] == 1
    assert 120 <= waited <= 122  # the sandbox's Retry-After (91 s) after the first 30 s


async def test_a_refused_key_is_a_clear_error(autojump_clock: trio.testing.MockClock) -> None:
    sandbox = Sandbox(api_key="another-key-entirely", verdicts="wordlist")
    async with sandbox_client(sandbox) as client:
        with pytest.raises(AccountError, match="refused the API key"):
            await client.lifetime_stats()


def decision(verdict: str, ts: float) -> Decision:
    return Decision(Message(id="m", text="t", source="s"), Verdict(verdict, 0.5, "e", "ws"),
                    action="none", latency_ms=1.0, ts=ts)


async def test_daemon_counts_persist_in_sqlite_and_search_like_the_api(tmp_path: Path) -> None:
    path = tmp_path / "state" / "stats.sqlite3"
    base = utc("2026-11-22 10:00:00").timestamp()
    batch = [decision("pass", base + 5), decision("pass", base + 50), decision("delete", base + 61),
             decision("flag", base + 3600 * 5), decision("odd", base + 70)]
    async with trio.open_nursery() as nursery:
        stats = DecisionStats(path, flush_interval=3600)
        await nursery.start(stats.run)
        stats.count(batch)
        assert stats.lifetime() == Counts(passed=2, flagged=1, deleted=1, total=5)
        await stats.flush()
        stats.count([decision("pass", base + 10)])  # pending, not flushed: still searched
        records = await stats.search(utc("2026-11-22 09:40:00"), utc("2026-11-22 11:10:00"))
        nursery.cancel_scope.cancel()  # flushes what is pending as it stops
    assert records == [
        Record(utc("2026-11-22 10:00:00"), Counts(passed=3, total=3)),
        Record(utc("2026-11-22 10:01:00"), Counts(deleted=1, total=2)),
    ]
    async with trio.open_nursery() as nursery:  # a restart reads what was kept
        again = DecisionStats(path)
        await nursery.start(again.run)
        assert again.lifetime() == Counts(passed=3, flagged=1, deleted=1, total=6)
        later = await again.search(utc("2026-11-22 15:00:00"), utc("2026-11-22 16:00:00"))
        assert [r.counts for r in later] == [Counts(flagged=1, total=1)]
        nursery.cancel_scope.cancel()


async def test_without_a_state_directory_counts_stay_in_memory() -> None:
    stats = DecisionStats(None)
    async with trio.open_nursery() as nursery:
        await nursery.start(stats.run)
        stats.count([decision("flag", 120.0)])
        await stats.flush()
        assert stats.lifetime() == Counts(flagged=1, total=1)
        found = await stats.search(datetime(1970, 1, 1, tzinfo=UTC),
                                   datetime(1970, 1, 1, 1, tzinfo=UTC))
        assert [r.minute.minute for r in found] == [2]
        nursery.cancel_scope.cancel()


@pytest.mark.slow
def test_daemon_serves_its_counts_to_chatmod_stats(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "c.toml",
        f"[daemon]\nstate_dir = '{tmp_path / 'state'}'\n[http]\nenabled = true\nport = {port}\n"
        + WORDLIST_CONFIG.format(format="text", path=tmp_path / "decisions.jsonl"))
    url = f"http://127.0.0.1:{port}"
    with Daemon(tmp_path, config) as daemon:
        wait_ready(port, daemon.log)
        daemon.send("hello", "you idiot", "pizza time", "hello again")
        daemon.wait_for(lambda: len(daemon.decisions()) == 4, "4 decisions")
        lifetime = run_chatmod("stats", "--daemon", url, "--json")
        assert lifetime.returncode == 0, lifetime.stderr.decode()
        assert orjson.loads(lifetime.stdout) == {"passed": 2, "flagged": 1, "deleted": 1,
                                                 "total": 4}
        now = datetime.now(UTC)
        search = run_chatmod("stats", "search", "--daemon", url, "--csv",
                             "--from", (now - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S"),
                             "--to", (now + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"))
        assert search.returncode == 0, search.stderr.decode()
        rows = search.stdout.decode().splitlines()
        assert rows[0] == "minute,passed,flagged,deleted,total"
        assert sum(int(row.split(",")[4]) for row in rows[1:]) == 4
        assert "the API rounds to the hour" in search.stderr.decode()
        assert daemon.finish() == 0
    assert (tmp_path / "state" / "stats.sqlite3").exists()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert (data[:8], data[12:16]) == (b"\x89PNG\r\n\x1a\n", b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow
def test_chatmod_stats_against_the_sandbox(tmp_path: Path) -> None:
    with SandboxProcess(tmp_path, KEY) as sandbox:
        env = {"CHATSIGHT_API_KEY": KEY}
        moderated = run_chatmod("run", "-c", str(sandbox.config), input=b"hi\nyou idiot\nok\n",
                                env=env)
        assert moderated.returncode == 0, moderated.stderr.decode()
        lifetime = run_chatmod("stats", "-c", str(sandbox.config), env=env)
        assert lifetime.returncode == 0, lifetime.stderr.decode()
        # Strings in the API's reply, numbers here.
        assert lifetime.stdout.decode().split() == ["passed", "2", "flagged", "0", "deleted",
                                                    "1", "total", "3"]
        now = datetime.now(UTC)
        plot = tmp_path / "stats.png"
        search = run_chatmod(
            "stats", "search", "-c", str(sandbox.config), "--plot", str(plot),
            "--from", (now - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S"),
            "--to", (now + timedelta(minutes=40)).strftime("%Y-%m-%d %H:%M:%S"), env=env)
        assert search.returncode == 0, search.stderr.decode()
        table = search.stdout.decode().splitlines()
        assert table[0].split() == ["minute", "(UTC)", "passed", "flagged", "deleted", "total"]
        assert table[-1].split() == ["all", "2", "0", "1", "3"]
        assert png_size(plot) == (1100, 400)
        wrong = run_chatmod("stats", "-c", str(sandbox.config),
                            env={"CHATSIGHT_API_KEY": "wrong-key-0123456789"})
        assert wrong.returncode == 1
        assert "refused the API key" in wrong.stderr.decode()
        assert "wrong-key-0123456789" not in wrong.stderr.decode()
    unset = run_chatmod("stats", "--url", sandbox.http_url, "--api-key-env", "NO_SUCH_VARIABLE",
                        env={k: v for k, v in os.environ.items() if k != "NO_SUCH_VARIABLE"})
    assert unset.returncode == 2
    assert "NO_SUCH_VARIABLE is not set" in unset.stderr.decode()


async def test_stats_routes_refuse_bad_requests(nursery: trio.Nursery) -> None:
    from functools import partial

    from chatmod.http.api import StatusApi
    from chatmod.http.server import serve_http

    stats = DecisionStats(None)
    api = StatusApi(lambda: True, bytes, decision_stats=stats)
    port = await nursery.start(partial(serve_http, api.handle, "127.0.0.1", 0, max_body=1024))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/stats/moderation/search")).status_code == 405
        for body in (b"", b"[]", b'{"timefrom": "yesterday", "timeto": "2026-11-22 10:00:00"}',
                     b'{"timefrom": 5}', b"x" * 2000):
            answer = await client.post("/stats/moderation/search", content=body)
            assert answer.status_code in (400, 413), body
        stats.count([decision("delete", 3600.0)])
        lifetime = await client.get("/stats/moderation")
        assert lifetime.json()["response"]["commentsDeleted"] == "1"  # a string, as Chatsight's
        found = await client.post("/stats/moderation/search", json={
            "timefrom": "1970-01-01 00:40:00", "timeto": "1970-01-01 01:40:00"})  # 01:00-02:00
        assert parse_search(found.content) == [Record(utc("1970-01-01 01:00:00"),
                                                      Counts(deleted=1, total=1))]


def test_secret_rotate_needs_a_place_to_keep_it(tmp_path: Path) -> None:
    result = run_chatmod("secret", "rotate", "--url", "http://127.0.0.1:9",
                         env={"CHATSIGHT_API_KEY": KEY, "STATE_DIRECTORY": ""})
    assert result.returncode == 2
    assert "give --out FILE, --state-dir or daemon.state_dir" in result.stderr.decode()


def test_a_range_that_rounds_to_nothing_is_refused_before_any_request() -> None:
    result = run_chatmod("stats", "search", "--url", "http://127.0.0.1:9",
                         "--from", "2026-11-22 10:10:00", "--to", "2026-11-22 10:20:00",
                         env={"CHATSIGHT_API_KEY": KEY})
    assert result.returncode == 2
    assert "rounds both to 2026-11-22 10:00:00" in result.stderr.decode()



@pytest.mark.parametrize("option", ["--from", "--to"])
def test_an_unreadable_time_is_a_usage_error_naming_its_option(option: str) -> None:
    times = {"--from": "2026-11-22 10:00:00", "--to": "2026-11-22 12:00:00", option: "noon"}
    result = run_chatmod("stats", "search", "--url", "http://127.0.0.1:9",
                         *(part for pair in times.items() for part in pair),
                         env={"CHATSIGHT_API_KEY": KEY})
    assert result.returncode == 2  # was 1, with "fatal: StatsRequestError: ..."
    assert (f"chatmod: usage error: {option}: expected a UTC time as YYYY-MM-DD HH:MM:SS, "
            f"found 'noon'") in result.stderr.decode()


@pytest.mark.slow
def test_sandbox_account_switches(tmp_path: Path) -> None:
    from chatmod.chatsight.protocol import AUTH_HEADER
    from chatmod.chatsight.voice import API_HEADER, API_VOICE

    switches = ("--search-interval", "0", "--voice-speakers", "object", "--voice-fetches", "1")
    with SandboxProcess(tmp_path, KEY, *switches) as sandbox:
        headers = {AUTH_HEADER: KEY, API_HEADER: API_VOICE}
        with httpx.Client(base_url=sandbox.http_url, headers=headers) as client:
            search = {"timefrom": "2026-11-22 10:00:00", "timeto": "2026-11-22 11:00:00"}
            assert [client.post("/stats/moderation/search", json=search).status_code
                    for _ in range(2)] == [200, 200]  # no two-minute limit
            key = "A" * 43 + "="  # base64 of 32 bytes
            assert client.post("/stream/moderate", json={
                "url": "u", "authorKey": key, "convoId": "switch-test-1"}).status_code == 200
            reply = client.post("/stream/switch-test-1", json={"authorKey": key})
            ready, body, _ = orjson.loads(reply.content)  # valid JSON: speakers as an object
            assert ready is True  # complete at the first fetch
            assert isinstance(body["transcript"]["speakers"], dict)


def test_plot_series_have_a_zero_for_every_minute_without_comments() -> None:
    from chatmod.cli.plot import per_minute

    start = utc("2026-11-22 10:00:00")
    records = [Record(utc("2026-11-22 10:01:00"), Counts(passed=3, deleted=1, total=4)),
               Record(utc("2026-11-22 10:04:00"), Counts(flagged=2, total=2)),
               Record(utc("2026-11-22 11:00:00"), Counts(passed=9, total=9))]  # outside
    minutes, series = per_minute(records, start, start + timedelta(minutes=5))
    assert minutes == [start + timedelta(minutes=i) for i in range(5)]
    assert series == {"passed": [0, 3, 0, 0, 0], "flagged": [0, 0, 0, 0, 2],
                      "deleted": [0, 1, 0, 0, 0]}


def test_plot_draws_each_minute_and_its_title_and_axes_agree() -> None:
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from chatmod.cli.plot import draw

    start, end = utc("2026-11-22 10:00:00"), utc("2026-11-22 11:00:00")
    records = [Record(utc("2026-11-22 10:10:00"), Counts(passed=5, total=5)),
               Record(utc("2026-11-22 10:50:00"), Counts(passed=7, total=7))]
    figure = draw(records, start, end)
    try:
        (axes,) = figure.axes
        assert axes.get_title() == ("chatmod: comments per minute, 2026-11-22 10:00 to "
                                    "2026-11-22 11:00 UTC")
        assert axes.get_ylabel() == "comments per minute"
        assert axes.get_xlabel() == "minute (UTC)"
        assert axes.get_xlim() == (mdates.date2num(start), mdates.date2num(end))
        steps = {patch.get_label(): patch.get_data() for patch in axes.patches}
        assert set(steps) == {"passed", "flagged", "deleted"}
        passed = steps["passed"]
        assert len(passed.values) == 60  # every minute, not only the two with comments
        assert len(passed.edges) == 61
        assert passed.values[10] == 5
        assert passed.values[50] == 7
        assert list(passed.values[11:50]) == [0] * 39  # no line across the quiet minutes
        assert not axes.lines  # nothing drawn point to point
    finally:
        plt.close(figure)


@pytest.mark.slow
def test_plot_without_matplotlib_fails_before_any_request(tmp_path: Path) -> None:
    import socket

    fake = tmp_path / "fake" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        result = run_chatmod(
            "stats", "search", "--url", f"http://127.0.0.1:{port}", "--plot",
            str(tmp_path / "p.png"), "--from", "2026-11-22 10:00:00",
            "--to", "2026-11-22 12:00:00",
            env={"CHATSIGHT_API_KEY": KEY, "PYTHONPATH": str(tmp_path / "fake")})
        try:
            connection, _address = listener.accept()
        except BlockingIOError:
            pass  # nobody connected
        else:
            connection.close()
            pytest.fail("a request was sent before matplotlib was checked")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "chatmod: error: --plot needs matplotlib: pip install 'chatmod[plot]'\n")
