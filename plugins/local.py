"""The embedded engine: alt-profanity-check's linear model on normalised text, composed with
a lexicon of what the model cannot see (threats, slurs, self-harm encouragement, sexual
harassment, scam links, hate, insults aimed at a person, spam; en, es, de, fr, pt), all
micro-batched in a worker thread.

One prediction costs milliseconds but thousands in one call cost little more, so messages are
gathered for ``batch_window`` seconds (or until ``batch_size``) and scored together in a
worker thread; the trio loop never blocks on the model. While one batch is scored the next
one gathers, so under load batches grow by themselves.

The score: the highest of the lexicon's category scores (delete-strong categories 0.95 and
more; mild insults, casual profanity and spam 0.65-0.7) and the model's profanity probability
times :data:`MODEL_WEIGHT`: profanity alone is a flag ("fuck, died again"), never a delete.
With ``rules = false`` the score is the model's probability alone (the engine before the
lexicon), on normalised text unless ``normalise = false``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from chatmod.abuse.detect import Lexicon
from chatmod.config.schema import setting
from chatmod.core.interfaces import Engine
from chatmod.core.model import DELETE, FLAG, PASS, Message, Verdict
from chatmod.errors import ConfigError, EngineError, PluginError
from chatmod.textnorm import canonical

ROUTE_LOCAL = "local"
MODEL_PACKAGE = "profanity_check"
# The model's probability is scaled into the flag range: it sees profanity, not abuse.
MODEL_WEIGHT = 0.75
SCORE_DECIMALS = 4

Predictor = Callable[[Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class LocalConfig:
    """The embedded engine (`pip install 'chatmod[local]'`), offline: a shipped lexicon of
    threats, slurs, self-harm encouragement, sexual harassment, scam links, hate, insults aimed
    at a person and spam (en, es, de, fr, pt), and alt-profanity-check's profanity model, both
    on normalised text (leetspeak, look-alikes, spacing, repeats, invisible characters undone).
    The score is the strongest match: 0.95-0.99 for clear abuse, 0.65-0.7 for casual profanity,
    mild insults and spam, 0.75 x the model's probability (profanity alone only flags)."""

    # Chosen with `chatmod eval` on bench/eval's dev split (README: the figures).
    flag_threshold: float = setting(0.6, min=0.0, max=1.0,
                                    help="score at or above which a message is flagged")
    delete_threshold: float = setting(0.85, min=0.0, max=1.0,
                                      help="score at or above which deletion is suggested")
    rules: bool = setting(True, help="add the shipped lexicon (threats, slurs, self-harm, sexual "
                                     "harassment, scams, hate, targeted insults, spam) to the "
                                     "profanity model; false: the model's probability alone")
    normalise: bool = setting(True, help="undo obfuscation (leetspeak, look-alikes, spacing, "
                                         "repeats, invisible characters) before the model scores")
    batch_size: int = setting(256, min=1, max=100_000, help="most messages predicted in one call")
    batch_window: float = setting(0.002, min=0.0, max=1.0,
                                  help="seconds to wait for more messages before predicting")

    def __post_init__(self) -> None:
        if self.delete_threshold < self.flag_threshold:
            raise ConfigError(
                f"delete_threshold: expected a number >= flag_threshold "
                f"({self.flag_threshold}), found {self.delete_threshold}"
            )


# What the model made of one text: its score and details, or why the model failed.
Scored = tuple[float, dict[str, Any]]
Outcome = Scored | str


@dataclass(slots=True, eq=False)
class _Request:
    """The texts of one call (``moderate`` or ``moderate_many``), scored in one model call or
    split across several; ``done`` is set once each text has its outcome."""

    texts: list[str]
    outcomes: list[Outcome | None]
    left: int
    done: trio.Event = field(default_factory=trio.Event)


# A batch is made of parts: texts ``start:stop`` of a request.
_Part = tuple[_Request, int, int]


