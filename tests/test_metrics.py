"""/metrics: typed families that promtool accepts, exact counters, counters that survive
reloads, the latency histogram, and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from chatmod.config.load import load_config
from chatmod.config.sections import PolicySection
from chatmod.core.engine_chain import EngineChain
from chatmod.core.interfaces import Engine, Intake, Sink, Source
from chatmod.core.latency import LATENCY_BOUNDS_MS, LatencyHistogram
from chatmod.core.model import Decision, Message, Verdict
from chatmod.core.pipeline import Pipeline
from chatmod.policy.rules import Policy
from chatmod.runtime.metrics import CounterGuard, _Family, family_name, metrics_endpoint
from chatmod.runtime.service import Service

from .helpers import REPO, WORDLIST_CONFIG, Daemon, eventually, write_config
from .servers import SandboxProcess, missing
from .test_chatsight import OK_BODY, http_only_engine, mock_http

DASHBOARD = REPO / "scripts" / "grafana" / "chatmod-dashboard.json"
SANDBOX_KEY = "c.metrics-test.key-0123456789"
SERVING = re.compile(r"/stats on 127\.0\.0\.1:(\d+)")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of an exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def counter_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample that may never go down: counters and histogram buckets, counts, sums."""
    found = {}
    for family in text_string_to_metric_families(text):
        if family.type in ("counter", "histogram"):
            for s in family.samples:
                found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def promtool_check(text: str) -> str:
    """What ``promtool check metrics`` says of a scrape (nothing when it is clean)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool (Debian's prometheus package)")
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30, check=False)
    return (done.stdout + done.stderr).decode()


def http_port(daemon: Daemon) -> int:
    daemon.wait_for(lambda: SERVING.search(daemon.log.read_text()), "the HTTP server")
    found = SERVING.search(daemon.log.read_text())
    assert found is not None
    return int(found[1])


def scrape(port: int) -> str:
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return reply.text


def in_process_service(tmp_path: Path) -> Service:
    config = write_config(tmp_path / "c.toml", "[http]\nenabled = true\nport = 0\n"
                          + WORDLIST_CONFIG.format(format="text", path=tmp_path / "d.jsonl"))
    return Service(load_config(config), config)


def test_counters_are_exact_past_ten_million(tmp_path: Path) -> None:
    service = in_process_service(tmp_path)
    service.pipeline.received = 12_345_679
    service.pipeline.actions["delete"] = 10_000_001
    text = metrics_endpoint(service)().decode()
    found = samples(text)
    assert found[("chatmod_messages_received_total", ())] == 12_345_679
    assert found[("chatmod_decisions_total", (("action", "delete"),))] == 10_000_001
    # Every digit is in the text (the old %g printed 1.23457e+07).
    assert "chatmod_messages_received_total 1.2345679e+07" in text
    assert promtool_check(text) == ""
    # The check can fail: the old hand-written shape (no HELP, a unit in ms, no _total).
    old_shape = "# TYPE chatmod_pipeline_latency_ms_p99_ws untyped\nchatmod_pipeline_latency_ms_p99_ws 1\n"
    assert "no help text" in promtool_check(old_shape)


def test_series_exist_from_the_start_with_help_and_type(tmp_path: Path) -> None:
    text = metrics_endpoint(in_process_service(tmp_path))().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for family in families.values():
        assert family.type in ("counter", "gauge", "histogram"), family.name
        assert family.documentation, family.name
    found = samples(text)
    # Every action the policy can take, before any decision.
    for action in ("none", "flag", "delete"):
        assert found[("chatmod_decisions_total", (("action", action),))] == 0
    assert found[("chatmod_decision_routes_total", (("route", "local"),))] == 0
    assert found[("chatmod_sink_failed_decisions_total", (("sink", "jsonl"),))] == 0
    assert found[("chatmod_engine_fallbacks_total", (("engine", "wordlist"),))] == 0
    assert found[("chatmod_decision_latency_seconds_count",
                  (("engine", "wordlist"), ("route", "local")))] == 0
    assert found[("chatmod_engine_up", (("engine", "wordlist"),))] == 0  # not started
    assert not any("untyped" in line for line in text.splitlines())


def test_histogram_buckets_are_cumulative_and_end_at_the_count() -> None:
    histogram = LatencyHistogram()
    rng = random.Random(11)
    values = [rng.lognormvariate(2.0, 2.5) for _ in range(5000)] + list(LATENCY_BOUNDS_MS)
    for value in values:
        histogram.observe(value)
    cumulative = histogram.cumulative()
    assert cumulative == sorted(cumulative)
    assert cumulative[-1] == histogram.count == len(values)
    for bound, at_or_below in zip(LATENCY_BOUNDS_MS, cumulative, strict=False):
        assert at_or_below == sum(1 for v in values if v <= bound)  # ``le``: a bound counts
    assert histogram.sum_ms == pytest.approx(sum(values))
    # The estimate lies in the bucket that holds the true quantile.
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        true = ordered[int(q * len(ordered))]
        estimate = histogram.quantile(q)
        upper = next((b for b in LATENCY_BOUNDS_MS if true <= b), LATENCY_BOUNDS_MS[-1])
        lower = max((b for b in LATENCY_BOUNDS_MS if b < upper), default=0.0)
        assert lower <= estimate <= upper


def test_the_guard_carries_a_reset_over_and_keeps_a_vanished_series() -> None:
    guard = CounterGuard()

    def scrape_of(**values: float) -> dict[str, _Family]:
        family = _Family("chatmod_sink_written", "counter", "h", ("sink",))
        family.samples = {(name,): value for name, value in values.items()}
        return {family.name: family}

    first = scrape_of(a=1591.0, b=7.0)
    guard.apply(first)
    assert first["chatmod_sink_written"].samples == {("a",): 1591.0, ("b",): 7.0}
    second = scrape_of(a=151.0)  # a restarted from zero; b is gone
    guard.apply(second)
    assert second["chatmod_sink_written"].samples == {("a",): 1742.0, ("b",): 7.0}
    third = scrape_of(a=152.0)
    guard.apply(third)
    assert third["chatmod_sink_written"].samples[("a",)] == 1743.0


def test_family_names_are_snake_case_with_the_prefix() -> None:
    assert family_name("sink", "irc-actions.Kick") == "chatmod_sink_irc_actions_kick"
    assert family_name("engine", "p50..ws") == "chatmod_engine_p50_ws"


async def test_breaker_counts_openings_and_shows_the_http_connection_down(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
) -> None:
    from chatmod.errors import EngineError

    responses = [httpx.Response(503)] * 4 + [httpx.Response(200, content=OK_BODY)] + [
        httpx.Response(503)] * 3
    with trio.fail_after(120):  # virtual seconds
        transport, _ = mock_http(responses)
        engine = await http_only_engine(nursery, transport, http_retries=0,
                                        http_breaker_failures=3, http_breaker_cooldown=10.0)
        message = Message(id="a", text="hm", source="t")
        assert engine.statistics()["connection_up.http"] == 1.0
        for _ in range(3):
            with pytest.raises(EngineError):
                await engine.moderate(message)
        assert engine.statistics()["http_breaker_opened"] == 1
        assert engine.statistics()["connection_up.http"] == 0.0
        await trio.sleep(10)
        with pytest.raises(EngineError, match="HTTP 503"):
            await engine.moderate(message)  # the probe fails: still the same opening
        assert engine.statistics()["http_breaker_opened"] == 1
        await trio.sleep(10)
        await engine.moderate(message)  # the probe succeeds: closed
        assert engine.statistics()["connection_up.http"] == 1.0
        for _ in range(3):
            with pytest.raises(EngineError):
                await engine.moderate(message)
        assert engine.statistics()["http_breaker_opened"] == 2
        assert engine.statistics()["http.status_503"] == 7


def chatsight_config(sandbox: SandboxProcess, out: Path, verdict_timeout: float) -> str:
    return f"""
