"""The HTTP server and the daemon's /healthz, /readyz and /metrics."""

from __future__ import annotations

import re
import time
from functools import partial
from pathlib import Path

import httpx
import trio

from chatmod.http.api import StatusApi
from chatmod.http.server import serve_http

from .helpers import WORDLIST_CONFIG, Daemon, write_config
from .servers import free_port

SAMPLE_LINE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def wait_ready(port: int, log: Path, within: float = 20.0) -> float:
    """Until the daemon's /readyz answers 200; returns the deadline, for later waits."""
    deadline = time.monotonic() + within
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return deadline
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def assert_prometheus(text: str) -> None:
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            assert line.split()[3] in ("counter", "gauge", "histogram"), line
        elif not line.startswith("# HELP "):
            assert SAMPLE_LINE.match(line), line


async def test_status_endpoints_and_refusals(nursery: trio.Nursery) -> None:
    ready = False
    exposition = b"# HELP chatmod_x_total x\n# TYPE chatmod_x_total counter\nchatmod_x_total 2.0\n"
    api = StatusApi(lambda: ready, lambda: exposition)
    port = await nursery.start(partial(serve_http, api.handle, "127.0.0.1", 0, max_body=100))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        ready = True
        assert (await client.get("/readyz")).status_code == 200  # same connection: keep-alive
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert metrics.content == exposition
        assert (await client.get("/nope")).status_code == 404
        assert (await client.post("/healthz", content=b"{}")).status_code == 405
        assert (await client.post("/healthz", content=b"x" * 101)).status_code == 413
    with trio.socket.socket() as raw:
        await raw.connect(("127.0.0.1", port))
        await raw.send(b"NOT HTTP AT ALL\r\n\r\n")
        answer = await raw.recv(100)
    assert answer.startswith(b"HTTP/1.1 400")


def test_daemon_serves_health_readiness_and_metrics(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "c.toml",
        f"[http]\nenabled = true\nport = {port}\n"
        + WORDLIST_CONFIG.format(format="text", path=tmp_path / "d.jsonl"))
    with Daemon(tmp_path, config) as daemon:
        daemon.send("hello", "you idiot")
        deadline = wait_ready(port, daemon.log)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "alive"}
        metrics = ""
        while "chatmod_messages_decided_total 2.0" not in metrics:
            assert time.monotonic() < deadline, metrics
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            time.sleep(0.05)
        assert_prometheus(metrics)
        assert 'chatmod_decisions_total{action="delete"} 1.0' in metrics
        assert 'chatmod_sink_written_total{sink="jsonl"} 2.0' in metrics
        assert daemon.finish() == 0


def test_keyword_alert_webhooks_through_the_daemon(tmp_path: Path) -> None:
    import orjson

    from chatmod.chatsight.webhook import sign

    secret = "alert-secret-0123456789"
    port = free_port()
    out = tmp_path / "decisions.jsonl"
    config = write_config(
        tmp_path / "c.toml",
        f"[http]\nenabled = true\nport = {port}\nmax_body = 2048\n"
        "chatsight_webhook_secret_env = 'ALERT_SECRET'\n"
        + WORDLIST_CONFIG.format(format="text", path=out))
    url = f"http://127.0.0.1:{port}/webhooks/chatsight"

    def post(content: bytes) -> int:
        return httpx.post(url, content=content).status_code

    def alert(time_ms: int, signature: str | None = None) -> bytes:
        return orjson.dumps({
            "sender": "chatsight-webhooks", "addon": "keywordAlert",
            "payload": {"keywordDetected": "pizza", "metadata": {"channel": "#lobby"},
                        "fullText": "Is the pizza ready?"},
            "time": time_ms, "hmac": signature or sign(secret.encode(), time_ms)})
    with Daemon(tmp_path, config, env={"ALERT_SECRET": secret}) as daemon:
        wait_ready(port, daemon.log)
        now = int(time.time() * 1000)
        assert post(alert(now)) == 200
        refused = [
            post(alert(now)),  # replayed
            post(alert(now + 1, sign(b"not-the-secret", now + 1))),  # forged
            post(alert(now - 3_600_000)),  # stale
            post(alert(now + 3_600_000)),  # from the future
            post(b"{" * 10),  # malformed
            post(b"x" * 4096),  # oversized
            httpx.get(url).status_code,  # wrong method
        ]
        assert refused == [401, 401, 401, 401, 400, 413, 405]
        assert daemon.finish() == 0
    alerts = [orjson.loads(line) for line in out.read_bytes().splitlines()
              if b'"type":"alert"' in line]
    assert len(alerts) == 1
    assert (alerts[0]["keyword"], alerts[0]["metadata"]) == ("pizza", {"channel": "#lobby"})
    log = (tmp_path / "stderr.log").read_text()
    # Each refusal the receiver made is logged with its reason (413 comes before it).
    assert log.count("keyword alert refused") == 5
    assert secret not in log


def test_a_reload_applies_the_webhook_secret_but_not_a_new_address() -> None:
    from chatmod.config.schema import Secret
    from chatmod.config.sections import HttpSection

    api = StatusApi(lambda: True, bytes, section=HttpSection(enabled=True))
    rotated = HttpSection(enabled=True, chatsight_webhook_secret=Secret("t", "new-secret-value"))
    assert api.reconfigure(rotated)
    assert api.section is rotated
    assert not api.reconfigure(HttpSection(enabled=True, port=9178))
    assert api.section is rotated  # the refused one is not half-applied


async def test_a_search_past_the_last_searchable_hour_is_refused_with_400() -> None:
    import orjson

    from chatmod.http.server import HttpRequest
    from chatmod.runtime.stats_store import DecisionStats

    api = StatusApi(lambda: True, bytes, decision_stats=DecisionStats(None))
    body = b'{"timefrom":"0001-01-01 00:00:00","timeto":"9999-12-31 23:59:59"}'
    answer = await api.handle(HttpRequest("POST", "/stats/moderation/search", "", {}, body))
    assert answer.status == 400  # was 500: rounding 23:59 up to the next hour overflowed
    reply = orjson.loads(answer.body)
    assert reply["success"] is False
    assert reply["response"] == "timeto: '9999-12-31 23:59:59' is too late to search"
    # The first hour rounds down and can be searched.
    body = b'{"timefrom":"0001-01-01 00:00:00","timeto":"0001-01-01 05:00:00"}'
    answer = await api.handle(HttpRequest("POST", "/stats/moderation/search", "", {}, body))
    assert answer.status == 200


def test_a_reload_that_changes_the_server_limits_needs_a_restart() -> None:
    from chatmod.config.sections import HttpSection

    api = StatusApi(lambda: True, bytes, section=HttpSection(enabled=True))
    assert not api.reconfigure(HttpSection(enabled=True, max_connections=10))
    assert not api.reconfigure(HttpSection(enabled=True, keep_alive_timeout=1.0))
    assert api.section == HttpSection(enabled=True)


def test_raise_file_limit_lifts_the_soft_limit_to_the_hard_one() -> None:
    import subprocess
    import sys

    probe = ("import resource; from chatmod.http.limits import raise_file_limit; "
             "print(raise_file_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))")
    result = subprocess.run(["sh", "-c", 'ulimit -S -n 200 && exec "$@"', "sh",
                             sys.executable, "-c", probe],
                            capture_output=True, check=True, timeout=60)
    raised, soft, hard = (int(word) for word in result.stdout.split())
    assert raised == soft > 200
    assert soft == hard or hard == -1  # -1: RLIM_INFINITY, where a large finite limit is set