def score_batch(texts: Sequence[str], predictor: Predictor, lexicon: Lexicon | None,
                normalise: bool) -> list[tuple[float, dict[str, Any]]]:
    """Each text's score and what made it (``profanity``, and ``category`` / ``matched`` when
    the lexicon matched). Pure apart from the predictor; runs in the worker thread."""
    if lexicon is None:
        model_texts = [canonical(t) if normalise else t for t in texts]
        found = [(float(p), {"profanity": round(float(p), SCORE_DECIMALS)})
                 for p in predictor(model_texts)]
        return [(round(score, SCORE_DECIMALS), details) for score, details in found]
    # A raid repeats one line many times in a batch: each distinct text is assessed once.
    assessed = {text: lexicon.assess(text) for text in dict.fromkeys(texts)}
    assessments = [assessed[t] for t in texts]
    model_texts = [a.model_text if normalise else t for a, t in zip(assessments, texts,
                                                                     strict=True)]
    # A line that is only harmless phrases ("sick play!") has nothing left for the model, and
    # obfuscated variants of one line ("fuuuck you", "f u c k you") leave the same text: the
    # model scores each distinct text once (a row's probability depends on that row only).
    asked = list(dict.fromkeys(t for t in model_texts if any(c.isalnum() for c in t)))
    scored_texts = dict(zip(asked, predictor(asked), strict=True)) if asked else {}
    probabilities = [float(scored_texts.get(t, 0.0)) for t in model_texts]
    scored = []
    for assessment, probability in zip(assessments, probabilities, strict=True):
        details: dict[str, Any] = {"profanity": round(probability, SCORE_DECIMALS)}
        if assessment.category is not None:
            details["category"] = assessment.category
            details["matched"] = assessment.matched
        score = max(assessment.score, MODEL_WEIGHT * probability)
        scored.append((round(score, SCORE_DECIMALS), details))
    return scored


# Lines the fast path is checked on against the library's own predict_prob when it loads.
PREDICTOR_CHECK_LINES = ("hello friends", "you are a fucking idiot", "that boss killed me",
                         "shit", "what a great stream tonight", "")
PREDICTOR_TOLERANCE = 1e-9


def load_predictor() -> Predictor:
    """alt-profanity-check's probability. Its ``predict_prob`` costs ~10 ms even for one line
    (scikit-learn's checks, once per calibration fold); the model is linear folds with sigmoid
    calibration, so the same numbers come from one sparse product. That fast path is used
    when it reproduces ``predict_prob`` on :data:`PREDICTOR_CHECK_LINES`, else the library's."""
    from profanity_check import predict_prob

    def library(texts: Sequence[str]) -> Sequence[float]:
        return [float(p) for p in predict_prob(list(texts))]

    fast = _linear_predictor()
    if fast is not None:
        expected, found = library(PREDICTOR_CHECK_LINES), fast(PREDICTOR_CHECK_LINES)
        if all(abs(e - f) <= PREDICTOR_TOLERANCE for e, f in zip(expected, found, strict=True)):
            return fast
    return library


def _linear_predictor() -> Predictor | None:
    """The calibrated linear model as one product, or None when the model is not shaped so."""
    try:
        import numpy as np
        from profanity_check import profanity_check as library

        model: Any = library.model
        vectorizer: Any = library.vectorizer
        folds = model.calibrated_classifiers_
        if model.method != "sigmoid" or list(model.classes_) != [0, 1]:
            return None
        weights = np.vstack([f.estimator.coef_[0] for f in folds]).T
        intercepts = np.array([f.estimator.intercept_[0] for f in folds])
        slopes = np.array([f.calibrators[0].a_ for f in folds])
        offsets = np.array([f.calibrators[0].b_ for f in folds])
    except (ImportError, AttributeError, IndexError, TypeError, ValueError):
        return None

    def predict(texts: Sequence[str]) -> Sequence[float]:
        margins = vectorizer.transform(list(texts)) @ weights + intercepts
        # scikit-learn's sigmoid calibration, expit(-(a * margin + b)), averaged over folds.
        probabilities = (1.0 / (1.0 + np.exp(slopes * margins + offsets))).mean(axis=1)
        return [float(p) for p in probabilities]

    return predict


