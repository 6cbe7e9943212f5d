"""Keyword alerts end to end: ``chatmod addon enable``, ``keywords add``, ``secret rotate``
against the sandbox, then a matching message through the daemon makes the sandbox deliver a
signed webhook that the daemon verifies and turns into an alert record."""

from __future__ import annotations

import signal
import stat
import time
from dataclasses import replace
from pathlib import Path

import httpx
import orjson
import pytest
import trio

from chatmod.chatsight.account import AccountClient
from chatmod.chatsight.protocol import AUTH_HEADER
from chatmod.chatsight.webhook import KeywordAlert, sign
from chatmod.config.schema import Secret
from chatmod.config.sections import HttpSection
from chatmod.core.model import Message
from chatmod.http.api import WEBHOOK_PATH, StatusApi
from chatmod.http.server import HttpRequest, HttpResponse, serve_http
from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine
from chatmod.sandbox.server import Sandbox

from .helpers import Daemon, eventually, run_chatmod
from .servers import SandboxProcess, free_port
from .test_http import wait_ready

KEY = "alerts-test-key-0123456789"


async def test_sandbox_delivers_signed_webhooks_on_a_keyword(nursery: trio.Nursery) -> None:
    received: list[bytes] = []

    async def receiver(request: HttpRequest) -> HttpResponse:
        received.append(request.body)
        return HttpResponse(200, b"{}")

    port = await nursery.start(serve_http, receiver, "127.0.0.1", 0)
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    await nursery.start(sandbox.serve)
    async with AccountClient(sandbox.http_url(), KEY) as account:
        await account.enable_keyword_alerts(f"http://127.0.0.1:{port}/hook", full_message=False)
        await account.add_keyword("pizza")
        await account.add_keyword("Café")
        await account.remove_keyword("Café")
        first = await account.rotate_secret()
        secret = await account.rotate_secret()  # replaces the first
    assert first != secret
    async with httpx.AsyncClient(base_url=sandbox.http_url(),
                                 headers={AUTH_HEADER: KEY}) as client:
        for body in ({"sample": "Is the PIZZA ready?", "metadata": {"room": "#5"}},
                     {"sample": "pizzas are not a word match"},
                     {"sample": "a café"},
                     # Over 20 metadata keys: moderated, but the add-on does not run.
                     {"sample": "pizza", "metadata": {f"k{i}": i for i in range(21)}}):
            assert (await client.post("/text/moderation", json=body)).status_code == 200
    # Every request was answered, so every alert the sandbox will send is queued by now.
    assert sandbox.stats["webhooks_queued"] == 1
    await eventually(lambda: sandbox.stats["webhooks_status_200"] == 1, within=5)
    assert len(received) == 1
    alert = orjson.loads(received[0])
    assert alert["payload"] == {"keywordDetected": "pizza", "metadata": {"room": "#5"},
                                "fullText": False}
    assert alert["hmac"] == sign(secret.encode(), alert["time"])
    assert alert["hmac"] != sign(first.encode(), alert["time"])
    assert sandbox.stats["keyword_skipped_metadata"] == 1


async def test_every_alert_for_a_message_matching_several_keywords_is_accepted(
    nursery: trio.Nursery,
) -> None:
    """The sandbox delivers as Chatsight does: one alert per matching keyword, all signed for
    the same millisecond (the same ``hmac``); the daemon's receiver accepts every one."""
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    await nursery.start(sandbox.serve)
    keywords = ("pizza", "party", "ready")
    messages = [Message(id=f"m-{i}", text=f"is the pizza party ready? ({i})", source="t")
                for i in range(4)]
    expected = len(keywords) * len(messages)
    alerts: list[KeywordAlert] = []

    async def take(alert: KeywordAlert) -> None:
        alerts.append(alert)

    def delivered() -> int:
        return sum(n for k, n in sandbox.stats.items() if k.startswith("webhooks_status_"))

    async with AccountClient(sandbox.http_url(), KEY) as account:
        secret = await account.rotate_secret()
        api = StatusApi(lambda: True, bytes, alerts=take, section=HttpSection(
            enabled=True, chatsight_webhook_secret=Secret("test", secret)))
        port = await nursery.start(serve_http, api.handle, "127.0.0.1", 0)
        await account.enable_keyword_alerts(f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
                                            full_message=True)
        for keyword in keywords:
            await account.add_keyword(keyword)
    engine = ChatsightEngine("chatsight", ChatsightConfig(
        api_key=Secret("test", KEY), ws_url=sandbox.ws_url(), http_url=sandbox.http_url()))
    await nursery.start(engine.run)
    with trio.fail_after(20):
        async with trio.open_nursery() as senders:  # together: one websocket batch
            for message in messages:
                senders.start_soon(engine.moderate, message)
        await eventually(lambda: delivered() == expected)
    assert sandbox.stats["webhooks_status_200"] == expected
    assert api.rejected == 0
    assert sorted((a.metadata["chatmod_id"], a.keyword) for a in alerts) == sorted(
        (m.id, keyword) for m in messages for keyword in keywords)
    assert {a.text for a in alerts} == {m.text for m in messages}


