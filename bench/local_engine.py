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
- batched: messages per second with 256 concurrent callers, best of ``--repeat`` rounds;
  and per CPU second of this process (the same work, not slowed by other processes' load).

The batched runs are interleaved so that load from other work hits every engine alike: in a
round all engines run side by side, and the round's ``--messages`` go through them in
:data:`SLICES` slices, one slice through each engine in turn (the order rotated each slice).
Each round prints the composed engine's rate over the engine before it; then the median and
the lowest of those ratios.

Texts are the lines of bench/eval/chat-labelled.jsonl, cycled (short chat lines, a third
abusive): the lexicon's cost depends on what it reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
SLICES = 10
BEFORE = "before (predict_prob)"
COMPOSED = "composed (default)"
ENGINES = {
    BEFORE: LocalConfig(rules=False, normalise=False),
    "model only": LocalConfig(rules=False, normalise=False),
    "model + normalisation": LocalConfig(rules=False),
    COMPOSED: LocalConfig(),
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


@dataclass
class Spent:
    """Messages an engine decided in a round, and the wall and CPU seconds it took."""

    messages: int = 0
    wall: float = 0.0
    cpu: float = 0.0


async def push(engine: LocalEngine, messages: list[Message]) -> None:
    """``messages`` through ``engine`` from :data:`CALLERS` concurrent callers."""
    send, receive = trio.open_memory_channel[Message](0)

    async def caller() -> None:
        async for message in receive:
            await engine.moderate(message)

    async with trio.open_nursery() as callers:
        for _ in range(CALLERS):
            callers.start_soon(caller)
        async with send:
            for message in messages:
                await send.send(message)


async def interleaved_round(lines: list[str], count: int) -> dict[str, Spent]:
    """One round: every engine running, ``count`` messages through each, slice by slice."""
    size = max(1, count // SLICES)
    slices = [[Message(id=str(i), text=lines[i % len(lines)], source="bench")
               for i in range(start, min(count, start + size))]
              for start in range(0, count, size)]
    engines = {name: LocalEngine("local", config, predictor_for(name))
               for name, config in ENGINES.items()}
    spent = {name: Spent() for name in engines}
    names = list(engines)
    async with trio.open_nursery() as nursery:
        for engine in engines.values():
            await nursery.start(engine.run)
        for index, messages in enumerate(slices):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                wall, cpu = time.perf_counter(), time.process_time()
                await push(engines[name], messages)
                spent[name].wall += time.perf_counter() - wall
                spent[name].cpu += time.process_time() - cpu
                spent[name].messages += len(messages)
        nursery.cancel_scope.cancel()
    return spent


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
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved rounds of batched runs")
    args = parser.parse_args()
    lines = texts()
    print(f"\n{len(lines)} distinct lines; {args.calls} single calls; {args.messages} batched "
          f"messages per engine, best of {args.repeat} interleaved rounds; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}\n")
    latency = {name: (trio.run(single_calls, name, config, lines, args.calls),
                      scoring_alone(name, config, lines, args.calls))
               for name, config in ENGINES.items()}
    rates: dict[str, list[float]] = {name: [] for name in ENGINES}
    cpu_rates: dict[str, list[float]] = {name: [] for name in ENGINES}
    ratios = []
    for round_number in range(1, args.repeat + 1):
        spent = trio.run(interleaved_round, lines, args.messages)
        for name, used in spent.items():
            rates[name].append(used.messages / used.wall)
            cpu_rates[name].append(used.messages / used.cpu)
        ratios.append(rates[COMPOSED][-1] / rates[BEFORE][-1])
        print(f"round {round_number}: composed/before {ratios[-1]:.2f} "
              f"({rates[COMPOSED][-1]:,.0f} / {rates[BEFORE][-1]:,.0f} msgs/s; per CPU second "
              f"{cpu_rates[COMPOSED][-1] / cpu_rates[BEFORE][-1]:.2f}); "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"composed/before over {len(ratios)} rounds: median {statistics.median(ratios):.2f}, "
          f"min {min(ratios):.2f}\n")
    print(f"| {'engine':<22} | {'call p50':>8} | {'call p99':>8} | {'scoring p50':>11} | "
          f"{'batched msgs/s':>14} | {'msgs/CPU s':>10} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|{'-' * 13}|{'-' * 16}|{'-' * 12}|")
    for name in ENGINES:
        calls, alone = latency[name]
        print(f"| {name:<22} | {percentile(calls, 0.5) * 1e3:>6.2f}ms | "
              f"{percentile(calls, 0.99) * 1e3:>6.2f}ms | "
              f"{statistics.median(alone) * 1e3:>9.2f}ms | {max(rates[name]):>14,.0f} | "
              f"{max(cpu_rates[name]):>10,.0f} |")


if __name__ == "__main__":
    main()
