"""The embedded engine before and after the lexicon, measured in one run.

    .venv/bin/python bench/local_engine.py [--messages 20000] [--calls 500] [--repeat 3]

Engines (the same LocalEngine class, micro-batching in a worker thread):
- before: ``rules = false, normalise = false`` with the library's own ``predict_prob`` on the
  raw text: the engine as it was (the same calls per batch);
- model only: the same with the fast predictor (one sparse product, the same numbers);
- model + normalisation: ``rules = false``;
- composed (the default): normalisation, the lexicon, and the model.

Figures per engine:
- single call: one message at a time (nothing else waiting), ``moderate()`` from call to
  verdict, p50 and p99 over ``--calls`` calls; this includes the ``batch_window`` wait;
- scoring alone: the worker thread's part for one message (no batching window), p50;
- batched: messages per second with 256 concurrent callers (best of ``--repeat``).

Texts are the lines of bench/eval/chat-labelled.jsonl, cycled (short chat lines, a third
abusive): the lexicon's cost depends on what it reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import trio

from chatmod.abuse.detect import Lexicon
from chatmod.core.model import Message
from chatmod.plugins.local import (
    LocalConfig,
    LocalEngine,
    Predictor,
    load_predictor,
    score_batch,
)

LABELLED = Path(__file__).resolve().parent / "eval" / "chat-labelled.jsonl"
CALLERS = 256
ENGINES = {
    "before (predict_prob)": LocalConfig(rules=False, normalise=False),
    "model only": LocalConfig(rules=False, normalise=False),
    "model + normalisation": LocalConfig(rules=False),
    "composed (default)": LocalConfig(),
}


def library_predictor() -> Predictor:
    """alt-profanity-check's own predict_prob, as the engine called it before."""
    from profanity_check import predict_prob

    def predict(texts: Sequence[str]) -> Sequence[float]:
        return [float(p) for p in predict_prob(list(texts))]

    return predict


def predictor_for(name: str) -> Predictor:
    return library_predictor() if name.startswith("before") else load_predictor()


def texts() -> list[str]:
    return [orjson.loads(line)["text"] for line in LABELLED.read_bytes().splitlines()]


async def single_calls(name: str, config: LocalConfig, lines: list[str],
                       calls: int) -> list[float]:
    engine = LocalEngine("local", config, predictor_for(name))
    took = []
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        for i in range(calls):
            message = Message(id=str(i), text=lines[i % len(lines)], source="bench")
            start = time.perf_counter()
            await engine.moderate(message)
            took.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return took


async def batched_rate(name: str, config: LocalConfig, lines: list[str], count: int) -> float:
    engine = LocalEngine("local", config, predictor_for(name))
    messages = [Message(id=str(i), text=lines[i % len(lines)], source="bench")
                for i in range(count)]
    send, receive = trio.open_memory_channel[Message](0)

    async def caller() -> None:
        async for message in receive:
            await engine.moderate(message)

    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        start = time.perf_counter()
        async with trio.open_nursery() as callers:
            for _ in range(CALLERS):
                callers.start_soon(caller)
            async with send:
                for message in messages:
                    await send.send(message)
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return count / elapsed


def scoring_alone(name: str, config: LocalConfig, lines: list[str], calls: int) -> list[float]:
    predictor = predictor_for(name)
    lexicon = Lexicon.shipped() if config.rules else None
    took = []
    for i in range(calls):
        start = time.perf_counter()
        score_batch([lines[i % len(lines)]], predictor, lexicon, config.normalise)
        took.append(time.perf_counter() - start)
    return took


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    lines = texts()
    print(f"\n{len(lines)} distinct lines; {args.calls} single calls; {args.messages} batched "
          f"messages, best of {args.repeat}; {os.cpu_count()} CPUs\n")
    print(f"| {'engine':<22} | {'call p50':>8} | {'call p99':>8} | {'scoring p50':>11} | "
          f"{'batched msgs/s':>14} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|{'-' * 13}|{'-' * 16}|")
    for name, config in ENGINES.items():
        calls = trio.run(single_calls, name, config, lines, args.calls)
        alone = scoring_alone(name, config, lines, args.calls)
        rate = max(trio.run(batched_rate, name, config, lines, args.messages)
                   for _ in range(args.repeat))
        print(f"| {name:<22} | {percentile(calls, 0.5) * 1e3:>6.2f}ms | "
              f"{percentile(calls, 0.99) * 1e3:>6.2f}ms | "
              f"{statistics.median(alone) * 1e3:>9.2f}ms | {rate:>14,.0f} |")


if __name__ == "__main__":
    main()
