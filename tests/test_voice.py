"""Voice: the transcript reply (the document's malformed sample included), the
``chatsight_voice`` source against the sandbox, and ``chatmod voice fetch``."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest
import trio

from chatmod.chatsight.protocol import AUTH_HEADER
from chatmod.chatsight.voice import (
    fetch_path,
    parse_transcript,
    repair_speakers,
    state_file_name,
    supply_commas,
)
from chatmod.config.load import parse_config
from chatmod.config.registry import Registry
from chatmod.config.schema import Secret
from chatmod.core.model import Message
from chatmod.errors import ConfigError
from chatmod.plugins.chatsight_voice import VoiceConfig, VoiceJobConfig, VoiceSource
from chatmod.sandbox.account import VoiceJob
from chatmod.sandbox.server import Sandbox

from .helpers import decision_lines, eventually, run_chatmod
from .servers import SandboxProcess

DATA = Path(__file__).parent / "data"
KEY = "voice-test-key-0123456789"
CONVO = "weekly-show-0001"


def test_the_documents_own_sample_is_read() -> None:
    raw = (DATA / "voice_reply_document.txt").read_bytes()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)  # as published: not JSON
    transcript = parse_transcript(raw)
    assert transcript.ready
    assert [(s.offset, s.speaker) for s in transcript.sentences] == [
        ("00:00:33", "0"), ("00:00:46", "0"), ("00:00:54", "1")]
    first = transcript.sentences[0]
    assert first.result is not None
    assert (first.result.action, first.result.score) == ("pass", pytest.approx(1.6247, 1e-4))
    # The sample shows one result (the rest elided): the others are not in yet.
    assert [s.result is None for s in transcript.sentences] == [False, True, True]
    assert not transcript.complete


def test_speakers_as_object_list_or_the_documents_form() -> None:
    lines = [["00:00:01", "one"], ["00:00:02", "two"]]
    result = {"voiceSTT": "one", "messageOrder": 1, "success": True,
              "response": {"success": True, "response": {"suggestedAction": ["flag", 0.7]}}}
    result_two = {**result, "voiceSTT": "two", "messageOrder": 2,
                  "response": {"response": {"suggestedAction": ["pass", 0.1]}}}
    for speakers, expected in [({"0": [lines[0]], "7": [lines[1]]}, ["0", "7"]),
                               ([[lines[0]], [lines[1]]], ["0", "1"]),
                               ("garbage", [None, None])]:
        reply = orjson.dumps([True, {"transcript": {"master": lines, "speakers": speakers},
                                     "moderationResults": [result_two, result]}, None])
        transcript = parse_transcript(reply)
        assert [s.speaker for s in transcript.sentences] == expected
        assert [s.result.action for s in transcript.sentences if s.result] == ["flag", "pass"]
        assert transcript.complete
    assert repair_speakers(b'{"speakers": ["0": [1], "1": [2]]}') == \
        b'{"speakers": {"0": [1], "1": [2]}}'
    assert repair_speakers(b'{"speakers": [[1], [2]]}') == b'{"speakers": [[1], [2]]}'
    assert supply_commas(b'[{"a": "} {"}\n null]') == b'[{"a": "} {"}\n ,null]'


def test_not_ready_and_broken_replies() -> None:
    waiting = parse_transcript(b'[false, null, "Conversation is still being processed."]')
    assert (waiting.ready, waiting.detail) == (False, "Conversation is still being processed.")
    assert not parse_transcript(b'{"success": false, "response": "nope"}').ready
    for broken in (b"not json", b"[]", b"[true, 5]", b'"text"'):
        with pytest.raises(ValueError, match=r"reply|transcript"):
            parse_transcript(broken)


class Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def submit(self, message: Message) -> None:
        self.messages.append(message)

    def report_invalid(self, source: str, reason: str) -> None:
        raise AssertionError(reason)


def voice_source(sandbox: Sandbox, state: Path, *jobs: VoiceJobConfig) -> VoiceSource:
    config = VoiceConfig(api_key=Secret("test", KEY), http_url=sandbox.http_url(),
                         state_dir=str(state), jobs=jobs, poll_interval=0.02)
    return VoiceSource("voice", config)


@pytest.mark.parametrize("speakers", ["document", "object", "list"])
async def test_source_emits_each_sentence_with_chatsights_verdict(
        tmp_path: Path, nursery: trio.Nursery, speakers: str) -> None:
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    sandbox.account.voice_speakers = speakers  # type: ignore[assignment]
    url = "https://streams.example/show.mp3"
    sandbox.account.voice_scripts[url] = (
        ("0", "00:00:01", "welcome to the show"), ("1", "00:00:04", "you are an idiot"),
        ("0", "00:00:09", "well that was rude"))
    await nursery.start(sandbox.serve)
    intake = Collect()
    source = voice_source(sandbox, tmp_path, VoiceJobConfig(url=url, convo_id=CONVO))
    with trio.fail_after(10):
        await source.run(intake)  # returns once the job is complete
    got = [(m.id, m.author, m.timestamp, m.text, m.verdict.action if m.verdict else None,
            m.verdict.route if m.verdict else None) for m in intake.messages]
    assert got == [
        (f"{CONVO}:1", "speaker 0", "00:00:01", "welcome to the show", "pass", "voice"),
        (f"{CONVO}:2", "speaker 1", "00:00:04", "you are an idiot", "delete", "voice"),
        (f"{CONVO}:3", "speaker 0", "00:00:09", "well that was rude", "pass", "voice"),
    ]
    assert {m.channel for m in intake.messages} == {CONVO}
    # "Still processing", then half, then all: three fetches, and no moderation call.
    assert sandbox.stats["voice_fetches"] == 3
    assert sandbox.stats["ws_requests"] + sandbox.stats["http_moderated"] == 0
    key_file = tmp_path / "voice" / f"{CONVO}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sandbox.account.voice_jobs[CONVO].author_key == key_file.read_text()
    # A restart does not repeat a completed job.
    again = Collect()
    await voice_source(sandbox, tmp_path, VoiceJobConfig(url=url, convo_id=CONVO)).run(again)
    assert again.messages == []
    assert sandbox.stats["voice_jobs"] == 1


async def test_a_restart_mid_job_keeps_its_author_key(tmp_path: Path,
                                                      nursery: trio.Nursery) -> None:
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    sandbox.account.voice_fetches_until_done = 100
    await nursery.start(sandbox.serve)
    job = VoiceJobConfig(url="https://streams.example/live", convo_id=CONVO,
                         long_running=False)
    first = voice_source(sandbox, tmp_path, job)
    async with trio.open_nursery() as running:
        running.start_soon(first.run, Collect())
        # Stopped once the job is submitted and fetched, before its results are complete.
        await eventually(lambda: CONVO in sandbox.account.voice_jobs
                         and sandbox.account.voice_jobs[CONVO].fetches >= 1)
        running.cancel_scope.cancel()
    sandbox.account.voice_fetches_until_done = sandbox.account.voice_jobs[CONVO].fetches + 1
    resumed = Collect()
    with trio.fail_after(10):
        await voice_source(sandbox, tmp_path, job).run(resumed)
    assert sandbox.stats["voice_jobs"] == 1  # not submitted twice: the kept key still reads
    assert len(resumed.messages) == 3
    assert sandbox.account.voice_jobs[CONVO].long_running is False


async def test_a_refused_submission_ends_the_job_without_a_key(
        tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    await nursery.start(sandbox.serve)
    # The conversation id is taken already: the sandbox answers 409.
    sandbox.account.voice_jobs[CONVO] = VoiceJob(CONVO, "u", "k", True, (), 0)
    intake = Collect()
    with trio.fail_after(10):
        await voice_source(sandbox, tmp_path,
                           VoiceJobConfig(url="https://x.example/a", convo_id=CONVO)).run(intake)
    assert intake.messages == []
    assert not (tmp_path / "voice" / f"{CONVO}.key").exists()
    assert "HTTP 409" in caplog.text
    assert KEY not in caplog.text


def test_any_conversation_id_is_one_url_segment_and_one_file_name() -> None:
    assert fetch_path("pizzaChatRoom") == "/stream/pizzaChatRoom"
    assert fetch_path("rooms/42 #5?x=ü") == "/stream/rooms%2F42%20%235%3Fx%3D%C3%BC"
    # Ids that were accepted before keep their file names, so kept keys are still found.
    assert state_file_name(CONVO) == CONVO
    assert state_file_name("..........") == ".........."
    for convo_id in ("rooms/../../etc/passwd", "x" * 300, "Pizza Chat Room #5"):
        name = state_file_name(convo_id)
        assert name.startswith("convo+")
        assert len(name) < 100
        assert "/" not in name
    assert state_file_name("rooms/a") != state_file_name("rooms/b")


async def test_a_job_whose_id_has_spaces_slashes_and_emoji(tmp_path: Path,
                                                           nursery: trio.Nursery) -> None:
    convo_id = "Pizza Chat Room #5 / 2026 🍕"
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    await nursery.start(sandbox.serve)
    intake = Collect()
    job = VoiceJobConfig(url="https://streams.example/pizza.mp3", convo_id=convo_id)
    with trio.fail_after(10):
        await voice_source(sandbox, tmp_path, job).run(intake)
    assert [m.text for m in intake.messages] == [
        "Hey guys, we're here to talk about eating pizza.",
        "Sometimes its fun to eat some pizza with friends!", "You're right dude I love pizza!"]
    assert {m.channel for m in intake.messages} == {convo_id}
    assert list(sandbox.account.voice_jobs) == [convo_id]  # the provider saw the id as is
    kept = sorted(path.name for path in (tmp_path / "voice").iterdir())
    name = state_file_name(convo_id)
    assert kept == [f"{name}.done", f"{name}.key"]
    assert sandbox.account.voice_jobs[convo_id].author_key == (
        tmp_path / "voice" / f"{name}.key").read_text()


def test_voice_config_is_validated() -> None:
    registry = Registry.from_entry_points()
    base = {"engine": {"primary": "wordlist"}, "sinks": [{"type": "log"}]}

    def source(**options: object) -> dict[str, object]:
        return {**base, "sources": [{"type": "chatsight_voice", "api_key_env": "PATH",
                                     **options}]}

    with pytest.raises(ConfigError, match=r"sources\[0\].jobs: expected at least one"):
        parse_config(source(), registry)
    with pytest.raises(ConfigError, match=r"convo_id: expected at least 10 characters"):
        parse_config(source(jobs=[{"url": "u", "convo_id": "short"}]), registry)
    with pytest.raises(ConfigError, match=r"convo_id: expected no control characters"):
        parse_config(source(jobs=[{"url": "u", "convo_id": "weekly\nshow-0001"}]), registry)
    # The document asks only for 10 characters: none of these is refused any more.
    for convo_id in ("Pizza Chat Room #5", "rooms/42:general?x", "Café-de-la-Paix 🍕",
                     "x" * 300, "..........", CONVO):
        parse_config(source(jobs=[{"url": "u", "convo_id": convo_id}]), registry)
    with pytest.raises(ConfigError, match="convo_id is used twice"):
        parse_config(source(jobs=[{"url": "u", "convo_id": CONVO}] * 2), registry)


@pytest.mark.slow
def test_voice_decisions_through_the_daemon_and_voice_fetch(tmp_path: Path) -> None:
    with SandboxProcess(tmp_path, KEY) as sandbox:
        config = tmp_path / "voice.toml"
        config.write_text(f"""