[http]
enabled = true
port = 0
[daemon]
drain_timeout = 10.0
[engine]
primary = "chatsight"
[engines.chatsight]
{sandbox.engine_table()}
verdict_timeout = {verdict_timeout}
[[sources]]
type = "stdin"
[[sinks]]
type = "jsonl"
path = "{out}"
"""


@pytest.mark.slow
def test_a_real_scrape_passes_promtool_and_survives_a_reload(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    with SandboxProcess(tmp_path, SANDBOX_KEY, "--latency", "0:5") as sandbox:
        config.write_text(chatsight_config(sandbox, first, 2.0))
        with Daemon(tmp_path, config, env={"CHATSIGHT_API_KEY": SANDBOX_KEY}) as daemon:
            daemon.out = first
            port = http_port(daemon)
            daemon.wait_for_log("websocket connected")
            daemon.send(*(f"you idiot {i}" if i % 3 else f"hello {i}" for i in range(30)))
            daemon.wait_for(lambda: len(daemon.decisions()) == 30, "30 decisions")
            before = scrape(port)
            assert promtool_check(before) == ""
            found = samples(before)
            assert found[("chatmod_sink_written_total", (("sink", "jsonl"),))] == 30
            assert found[("chatmod_engine_connection_up",
                          (("connection", "websocket"), ("engine", "chatsight")))] == 1
            assert found[("chatmod_engine_up", (("engine", "chatsight"),))] == 1
            # Counted nothing yet, exported all the same.
            for counter in ("ws_keepalive_timeouts", "ws_auth_failures", "http_requests",
                            "http_breaker_opened"):
                assert found[(f"chatmod_engine_{counter}_total",
                              (("engine", "chatsight"),))] == 0
            assert found[("chatmod_decision_latency_seconds_count",
                          (("engine", "chatsight"), ("route", "ws")))] == 30

            # A new sink file and a changed engine option: sinks swapped, engine restarted.
            config.write_text(chatsight_config(sandbox, second, 3.0))
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_for_log("engine chatsight restarted with its new settings")
            daemon.wait_for_log("new sinks are taking decisions")
            daemon.out = second
            daemon.send(*(f"hello again {i}" for i in range(10)))
            daemon.wait_for(lambda: len(daemon.decisions()) == 10, "10 decisions after")
            # The old engine is retired once nothing waits on it; the scrape after that.
            daemon.wait_for(lambda: samples(scrape(port)).get(
                ("chatmod_engine_connection_up",
                 (("connection", "websocket"), ("engine", "chatsight")))) == 1,
                "the new engine's websocket")
            after = scrape(port)
            assert promtool_check(after) == ""
            assert daemon.finish() == 0
    old, new = counter_samples(before), counter_samples(after)
    went_down = {key: (value, new.get(key)) for key, value in old.items()
                 if new.get(key, -1.0) < value}
    assert went_down == {}
    found = samples(after)
    # Exact, not just monotone: the replaced sink's and engine's counts carried on.
    assert found[("chatmod_sink_written_total", (("sink", "jsonl"),))] == 40
    assert found[("chatmod_messages_decided_total", ())] == 40
    assert found[("chatmod_engine_verdicts_total",
                  (("engine", "chatsight"), ("route", "ws")))] == 40
    assert found[("chatmod_reloads_total", ())] == 1
    assert dashboard_metrics() <= {name for name, _ in found} | family_names(after)


def family_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def dashboard_metrics() -> set[str]:
    """Every chatmod_* name the dashboard's queries use."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    assert exprs
    return {name for expr in exprs for name in re.findall(r"\bchatmod_[a-z0-9_]+", expr)}


