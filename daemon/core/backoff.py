"""Jittered exponential backoff (no I/O: the caller sleeps), and :func:`with_retries`, the
retry loop every HTTP client here shares."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt worth repeating, after ``wait`` seconds (``None``: use the backoff)."""

    reason: str
    wait: float | None = None


async def with_retries(
    attempt: Callable[[], Awaitable[T | Retry]], *, retries: int, backoff: Backoff,
    max_wait: float, on_retry: Callable[[Retry, float], None] | None = None,
) -> tuple[T | Retry, int]:
    """Call ``attempt`` until it returns anything but a :class:`Retry`, at most
    ``retries + 1`` times, sleeping between tries what the Retry asks (a ``Retry-After``) or
    else the backoff's next delay, never over ``max_wait``. Returns the last outcome (a Retry
    when the retries ran out) and the number of attempts. Errors ``attempt`` raises (final
    refusals) pass through."""
    attempts = 0
    while True:
        attempts += 1
        outcome = await attempt()
        if not isinstance(outcome, Retry) or attempts > retries:
            return outcome, attempts
        delay = min(max_wait, outcome.wait if outcome.wait is not None else backoff.next_delay())
        if on_retry is not None:
            on_retry(outcome, delay)
        await trio.sleep(delay)
