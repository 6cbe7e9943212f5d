"""``chatmod replay``: recorded decisions decided again under a new config, with no engine
call where the recorded verdict can be reused; the change counts checked against a count made
here independently. The line parser is fuzzed."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.config.sections import PolicySection
from chatmod.core.model import Decision, Message, Verdict
from chatmod.errors import InputError
from chatmod.plugins.local import LocalConfig, LocalEngine
from chatmod.policy.rules import Policy
from chatmod.review.replay import Recorded, parse_replay_line, replay

from .helpers import run_chatmod

OLD_FLAG, OLD_DELETE, NEW_DELETE = 0.5, 0.9, 0.7
CHANNELS = ("#lobby", "#games", "#kids")
ACTIONS = {"pass": "none", "flag": "flag", "delete": "delete"}

# A profanity_check that records every call: the replay must never load or call the model.
FAKE_MODEL = '''
import os

def predict_prob(texts):
    with open(os.environ["FAKE_MODEL_CALLS"], "a") as calls:
        calls.write(f"{len(texts)}\\n")
    return [0.99 for _ in texts]
'''


def old_verdict(score: float) -> str:
    return "delete" if score >= OLD_DELETE else "flag" if score >= OLD_FLAG else "pass"


def decisions_file(path: Path, n: int, seed: int = 13) -> list[dict[str, Any]]:
    """``n`` decision lines as the local engine at the old thresholds wrote them, plus records
    that are not decisions (an alert, a review) the replay must skip."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        score = round(rng.random(), 4)
        verdict = old_verdict(score)
        records.append({"id": f"m-{i}", "source": "stdin", "channel": rng.choice(CHANNELS),
                        "author": f"user{i % 50}", "verdict": verdict, "score": score,
                        "action": ACTIONS[verdict], "engine": "local", "route": "local",
                        "latency_ms": 1.0, "ts": "2026-11-26T00:00:00.000Z",
                        "scores": {"profanity": score}, "text": f"line {i}"})
    extra = [{"type": "alert", "keyword": "pizza"}, {"type": "review", "outcome": "approved"}]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [*records, *extra]))
    return records


def new_config(path: Path, delete_threshold: float) -> Path:
    path.write_text(f"""
[engine]
primary = "local"
[engines.local]
flag_threshold = {OLD_FLAG}
delete_threshold = {delete_threshold}
[[sources]]
type = "stdin"
[[sinks]]
type = "jsonl"
path = "-"
""")
    return path


@pytest.mark.slow
def test_replaying_10000_decisions_under_a_lower_delete_threshold(tmp_path: Path) -> None:
    recorded = decisions_file(tmp_path / "decisions.jsonl", 10_000)
    config = new_config(tmp_path / "new.toml", NEW_DELETE)
    fake = tmp_path / "fake"
    (fake / "profanity_check").mkdir(parents=True)
    (fake / "profanity_check" / "__init__.py").write_text(FAKE_MODEL)
    calls = tmp_path / "model-calls"
    env = {"PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]),
           "FAKE_MODEL_CALLS": str(calls)}

    done = run_chatmod("replay", "-c", str(config), str(tmp_path / "decisions.jsonl"), "--json",
                       env=env)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert not calls.exists()  # the model was never asked
    assert report["engine_calls"] == 0
    assert report["reused"] == 10_000

    # The independent count: a flag whose score reaches the new delete threshold is deleted.
    moved = [r for r in recorded if NEW_DELETE <= r["score"] < OLD_DELETE]
    by_channel = Counter(r["channel"] for r in moved)
    assert moved, "the generated scores must cross the new threshold"
    assert (report["lines"], report["decision_lines"], report["skipped"]) == (10_002, 10_000, 2)
    assert report["changed"] == len(moved)
    assert report["changes"] == [{"old": "flag", "new": "delete", "count": len(moved)}]
    assert {c: n[0]["count"] for c, n in report["by_channel"].items()} == dict(by_channel)
    assert report["by_rule"] == {"policy: verdict delete": [
        {"old": "flag", "new": "delete", "count": len(moved)}]}
    examples = report["examples"][0]["examples"]
    assert examples
    assert all(NEW_DELETE <= e["score"] < OLD_DELETE for e in examples)

    # The same file under the old config changes nothing; --rescore asks the model (the fake
    # says 0.99 to everything), so the check above can fail.
    same = run_chatmod("replay", "-c", str(new_config(tmp_path / "old.toml", OLD_DELETE)),
                       str(tmp_path / "decisions.jsonl"), "--json", env=env)
    assert orjson.loads(same.stdout)["changed"] == 0
    small = tmp_path / "small.jsonl"
    small_records = decisions_file(small, 20)
    rescored = run_chatmod("replay", "-c", str(config), str(small), "--rescore", "--json",
                           env=env)
    assert rescored.returncode == 0, rescored.stderr
    assert calls.exists()
    assert orjson.loads(rescored.stdout)["engine_calls"] == 20
    assert orjson.loads(rescored.stdout)["changed"] == sum(
        r["action"] != "delete" for r in small_records)