async def test_a_reload_does_not_forget_the_alerts_already_accepted() -> None:
    secret = "reload-test-shared-secret"
    section = HttpSection(enabled=True, chatsight_webhook_secret=Secret("test", secret))
    api = StatusApi(lambda: True, bytes, section=section)
    now_ms = int(time.time() * 1000)
    body = orjson.dumps({"sender": "chatsight-webhooks", "addon": "keywordAlert",
                         "payload": {"keywordDetected": "pizza", "metadata": {},
                                     "fullText": False},
                         "time": now_ms, "hmac": sign(secret.encode(), now_ms)})

    async def post() -> int:
        return (await api.handle(HttpRequest("POST", WEBHOOK_PATH, "", {}, body))).status

    assert await post() == 200
    assert api.reconfigure(section)  # e.g. SIGHUP for another part of the config
    assert await post() == 401  # still a replay
    assert api.reconfigure(replace(section, webhook_window=300.0))
    assert await post() == 401  # nor a longer window


@pytest.mark.slow
def test_keyword_alert_from_the_sandbox_through_the_daemon(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    env = {"CHATSIGHT_API_KEY": KEY}
    with SandboxProcess(tmp_path, KEY) as sandbox:
        account = ("-c", str(sandbox.config))
        enabled = run_chatmod("addon", "enable", *account, "--full-message",
                              "--webhook", f"http://127.0.0.1:{port}/webhooks/chatsight", env=env)
        assert enabled.returncode == 0, enabled.stderr.decode()
        added = run_chatmod("keywords", "add", *account, "pizza", "refund", env=env)
        assert added.returncode == 0, added.stderr.decode()
        assert "keywords added: pizza, refund" in added.stderr.decode()
        rotated = run_chatmod("secret", "rotate", *account, "--state-dir", str(state), env=env)
        assert rotated.returncode == 0, rotated.stderr.decode()
        secret_file = state / "chatsight-webhook-secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        shown = rotated.stdout.decode().strip()
        assert shown == secret_file.read_text()  # shown once, to the operator, and kept
        assert "shown once" in rotated.stderr.decode()

        engine = sandbox.engine_table()
        config = tmp_path / "daemon.toml"
        config.write_text(
            f"[http]\nenabled = true\nport = {port}\n"
            f"chatsight_webhook_secret_file = '{secret_file}'\n"
            f"[engine]\nprimary = 'chatsight'\nfallback = 'flag'\n[engines.chatsight]{engine}"
            f"[[sources]]\ntype = 'stdin'\nformat = 'jsonl'\n"
            f"[[sinks]]\ntype = 'jsonl'\npath = '{tmp_path / 'decisions.jsonl'}'\n")
        with Daemon(tmp_path, config, env=env) as daemon:
            wait_ready(port, daemon.log)
            daemon.send('{"id": "m-1", "text": "hello there", "channel": "#lobby"}',
                        '{"id": "m-2", "text": "where is my pizza", "author": "bob", '
                        '"channel": "#food"}')

            def alerts() -> list[dict[str, object]]:
                lines = daemon.out.read_bytes().splitlines() if daemon.out.exists() else []
                return [orjson.loads(line) for line in lines if b'"type":"alert"' in line]

            daemon.wait_for(lambda: len(alerts()) == 1, "the first alert")
            # A rotation the daemon has not reloaded: the new signatures fail until SIGHUP.
            rotated_again = run_chatmod("secret", "rotate", *account, "--state-dir",
                                        str(state), env=env)
            assert rotated_again.returncode == 0
            daemon.send('{"id": "m-3", "text": "pizza again", "channel": "#food"}')
            daemon.wait_for_log("keyword alert refused (401)")
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_for_log("keyword alert verification")
            daemon.send('{"id": "m-4", "text": "a refund please", "channel": "#help"}')
            daemon.wait_for(lambda: len(alerts()) == 2, "the second alert")
            assert daemon.finish() == 0
    found = alerts()
    assert [(a["keyword"], a["text"]) for a in found] == [("pizza", "where is my pizza"),
                                                          ("refund", "a refund please")]
    # The context chatmod sent with the request comes back, so the alert can be traced.
    metadata = found[0]["metadata"]
    assert isinstance(metadata, dict)
    assert (metadata["chatmod_id"], metadata["chatmod_channel"], metadata["chatmod_author"],
            metadata["chatmod_source"]) == ("m-2", "#food", "bob", "stdin")
    log = daemon.log.read_text()
    for secret in (shown, secret_file.read_text(), KEY):
        assert secret not in log
        assert secret.encode() not in daemon.out.read_bytes()