[daemon]
state_dir = "{tmp_path / 'state'}"
[engine]
primary = "local"
[[sources]]
type = "chatsight_voice"
api_key_env = "CHATSIGHT_API_KEY"
http_url = "{sandbox.http_url}"
poll_interval = 0.05
[[sources.jobs]]
url = "https://streams.example/pizza.mp3"
convo_id = "{CONVO}"
[[sinks]]
type = "jsonl"
path = "-"
""")
        env = {"CHATSIGHT_API_KEY": KEY}
        result = run_chatmod("run", "-c", str(config), env=env)
        assert result.returncode == 0, result.stderr.decode()
        # Decided concurrently, so in any order; their ids keep the conversation's.
        decisions = sorted(decision_lines(result.stdout), key=lambda d: str(d["id"]))
        assert [d["id"] for d in decisions] == [f"{CONVO}:{n}" for n in (1, 2, 3)]
        assert [(d["author"], d["timestamp"], d["engine"], d["route"], d["verdict"])
                for d in decisions] == [
            ("speaker 0", "00:00:33", "chatsight", "voice", "pass"),
            ("speaker 0", "00:00:46", "chatsight", "voice", "pass"),
            ("speaker 1", "00:00:54", "chatsight", "voice", "pass"),
        ]
        assert decisions[2]["text"] == "You're right dude I love pizza!"
        fetched = run_chatmod("voice", "fetch", "-c", str(sandbox.config), CONVO,
                              "--state-dir", str(tmp_path / "state"), env=env)
        assert fetched.returncode == 0, fetched.stderr.decode()
        lines = fetched.stdout.decode().splitlines()
        assert len(lines) == 3
        assert lines[2].split()[:5] == ["00:00:54", "speaker", "1", "pass", "0.02"]
        as_json = run_chatmod("voice", "fetch", "-c", str(sandbox.config), CONVO, "--json",
                              "--author-key-file",
                              str(tmp_path / "state" / "voice" / f"{CONVO}.key"), env=env)
        assert [orjson.loads(line)["speaker"] for line in as_json.stdout.splitlines()] == \
            ["0", "0", "1"]
        unknown = run_chatmod("voice", "fetch", "-c", str(sandbox.config), "no-such-convo",
                              "--author-key-file",
                              str(tmp_path / "state" / "voice" / f"{CONVO}.key"), env=env)
        assert unknown.returncode == 1
        assert "HTTP 404" in unknown.stderr.decode()
    assert KEY.encode() not in result.stderr + result.stdout + fetched.stdout


async def test_sandbox_voice_routes_need_the_voice_header(nursery: trio.Nursery) -> None:
    import httpx

    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    await nursery.start(sandbox.serve)
    async with httpx.AsyncClient(base_url=sandbox.http_url(),
                                 headers={AUTH_HEADER: KEY}) as client:
        missing = await client.post("/stream/moderate", content=b"{}")
        assert missing.status_code == 400
        assert "x-chatsight-api" in missing.text


async def test_a_wrong_author_key_stops_the_job(
        tmp_path: Path, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    sandbox = Sandbox(api_key=KEY, verdicts="wordlist")
    await nursery.start(sandbox.serve)
    sandbox.account.voice_jobs[CONVO] = VoiceJob(CONVO, "u", "the-real-key", True, (), 0)
    (tmp_path / "voice").mkdir()
    (tmp_path / "voice" / f"{CONVO}.key").write_text("a-key-from-elsewhere")
    intake = Collect()
    source = voice_source(sandbox, tmp_path, VoiceJobConfig(url="u", convo_id=CONVO))
    with trio.fail_after(10):
        await source.run(intake)  # returns: the job cannot go on, and is not retried forever
    assert intake.messages == []
    assert "HTTP 403" in caplog.text
    assert source.statistics()["fetch_errors"] == 1
    assert not (tmp_path / "voice" / f"{CONVO}.done").exists()
