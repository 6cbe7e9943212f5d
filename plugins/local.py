"""The embedded engine: alt-profanity-check's linear model, micro-batched in a worker thread.

One prediction costs milliseconds but thousands in one call cost little more, so messages are
gathered for ``batch_window`` seconds (or until ``batch_size``) and predicted together in a
worker thread; the trio loop never blocks on the model. While one batch is predicted the next
one gathers, so under load batches grow by themselves.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from chatmod.config.schema import setting
from chatmod.core.interfaces import Engine
from chatmod.core.model import DELETE, FLAG, PASS, Message, Verdict
from chatmod.errors import ConfigError, EngineError, PluginError

ROUTE_LOCAL = "local"
MODEL_PACKAGE = "profanity_check"

Predictor = Callable[[Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class LocalConfig:
    """The embedded model (`pip install 'chatmod[local]'`, alt-profanity-check): a profanity
    probability, no network."""

    flag_threshold: float = setting(0.5, min=0.0, max=1.0,
                                    help="probability at or above which a message is flagged")
    delete_threshold: float = setting(0.9, min=0.0, max=1.0,
                                      help="probability at or above which deletion is suggested")
    batch_size: int = setting(256, min=1, max=100_000, help="most messages predicted in one call")
    batch_window: float = setting(0.002, min=0.0, max=1.0,
                                  help="seconds to wait for more messages before predicting")

    def __post_init__(self) -> None:
        if self.delete_threshold < self.flag_threshold:
            raise ConfigError(
                f"delete_threshold: expected a number >= flag_threshold "
                f"({self.flag_threshold}), found {self.delete_threshold}"
            )


@dataclass(slots=True)
class _Pending:
    text: str
    done: trio.Event = field(default_factory=trio.Event)
    probability: float = math.nan
    error: str | None = None


def load_predictor() -> Predictor:
    from profanity_check import predict_prob

    def predict(texts: Sequence[str]) -> Sequence[float]:
        return [float(p) for p in predict_prob(list(texts))]

    return predict


class LocalEngine(Engine[LocalConfig]):
    """Profanity probability -> ``pass`` / ``flag`` / ``delete`` by the configured thresholds."""

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
        self._send, self._receive = trio.open_memory_channel[_Pending](config.batch_size * 4)
        self.batches = 0
        self.predicted = 0
        self.largest_batch = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._predictor is None:
            # The import loads scikit-learn and the model: do it once, off the event loop.
            self._predictor = await trio.to_thread.run_sync(load_predictor)
        task_status.started()
        async with self._receive:
            while True:
                await self._predict_batch(await self._gather_batch())

    async def _gather_batch(self) -> list[_Pending]:
        batch = [await self._receive.receive()]
        size = self.config.batch_size
        with trio.move_on_after(self.config.batch_window):
            while len(batch) < size:
                batch.append(await self._receive.receive())
        return batch

    async def _predict_batch(self, batch: list[_Pending]) -> None:
        predictor = self._predictor
        assert predictor is not None
        try:
            probabilities = await trio.to_thread.run_sync(predictor, [p.text for p in batch])
            for pending, probability in zip(batch, probabilities, strict=True):
                pending.probability = probability
        except Exception as exc:  # the model failing is an engine failure, not a crash
            for pending in batch:
                pending.error = f"{type(exc).__name__}: {exc}"
        finally:
            for pending in batch:
                pending.done.set()
        self.batches += 1
        self.predicted += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))

    def reconfigure(self, config: LocalConfig) -> bool:
        # Thresholds and batching apply to the next batch; the loaded model stays.
        self.config = config
        return True

    async def moderate(self, message: Message) -> Verdict:
        pending = _Pending(message.text)
        await self._send.send(pending)
        await pending.done.wait()
        if pending.error is not None:
            raise EngineError(f"local model failed: {pending.error}")
        return self.verdict_for(pending.probability)

    def verdict_for(self, probability: float) -> Verdict:
        if probability >= self.config.delete_threshold:
            action = DELETE
        elif probability >= self.config.flag_threshold:
            action = FLAG
        else:
            action = PASS
        score = round(probability, 4)
        return Verdict(action, score, self.name, ROUTE_LOCAL, {"profanity": score})

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