def test_the_text_report_names_changes_channels_rules_and_examples(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_bytes(b"".join(orjson.dumps({
        "id": f"m-{i}", "channel": "#lobby", "verdict": "flag", "score": 0.8, "action": "flag",
        "engine": "local", "route": "local", "text": f"meh {i}"}) + b"\n" for i in range(4)))
    done = run_chatmod("replay", "-c", str(new_config(tmp_path / "c.toml", NEW_DELETE)),
                       str(tmp_path / "d.jsonl"))
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode()
    assert "actions that would change: 4 of 4" in out
    assert "  flag -> delete: 4" in out
    assert "  #lobby: flag -> delete: 4" in out
    assert "  policy: verdict delete: flag -> delete: 4" in out
    assert "line 1 m-0 #lobby (verdict flag -> delete, score 0.8) 'meh 0'" in out


class CountingEngine(LocalEngine):
    def __init__(self) -> None:
        super().__init__("local", LocalConfig(delete_threshold=NEW_DELETE),
                         predictor=lambda texts: [0.95 for _ in texts])


async def test_the_decide_step_sees_every_line_in_order_and_raw_lines_are_asked() -> None:
    lines = [orjson.dumps({"id": f"m-{i}", "channel": "#a", "verdict": "flag", "score": 0.6,
                           "action": "flag", "engine": "local", "route": "local",
                           "text": f"t{i}"}) for i in range(30)]
    lines += [b"plain chat line", orjson.dumps({"id": "raw-1", "text": "json chat line"}),
              b"{not json", orjson.dumps({"id": "x", "verdict": "flag", "action": "flag",
                                          "engine": "other", "route": "ws", "text": "elsewhere"})]
    policy = Policy(PolicySection())
    seen: list[str] = []
    asked: list[str] = []

    def decide(message: Message, verdict: Verdict) -> Decision:
        seen.append(message.id)  # a ladder would count strikes here, in file order
        return policy.decide(message, verdict, 0.0)

    async def ask(message: Message) -> Verdict:
        asked.append(message.text)
        return Verdict("delete", 0.95, "local", "local")

    report = await replay(enumerate(lines, start=1), CountingEngine(), ask, decide, window=7)
    assert seen == [*(f"m-{i}" for i in range(30)), "line-31", "raw-1", "x"]
    assert sorted(asked) == ["elsewhere", "json chat line", "plain chat line"]
    assert (report.reused, report.engine_calls, report.invalid) == (30, 3, 1)
    assert (report.chat_lines, report.decision_lines, report.changed) == (2, 31, 1)
    assert report.changes == Counter({("flag", "delete"): 1})


@example(b'{"verdict": "flag", "action": "flag", "engine": "x", "score": true}')
@example(b'{"verdict": "flag", "action": "flag", "engine": "x", "scores": []}')
@example(b'{"verdict": 1, "action": "flag", "engine": "x"}')
@example(b'{"text": 5}')
@example(b"[1]")
@example(b"\xff\xfe{")
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["id", "text", "verdict", "action", "engine", "route",
                                     "score", "scores", "channel", "author", "type",
                                     "metadata", "images"]),
                    st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                                 | st.text(max_size=20),
                                 lambda inner: st.lists(inner, max_size=3)
                                 | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                                 max_leaves=6)).map(lambda record: json.dumps(record).encode()),
))
def test_a_replay_line_is_recorded_skipped_or_an_input_error(data: bytes) -> None:
    try:
        recorded = parse_replay_line(data, 1)
    except InputError:
        return
    assert recorded is None or isinstance(recorded, Recorded)


def test_replay_counts_strikes_again_in_order_in_memory_at_each_lines_time(
        tmp_path: Path) -> None:
    """A ladder added in the new config: strikes are counted in file order at each line's
    recorded time (a window that ran out starts at the first step again), in memory only."""
    day = 86_400.0
    t0 = 1_790_000_000.0  # 2026-09-21

    def line(i: int, author: str, at: float) -> dict[str, Any]:
        return {"id": f"m-{i}", "source": "stdin", "channel": "#lobby", "author": author,
                "text": "you idiot", "verdict": "delete", "score": 1.0, "action": "delete",
                "engine": "wordlist", "route": "local", "latency_ms": 0.1,
                "ts": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")}

    rows = [line(1, "bob", t0), line(2, "alice", t0 + 1), line(3, "bob", t0 + 60),
            line(4, "bob", t0 + 120), line(5, "bob", t0 + 120 + 2 * day)]
    recorded = tmp_path / "decisions.jsonl"
    recorded.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    state = tmp_path / "state"
    config = tmp_path / "ladder.toml"
    config.write_text(f"""
[daemon]
state_dir = "{state}"
[engine]
primary = "wordlist"
[engines.wordlist]
delete = ["idiot"]
[policy.ladder]
steps = ["warn", "timeout 10m", "ban"]
window = {day}
strikes = {{ delete = 1 }}
[state]
backend = "sqlite"
[[sources]]
type = "stdin"
[[sinks]]
type = "jsonl"
path = "-"
""")
    done = run_chatmod("replay", "-c", str(config), str(recorded), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["engine_calls"] == 0
    assert {(c["old"], c["new"]): c["count"] for c in report["changes"]} == {
        ("delete", "delete (warn)"): 3,  # bob's first, alice's first, bob's after the window
        ("delete", "delete (timeout 10m)"): 1,
        ("delete", "delete (ban)"): 1,
    }
    assert set(report["by_rule"]) == {"policy: ladder step warn",
                                      "policy: ladder step timeout 10m",
                                      "policy: ladder step ban"}
    assert not (state / "state.sqlite3").exists()  # the live store was never opened