class LocalEngine(Engine[LocalConfig]):
    """Score (lexicon and profanity model) -> ``pass`` / ``flag`` / ``delete`` by the
    configured thresholds."""

    Config = LocalConfig
    verdict_routes = (ROUTE_LOCAL,)

    @classmethod
    def check_available(cls) -> None:
        if importlib.util.find_spec(MODEL_PACKAGE) is None:
            raise PluginError(
                "the local engine needs its model: pip install 'chatmod[local]' "
                "(alt-profanity-check)"
            )

    def __init__(self, name: str, config: LocalConfig, predictor: Predictor | None = None) -> None:
        super().__init__(name, config)
        self._predictor = predictor
        self._lexicon: Lexicon | None = None
        self._send, self._receive = trio.open_memory_channel[_Request](config.batch_size * 4)
        self._receive_closed = False  # by a run that ended (see :meth:`run`)
        # The rest of a request larger than the batch's room: first in the next batch.
        self._carried: _Part | None = None
        # The batch being gathered or scored: held until each of its texts has its outcome.
        self._gathering: list[_Part] = []
        self.batches = 0
        self.predicted = 0
        self.largest_batch = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._receive_closed:
            # An earlier run ended (it failed, and the supervisor starts it again). It closed
            # its channel, so that requests made meanwhile failed rather than waited on an
            # engine that was not running; this run takes them on a fresh one.
            self._send, self._receive = trio.open_memory_channel[_Request](
                self.config.batch_size * 4)
            self._receive_closed = False
        async with self._receive:
            try:
                if self._predictor is None:
                    # The import loads scikit-learn and the model: do it once, off the loop.
                    self._predictor = await trio.to_thread.run_sync(load_predictor)
                self._lexicon = await trio.to_thread.run_sync(Lexicon.shipped)
                task_status.started()
                while True:
                    await self._predict_batch(await self._gather_batch())
            finally:
                # Stopped (a reload retires it) or failed: what it holds fails now, to the
                # fallback, rather than when the chain's timeout runs out; the channel closes
                # (requests made from now on fail) until a run starts again.
                self._fail_held("the local engine stopped")
                self._receive_closed = True

    async def _gather_batch(self) -> list[_Part]:
        """Texts of the waiting requests, up to ``batch_size``: a larger request is split (its
        rest carried to the next batch), smaller ones arriving within ``batch_window`` join."""
        parts: list[_Part] = []
        self._gathering = parts
        room = self.config.batch_size
        carried, self._carried = self._carried, None
        request, start = carried[:2] if carried is not None else (
            await self._receive.receive(), 0)
        room = self._take(parts, request, start, room)
        with trio.move_on_after(self.config.batch_window):
            while room > 0:
                room = self._take(parts, await self._receive.receive(), 0, room)
        return parts  # still held (``_gathering``) until :meth:`_predict_batch` settles it

    def _take(self, parts: list[_Part], request: _Request, start: int, room: int) -> int:
        """Add ``request``'s texts from ``start`` to ``parts``, at most ``room`` of them (the
        rest is carried); the room left."""
        stop = min(len(request.texts), start + room)
        parts.append((request, start, stop))
        if stop < len(request.texts):
            self._carried = (request, stop, len(request.texts))
        return room - (stop - start)

    async def _predict_batch(self, parts: list[_Part]) -> None:
        predictor = self._predictor
        assert predictor is not None
        config = self.config  # one batch, one config, even across a reload
        lexicon = self._lexicon if config.rules else None
        texts = [text for request, start, stop in parts for text in request.texts[start:stop]]
        outcomes: Sequence[Outcome]
        try:
            outcomes = await trio.to_thread.run_sync(
                score_batch, texts, predictor, lexicon, config.normalise)
            if len(outcomes) != len(texts):
                raise RuntimeError(f"{len(outcomes)} scores for {len(texts)} texts")
        except Exception as exc:  # the model failing is an engine failure, not a crash
            outcomes = [_describe_failure(exc)] * len(texts)
        position = 0
        for request, start, stop in parts:
            end = position + stop - start
            _settle(request, start, stop, outcomes[position:end])
            position = end
        # Settled: no longer held. Until here a stop (cancelled waiting for a worker thread,
        # before the model call began) fails the batch's texts (:meth:`_fail_held`).
        self._gathering = []
        self.batches += 1
        self.predicted += len(texts)
        self.largest_batch = max(self.largest_batch, len(texts))

    def _fail_held(self, error: str) -> None:
        """Every text not scored yet (gathered, carried or queued) fails with ``error``; a
        part of the batch that was already settled (the run failed while it settled the
        batch) keeps its outcomes: one answer per text."""
        held = [part for part in self._gathering if part[0].outcomes[part[1]] is None]
        if self._carried is not None:
            held.append(self._carried)
        self._gathering, self._carried = [], None
        while True:
            try:
                request = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                break
            held.append((request, 0, len(request.texts)))
        for request, start, stop in held:
            _settle(request, start, stop, [error] * (stop - start))

    def reconfigure(self, config: LocalConfig) -> bool:
        # Thresholds and batching apply to the next batch; the loaded model stays.
        self.config = config
        return True

    async def _score(self, texts: list[str]) -> list[Outcome | None]:
        """Each text's outcome, scored with the texts of concurrent calls."""
        request = _Request(texts, [None] * len(texts), len(texts))
        try:
            await self._send.send(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise EngineError("the local engine is not running") from None
        await request.done.wait()
        return request.outcomes

    async def moderate(self, message: Message) -> Verdict:
        outcome = (await self._score([message.text]))[0]
        if isinstance(outcome, tuple):
            return self.verdict_for(*outcome)
        raise EngineError(f"local model failed: {outcome}")

    async def moderate_many(self, messages: Sequence[Message]) -> list[Verdict | Exception]:
        # One request for the list (no waiting task or event per message): as primary the
        # pipeline hands it each intake batch in one call.
        if not messages:
            return []
        verdict_for = self.verdict_for
        return [verdict_for(*outcome) if isinstance(outcome, tuple)
                else EngineError(f"local model failed: {outcome}")
                for outcome in await self._score([message.text for message in messages])]

    def verdict_for(self, score: float, details: dict[str, Any] | None = None) -> Verdict:
        """``delete`` / ``flag`` / ``pass`` for a score, by the configured thresholds."""
        if score >= self.config.delete_threshold:
            action = DELETE
        elif score >= self.config.flag_threshold:
            action = FLAG
        else:
            action = PASS
        return Verdict(action, score, self.name, ROUTE_LOCAL,
                       details if details is not None else {"profanity": score})

    def rejudge(self, recorded: Verdict) -> Verdict | None:
        # The recorded probability under the thresholds configured now.
        if recorded.score is None:
            return None
        return self.verdict_for(recorded.score)

    def statistics(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "predicted": self.predicted,
            "largest_batch": self.largest_batch,
        }


def _describe_failure(exc: Exception) -> str:
    """``Type: text`` of the model's error; its type alone when its text cannot be had (an
    error whose ``__str__`` fails must not end the engine's run)."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__


def _settle(request: _Request, start: int, stop: int, outcomes: Sequence[Outcome]) -> None:
    """Texts ``start:stop`` of ``request`` have their outcomes; the caller is woken once all
    its texts have."""
    request.outcomes[start:stop] = outcomes
    request.left -= stop - start
    if request.left == 0:
        request.done.set()