def test_dashboard_queries_use_metrics_a_scrape_has(tmp_path: Path) -> None:
    text = metrics_endpoint(in_process_service(tmp_path))().decode()
    names = {s.name for family in text_string_to_metric_families(text)
             for s in family.samples} | family_names(text)
    # A Chatsight engine's families appear only with that engine, and the components' once
    # they run: those names are checked against the real daemon's scrape above.
    static = {name for name in dashboard_metrics()
              if not name.startswith(("chatmod_engine_", "chatmod_component_"))}
    assert static <= names, static - names
    assert any("histogram_quantile(0.99" in target["expr"]
               for panel in json.loads(DASHBOARD.read_text())["panels"]
               for target in panel.get("targets", []))


class FedSource(Source):
    """Submits what the test sends on ``feed``; ends when ``feed`` is closed."""

    def __init__(self) -> None:
        super().__init__("fed", None)
        self.feed, self._messages = trio.open_memory_channel[Message](100)

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        async for message in self._messages:
            await intake.submit(message)


class CountingSink(Sink):
    def __init__(self) -> None:
        super().__init__("out", None)
        self.written = 0

    async def write(self, decisions: Sequence[Decision]) -> None:
        self.written += len(decisions)

    def statistics(self) -> dict[str, float]:
        return {"written": self.written}


class CountingEngine(Engine):
    verdict_routes = ("local",)

    def __init__(self) -> None:
        super().__init__("counter", None)
        self.answered = 0

    async def moderate(self, message: Message) -> Verdict:
        self.answered += 1
        return Verdict("pass", 0.0, self.name, "local")

    def statistics(self) -> dict[str, float]:
        return {"answered": self.answered, "in_flight": 0}


