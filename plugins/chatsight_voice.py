"""The ``chatsight_voice`` source: Chatsight voice jobs, each sentence a message.

For each configured job it submits the stream or file (``POST /stream/moderate``) with a fresh
random 32-byte author key, kept in ``STATE_DIR/voice/CONVOID.key`` (mode 0600) because the
provider cannot decrypt the results without it. It then polls ``POST /stream/CONVOID`` every
``poll_interval`` seconds and hands each sentence on, in order, as soon as it has its result:
the message carries the speaker (as author), the offset into the conversation (as timestamp)
and the verdict Chatsight computed, so no engine is asked again. A sentence Chatsight gave no
readable result for goes through the engine chain like any other message.

A job ends when its results are complete (``CONVOID.done`` is then written, so a restart does
not repeat it); the source ends when every job has. A restart mid-job reuses the kept key and
hands on the job's sentences from the start again (at least once, never lost).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

import trio

from chatmod.chatsight.account import AccountClient
from chatmod.chatsight.voice import AUTHOR_KEY_BYTES, Sentence, convo_id_problem, state_file_name
from chatmod.config.schema import Secret, setting
from chatmod.config.state import state_directory, write_private
from chatmod.core.backoff import Backoff
from chatmod.core.interfaces import Intake, Source
from chatmod.core.model import Message, Verdict
from chatmod.errors import AccountAuthError, AccountError, ConfigError, PluginError

DEFAULT_HTTP_URL = "https://api.chatsight.ai"
ROUTE_VOICE = "voice"


@dataclass(frozen=True)
class VoiceJobConfig:
    """One voice conversation."""

    url: str = setting("", nonempty=True, help="the live stream or file to moderate")
    convo_id: str = setting("", nonempty=True, help="the conversation's id: at least 10 "
                                                    "characters, any but control characters; "
                                                    "unique")
    long_running: bool = setting(True, help="true for a static file, false for a live stream")

    def __post_init__(self) -> None:
        problem = convo_id_problem(self.convo_id)
        if problem is not None:
            raise ConfigError(f"convo_id: {problem}, found {self.convo_id!r}")


@dataclass(frozen=True)
class VoiceConfig:
    """Chatsight voice jobs ([voice](#keyword-alerts-statistics-and-voice)): each job's sentences
    become messages with Chatsight's own verdict."""

    api_key: Secret = setting(help="the Chatsight API key")
    http_url: str = setting(DEFAULT_HTTP_URL, nonempty=True, help="Chatsight's HTTP API")
    state_dir: str = setting("", help="where author keys are kept (default: [daemon] "
                                      "state_dir, else $STATE_DIRECTORY, set by systemd)")
    jobs: tuple[VoiceJobConfig, ...] = setting(
        (), help="the conversations to moderate: at least one [[sources.jobs]] table")
    poll_interval: float = setting(10.0, min=0.01, help="seconds between result fetches")
    request_timeout: float = setting(30.0, min=0.01, help="seconds per request")

    def __post_init__(self) -> None:
        if not self.jobs:
            raise ConfigError("jobs: expected at least one [[sources.jobs]] table "
                              "(url, convo_id)")
        seen = [job.convo_id for job in self.jobs]
        if len(set(seen)) != len(seen):
            raise ConfigError("jobs: a convo_id is used twice")


class VoiceSource(Source[VoiceConfig]):
    Config = VoiceConfig

    def __init__(self, name: str, config: VoiceConfig) -> None:
        super().__init__(name, config)
        self.sentences = 0
        self.moderated_by_chatsight = 0
        self.fetch_errors = 0
        self.jobs_done = 0

    def statistics(self) -> dict[str, float]:
        return {"sentences": self.sentences, "chatsight_verdicts": self.moderated_by_chatsight,
                "fetch_errors": self.fetch_errors, "jobs_done": self.jobs_done}

    async def run(
        self, intake: Intake, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        state = state_directory(self.config.state_dir)
        if state is None:
            raise PluginError(f"source {self.name}: state_dir is needed to keep the author "
                              "keys (without them the results are lost)")
        keys = state / "voice"
        try:
            keys.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise PluginError(f"source {self.name}: cannot create {keys}: {exc.strerror}"
                              ) from None
        async with AccountClient(self.config.http_url, self.config.api_key.reveal(),
                                 timeout=self.config.request_timeout) as client:
            task_status.started()
            async with trio.open_nursery() as nursery:
                for job in self.config.jobs:
                    nursery.start_soon(self._run_job, client, intake, job, keys)

    async def _run_job(self, client: AccountClient, intake: Intake, job: VoiceJobConfig,
                       keys: Path) -> None:
        name = state_file_name(job.convo_id)
        key_file, done_file = keys / f"{name}.key", keys / f"{name}.done"
        if done_file.exists():
            self.log.info("voice job %s was completed before; skipped", job.convo_id)
            self.jobs_done += 1
            return
        if key_file.exists():
            author_key = key_file.read_text().strip()
            self.log.info("voice job %s: resuming with its kept author key", job.convo_id)
        else:
            author_key = base64.b64encode(os.urandom(AUTHOR_KEY_BYTES)).decode()
            write_private(key_file, author_key)  # before submitting: never a key we lost
            if not await self._submit(client, job, author_key):
                key_file.unlink(missing_ok=True)
                return
        handed_on = 0
        backoff = Backoff(self.config.poll_interval, max(60.0, self.config.poll_interval))
        while True:
            try:
                transcript = await client.fetch_voice(job.convo_id, author_key)
            except AccountError as exc:
                self.fetch_errors += 1
                if _final(exc):
                    self.log.error("voice job %s stopped: %s", job.convo_id, exc)
                    return
                self.log.warning("voice job %s: %s; retrying", job.convo_id, exc)
                await trio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            for sentence in transcript.sentences[handed_on:]:
                if sentence.result is None and sentence.error is None:
                    break  # its result is not in yet; keep the order
                await intake.submit(self._message(job.convo_id, sentence))
                handed_on += 1
            if transcript.complete and handed_on == len(transcript.sentences):
                done_file.write_text(f"{handed_on} sentences\n")
                self.jobs_done += 1
                self.log.info("voice job %s complete: %d sentences", job.convo_id, handed_on)
                return
            await trio.sleep(self.config.poll_interval)

    async def _submit(self, client: AccountClient, job: VoiceJobConfig, author_key: str
                      ) -> bool:
        backoff = Backoff(self.config.poll_interval, max(60.0, self.config.poll_interval))
        while True:
            try:
                await client.submit_voice(job.url, author_key, job.convo_id,
                                          long_running=job.long_running)
                self.log.info("voice job %s submitted", job.convo_id)
                return True
            except AccountError as exc:
                if _final(exc):
                    self.log.error("voice job %s not submitted: %s", job.convo_id, exc)
                    return False
                self.log.warning("voice job %s: %s; retrying", job.convo_id, exc)
                await trio.sleep(backoff.next_delay())

    def _message(self, convo_id: str, sentence: Sentence) -> Message:
        self.sentences += 1
        verdict = None
        if sentence.result is not None:
            self.moderated_by_chatsight += 1
            result = sentence.result
            verdict = Verdict(result.action, result.score, "chatsight", ROUTE_VOICE,
                              result.scores)
        speaker = f"speaker {sentence.speaker}" if sentence.speaker is not None else None
        return Message(
            id=f"{convo_id}:{sentence.order}", text=sentence.text, source=self.name,
            author=speaker, channel=convo_id, timestamp=sentence.offset, verdict=verdict,
            metadata={"convo_id": convo_id, "offset": sentence.offset,
                      "speaker": sentence.speaker},
        )


def _final(error: AccountError) -> bool:
    """A refusal that retrying will not change: the key, the author key, an unknown or
    duplicate conversation (4xx other than 429)."""
    return isinstance(error, AccountAuthError) or (
        error.status is not None and 400 <= error.status < 500 and error.status != 429)
