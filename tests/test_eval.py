"""``chatmod eval``: the metrics and the sweep on small hand-computed examples, their
invariants (hypothesis; HYPOTHESIS_PROFILE=thorough: 10,000 examples), the labelled-file
parser, and the command against the wordlist engine and the Chatsight sandbox."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatmod.errors import LabelledSetError
from chatmod.evaluation.labelled import LabelledLine, parse_labelled, select_split
from chatmod.evaluation.metrics import NOT_PASS, Scores, confusion, per_label
from chatmod.evaluation.sweep import best_cut, cuts, suggest

from .helpers import WORDLIST_CONFIG, run_chatmod, write_config
from .servers import SandboxProcess

SANDBOX_KEY = "c.eval-test.key-0123456789"
LABELS = ["pass", "pass", "flag", "delete", "delete"]


def test_confusion_and_scores_by_hand() -> None:
    verdicts = ["pass", "flag", "flag", "delete", "error"]
    assert confusion(LABELS, verdicts) == {
        "pass": {"pass": 1, "flag": 1, "delete": 0, "error": 0},
        "flag": {"pass": 0, "flag": 1, "delete": 0, "error": 0},
        "delete": {"pass": 0, "flag": 0, "delete": 1, "error": 1},
    }
    scores = per_label(LABELS, verdicts)
    assert scores["pass"] == Scores(1, 0, 1)
    assert (scores["pass"].precision, scores["pass"].recall) == (1.0, 0.5)
    assert scores["pass"].f1 == pytest.approx(2 / 3)
    assert (scores["flag"].precision, scores["flag"].recall) == (0.5, 1.0)
    assert scores["delete"] == Scores(1, 0, 1)
    # "not pass": flag or delete said of a flag or delete line; an error is no verdict.
    assert scores[NOT_PASS] == Scores(2, 1, 1)
    assert scores[NOT_PASS].precision == pytest.approx(2 / 3)
    assert Scores(0, 0, 0).f1 == 0.0


def test_sweep_by_hand() -> None:
    scores = [0.1, 0.7, 0.6, 0.95, 0.9]
    found = cuts(scores, [label != "pass" for label in LABELS])
    assert [(c.scores.true_positives, c.scores.false_positives) for c in found] == [
        (1, 0), (2, 0), (2, 1), (3, 1), (3, 2)]
    # Each cut is a short number between its score and the next lower one.
    assert [c.threshold for c in found] == [0.93, 0.8, 0.65, 0.3, 0.1]
    suggestion = suggest(scores, LABELS, flag_precision=0.85, delete_precision=0.9)
    assert suggestion.flag is not None
    assert suggestion.delete is not None
    assert suggestion.flag.threshold == 0.8  # precision 1.0, recall 2/3
    assert suggestion.flag.scores.recall == pytest.approx(2 / 3)
    assert suggestion.delete.threshold == 0.8  # both deletes, nothing else
    assert suggestion.delete.scores == Scores(2, 0, 0)
    lower = suggest(scores, LABELS, flag_precision=0.75, delete_precision=0.9)
    assert lower.flag is not None
    assert lower.flag.threshold == 0.3
    assert lower.flag.scores.recall == 1.0
    assert suggest(scores, LABELS, 1.0, 1.0).flag is not None
    assert best_cut(found, 1.0, at_least=0.99) is None


verdict_strategy = st.sampled_from(["pass", "flag", "delete", "error", "timeout"])
label_strategy = st.sampled_from(["pass", "flag", "delete"])


@given(st.lists(st.tuples(label_strategy, verdict_strategy)))
def test_metric_invariants(pairs: list[tuple[str, str]]) -> None:
    labels, verdicts = [p[0] for p in pairs], [p[1] for p in pairs]
    matrix = confusion(labels, verdicts)
    assert sum(sum(row.values()) for row in matrix.values()) == len(pairs)
    for label, row in matrix.items():
        assert sum(row.values()) == labels.count(label)
    scores = per_label(labels, verdicts)
    assert scores[NOT_PASS].support == len(pairs) - labels.count("pass")
    for s in scores.values():
        assert 0.0 <= s.precision <= 1.0
        assert 0.0 <= s.recall <= 1.0
        assert min(s.precision, s.recall) - 1e-9 <= s.f1 <= max(s.precision, s.recall) + 1e-9


@given(st.lists(st.tuples(st.one_of(st.none(), st.floats(0, 1)), label_strategy)),
       st.floats(0.01, 1.0), st.floats(0.01, 1.0))
@example([(0.5, "flag"), (0.5000001, "pass")], 0.9, 0.9)
@example([(0.0, "pass"), (5e-324, "pass")], 1.0, 1.0)  # no number between the two scores
def test_sweep_invariants(rows: list[tuple[float | None, str]], flag_precision: float,
                          delete_precision: float) -> None:
    scores, labels = [r[0] for r in rows], [r[1] for r in rows]
    positive = [label != "pass" for label in labels]
    found = cuts(scores, positive)
    for cut in found:  # a cut puts exactly the lines scored at or above it on its side
        assert cut.scores.predicted == sum(s is not None and s >= cut.threshold for s in scores)
    recalls = [c.scores.recall for c in found]
    assert recalls == sorted(recalls)
    suggestion = suggest(scores, labels, flag_precision, delete_precision)
    if suggestion.flag is not None:
        assert suggestion.flag.scores.precision >= flag_precision
        if suggestion.delete is not None:
            assert suggestion.delete.threshold >= suggestion.flag.threshold
            assert suggestion.delete.scores.precision >= delete_precision


def test_labelled_lines_are_read_and_bad_ones_named_by_number() -> None:
    data = b'{"text": "hi", "label": "pass", "split": "dev"}\n\n{"text": "x", "label": "flag"}\n'
    assert parse_labelled(data) == [LabelledLine("hi", "pass", "dev"), LabelledLine("x", "flag")]
    for bad, reason in [
        (b'{"text": "a", "label": "pass"}\n{"text": "b", "label": "ban"}', "line 2: \"label\""),
        (b'{"text": "a", "label": "pass"}\nnot json', "line 2: not JSON"),
        (b'[1]', "line 1: expected a JSON object"),
        (b'{"text": 3, "label": "pass"}', 'line 1: "text"'),
        (b'{"text": "a", "label": "pass", "split": 1}', 'line 1: "split"'),
        (b'\n\n', "no labelled lines"),
        (b'\xff\xfe', "line 1: not JSON"),
    ]:
        with pytest.raises(LabelledSetError, match=reason):
            parse_labelled(bad)
    lines = parse_labelled(data)
    assert select_split(lines, "dev") == [LabelledLine("hi", "pass", "dev")]
    with pytest.raises(LabelledSetError, match="no line has split 'test'"):
        select_split(lines, "test")


@given(st.binary())
@example(b'{"text": "a", "label": "pass"}\n{"label": []}')
@example(b'{"text": "\\ud800", "label": "pass"}')
def test_parser_raises_only_its_error(data: bytes) -> None:
    with contextlib.suppress(LabelledSetError):
        parse_labelled(data)


def labelled_file(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"text": t, "label": label}) + b"\n"
                              for t, label in rows))
    return path


@pytest.mark.slow
def test_eval_command_on_the_wordlist_engine(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml",
                          WORDLIST_CONFIG.format(format="text", path=tmp_path / "out.jsonl"))
    rows = [("hello", "pass"), ("pizza time", "pass"), ("you idiot", "delete"),
            ("more pizza", "flag"), ("idiot", "flag"), ("get lost", "delete")]
    data = labelled_file(tmp_path / "set.jsonl", rows)
    result = run_chatmod("eval", "-c", str(config), str(data), "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = orjson.loads(result.stdout)
    assert report["confusion"] == {
        "pass": {"pass": 1, "flag": 1, "delete": 0},
        "flag": {"pass": 0, "flag": 1, "delete": 1},
        "delete": {"pass": 1, "flag": 0, "delete": 1},
    }
    assert report["scores"]["not pass"]["precision"] == pytest.approx(0.75)
    assert report["scores"]["not pass"]["recall"] == pytest.approx(0.75)
    # Wordlist verdicts score 1.0 or 0.0: the cut between them has the same figures.
    assert report["suggested"]["flag_threshold"] is None  # 0.75 < 0.85
    text = run_chatmod("eval", "-c", str(config), str(data), "--target-precision", "0.7")
    assert text.returncode == 0, text.stderr.decode()
    out = text.stdout.decode()
    assert "confusion matrix" in out
    assert "flag_threshold = 0.5  (not pass precision 0.750 >= 0.7, recall 0.750)" in out


@pytest.mark.slow
def test_eval_command_exits_2_naming_the_bad_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml",
                          WORDLIST_CONFIG.format(format="text", path=tmp_path / "out.jsonl"))
    data = tmp_path / "set.jsonl"
    data.write_bytes(b'{"text": "a", "label": "pass"}\n{"text": "b", "label": "maybe"}\n')
    result = run_chatmod("eval", "-c", str(config), str(data))
    assert result.returncode == 2
    assert b"set.jsonl: line 2: \"label\": expected one of pass, flag, delete" in result.stderr
    assert result.stdout == b""
    missing_file = run_chatmod("eval", "-c", str(config), str(tmp_path / "nope.jsonl"))
    assert missing_file.returncode == 2
    assert b"cannot read" in missing_file.stderr


@pytest.fixture
def sandbox_config(tmp_path: Path) -> Iterator[Path]:
    with SandboxProcess(tmp_path, SANDBOX_KEY, "--latency", "0:5") as sandbox:
        yield sandbox.config
    assert "chatsight sandbox: stopped; " in sandbox.stop()


@pytest.mark.slow
def test_eval_command_through_the_chatsight_sandbox(sandbox_config: Path, tmp_path: Path) -> None:
    rows = [("hello friends", "pass"), ("you stupid idiot", "delete"), ("damn it", "flag"),
            ("nice play", "pass")] * 10
    data = labelled_file(tmp_path / "set.jsonl", rows)
    result = run_chatmod("eval", "-c", str(sandbox_config), str(data), "--json",
                         env={"CHATSIGHT_API_KEY": SANDBOX_KEY})
    assert result.returncode == 0, result.stderr.decode()
    report = orjson.loads(result.stdout)
    assert report["engine"] == {"name": "chatsight", "type": "chatsight"}
    assert report["errors"] == 0
    # The sandbox's word list: "idiot" and "stupid" delete, "damn" flags.
    assert report["confusion"] == {
        "pass": {"pass": 20, "flag": 0, "delete": 0},
        "flag": {"pass": 0, "flag": 10, "delete": 0},
        "delete": {"pass": 0, "flag": 0, "delete": 10},
    }
    assert report["suggested"]["flag_threshold"]["recall"] == 1.0
    assert SANDBOX_KEY.encode() not in result.stdout + result.stderr
