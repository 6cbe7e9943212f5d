"""Jittered exponential backoff. No I/O: the caller sleeps."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays ``initial * multiplier**n`` capped at ``cap``, each scaled by a random factor in
    ``[1 - jitter, 1]`` so that many clients do not retry in step."""

    initial: float
    cap: float
    multiplier: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        base = min(self.cap, self.initial * self.multiplier ** self.failures)
        self.failures += 1
        return base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.failures = 0