async def test_replaced_sinks_and_engines_hand_their_counts_on(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    service = in_process_service(tmp_path)
    source, sink, engine = FedSource(), CountingSink(), CountingEngine()
    pipeline = Pipeline([source], [engine], EngineChain([engine], "flag", timeout=5),
                        Policy(PolicySection()), [sink])
    service.pipeline = pipeline
    render = metrics_endpoint(service)

    def counts() -> tuple[float, float, float]:
        found = samples(render().decode())
        return (found[("chatmod_sink_written_total", (("sink", "out"),))],
                found[("chatmod_engine_answered_total", (("engine", "counter"),))],
                found[("chatmod_messages_decided_total", ())])

    async def send(n: int, decided: int) -> None:
        for i in range(n):
            await source.feed.send(Message(id=f"m{pipeline.received + i}", text="hi",
                                           source="fed"))
        await eventually(lambda: pipeline.decided == decided)

    with trio.fail_after(20):
        await nursery.start(pipeline.run)
        await send(20, 20)
        assert counts() == (20, 20, 20)
        await send(5, 25)  # counted by the old sink and engine, with no scrape after
        new_sink, new_engine = CountingSink(), CountingEngine()
        pipeline.replace_sinks([new_sink])
        pipeline.replace_engine(engine, new_engine)
        await eventually(lambda: pipeline.sinks == [new_sink]
                         and pipeline.chain.engines == [new_engine])
        await send(5, 30)
        assert (sink.written, new_sink.written) == (25, 5)
        assert counts() == (30, 30, 30)
        await eventually(lambda: not pipeline.retired.retiring)  # both stopped: totals kept
        assert counts() == (30, 30, 30)
        source.feed.close()


async def test_chatsight_http_counters_survive_an_engine_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from chatmod.config.schema import Secret
    from chatmod.errors import EngineError
    from chatmod.plugins.chatsight import ChatsightConfig, ChatsightEngine

    from .test_chatsight import API_KEY

    transport, _ = mock_http([httpx.Response(503)] * 2)
    engine = ChatsightEngine("chatsight", ChatsightConfig(
        api_key=Secret("test", API_KEY), use_websocket=False, http_url="http://127.0.0.1:9",
        http_retries=0), http_transport=transport)
    with trio.fail_after(60):  # virtual seconds
        for _ in range(2):  # the supervisor runs the same object again after a failure
            async with trio.open_nursery() as running:
                await running.start(engine.run)
                with pytest.raises(EngineError):
                    await engine.moderate(Message(id="a", text="hm", source="t"))
                running.cancel_scope.cancel()
            assert engine.statistics()["connection_up.http"] == 0  # stopped
        assert engine.statistics()["http.status_503"] == 2


class ConnectedEngine(CountingEngine):
    """Reports a websocket and an HTTP connection, up or down as the test sets them."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = {"websocket": 1.0, "http": 1.0}

    def statistics(self) -> dict[str, float]:
        return {**super().statistics(),
                **{f"connection_up.{name}": up for name, up in self.connections.items()}}


def test_engine_up_is_0_while_no_connection_is_usable(tmp_path: Path) -> None:
    service = in_process_service(tmp_path)
    engine = ConnectedEngine()
    service.pipeline = Pipeline([FedSource()], [engine], EngineChain([engine], "flag", timeout=5),
                                Policy(PolicySection()), [CountingSink()])
    render = metrics_endpoint(service)

    def up() -> tuple[float, float, float]:
        found = samples(render().decode())
        return (found[("chatmod_engine_up", (("engine", "counter"),))],
                found[("chatmod_engine_connection_up",
                       (("connection", "websocket"), ("engine", "counter")))],
                found[("chatmod_engine_connection_up",
                       (("connection", "http"), ("engine", "counter")))])

    assert up() == (0, 1, 1)  # not running (never supervised)
    service.pipeline.supervisor.health("engine", "counter").up = True
    assert up() == (1, 1, 1)
    engine.connections["websocket"] = 0.0  # the socket dropped: HTTP still answers
    assert up() == (1, 0, 1)
    engine.connections["http"] = 0.0  # the breaker opened too: the fallback decides
    assert up() == (0, 0, 0)
