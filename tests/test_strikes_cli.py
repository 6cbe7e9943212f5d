"""``chatmod strikes show|clear``: against the store a running daemon uses, audited."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from .helpers import Daemon, run_chatmod, write_config

pytestmark = pytest.mark.slow

CONFIG = """
[daemon]
state_dir = "{state}"
stats_interval = 0
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


def test_clear_on_a_running_daemon_resets_the_ladder_and_is_audited(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path / "chatmod.toml",
                          CONFIG.format(state=state, out=tmp_path / "decisions.jsonl"))
    with Daemon(tmp_path, config) as daemon:
        # One at a time: messages moderated at once reach the ladder in either order.
        for n, message in enumerate([line(1), line(2), line(3, channel="#games")], 1):
            daemon.send(message)
            daemon.wait_for(lambda n=n: len(daemon.decisions()) == n, f"decision {n}")
        shown = run_chatmod("strikes", "show", "bob", "-c", str(config))
        assert shown.returncode == 0, shown.stderr.decode()
        assert orjson.loads(shown.stdout) == {"author": "bob",
                                              "strikes": {"#games": 1, "#lobby": 2}}
        cleared = run_chatmod("strikes", "clear", "bob", "--channel", "#lobby", "--why",
                              "appeal accepted", "--by", "mod-ann", "-c", str(config))
        assert cleared.returncode == 0, cleared.stderr.decode()
        daemon.send(line(4), line(5, channel="#games"))
        daemon.wait_for(lambda: len(daemon.decisions()) == 5, "two more decisions")
        assert daemon.finish() == 0
    steps = {d["id"]: (d["strikes"], d["step"]) for d in daemon.decisions()}
    assert steps == {"m1": (1, "warn"), "m2": (2, "timeout 10m"), "m3": (1, "warn"),
                     "m4": (1, "warn"), "m5": (2, "timeout 10m")}
    (entry,) = [orjson.loads(x) for x in (state / "audit.jsonl").read_bytes().splitlines()]
    assert (entry["who"], entry["what"], entry["why"], entry["author"], entry["channel"],
            entry["cleared"]) == ("mod-ann", "strikes.clear", "appeal accepted", "bob",
                                  "#lobby", 2)


def test_strikes_kept_in_memory_only_are_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path / "chatmod.toml", CONFIG.replace(
        'state_dir = "{state}"\n', "").format(out=tmp_path / "d.jsonl"))
    result = run_chatmod("strikes", "show", "bob", "-c", str(config),
                         env={"STATE_DIRECTORY": ""})
    assert result.returncode != 0
    assert b"memory only" in result.stderr
