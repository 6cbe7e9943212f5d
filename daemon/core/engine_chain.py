"""The engine chain: the primary engine, then fallback engines, then a fixed answer.

Whatever the engines do, :meth:`EngineChain.moderate` returns a verdict: a message is never
left undecided because an engine failed, timed out or has a bug. The pipeline's streaming stage
and a reload work through its methods (:meth:`EngineChain.acquire_primary`,
:meth:`EngineChain.replace`, :meth:`EngineChain.reconfigure_cache`...), never its fields.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import trio

from chatmod.config.sections import FAIL_OPEN
from chatmod.core.cache import Lead, VerdictCache, Waiter
from chatmod.core.interfaces import Engine
from chatmod.core.model import Message, Verdict
from chatmod.errors import EngineError

log = logging.getLogger("chatmod.engine")

ROUTE_FALLBACK = "fallback"
ROUTE_FAIL_OPEN = "failopen"
ROUTE_FAIL_CLOSED = "failclosed"
NO_ENGINE = "none"


#: The lead of a message asked about with no cache in the way (off, or a primary not worth
#: caching): no one waits on it and its verdict is not kept.
UNSHARED = Lead("")


class EngineChain:
    """Asks each engine in turn until one answers within ``timeout`` seconds."""

    def __init__(
        self,
        engines: Sequence[Engine[Any]],
        last_resort: str,
        timeout: float,
        cache: VerdictCache | None = None,
    ) -> None:
        if not engines:
            raise ValueError("an engine chain needs at least one engine")
        self._engines = list(engines)
        self._cache = cache
        self.timeout = timeout
        route = ROUTE_FAIL_OPEN if last_resort == FAIL_OPEN else ROUTE_FAIL_CLOSED
        self._last_resort = Verdict(last_resort, None, NO_ENGINE, route)
        self.failures: Counter[str] = Counter()
        # Messages each engine holds right now (by id(engine)): a replaced engine is stopped
        # only once nothing is waiting on it.
        self._using: Counter[int] = Counter()
        self._unused: dict[int, trio.Event] = {}
        self._failing: set[str] = set()
        #: Asked before the cache and every engine (the review allow-list): a verdict it
        #: gives is final and costs no engine call.
        self.prejudge: Callable[[Message], Verdict | None] | None = None

    @property
    def engines(self) -> list[Engine[Any]]:
        """The engines in the order they are asked (a copy: change it with :meth:`replace`)."""
        return list(self._engines)

    @property
    def primary(self) -> Engine[Any]:
        """The engine asked first (a reload may replace it: read it each time)."""
        return self._engines[0]

    @property
    def cache(self) -> VerdictCache | None:
        """The verdict cache; None when caching is off (see :meth:`reconfigure_cache`)."""
        return self._cache

    async def moderate(self, message: Message) -> Verdict:
        if self.prejudge is not None and (verdict := self.prejudge(message)) is not None:
            return verdict
        if self._cache is None or not self._engines[0].worth_caching:
            return await self._ask_engines(message)
        return await self._cache.get_or_ask(
            message.text, lambda: self._ask_engines(message), self._cacheable
        )

    async def moderate_many(self, messages: Sequence[Message]) -> list[Verdict]:
        """:meth:`moderate` for each message, in order, for a primary that
        :func:`~chatmod.core.interfaces.takes_batches`: one call for the list, then the
        fallback chain for each message it failed (concurrently)."""
        primary = self._engines[0]
        if not self.claims_matter:
            # The usual: every message asked in one call, and every one answered.
            results = await self._ask_primary_many(primary, list(messages))
            answered = [result for result in results if isinstance(result, Verdict)]
            if len(answered) == len(results):
                if answered:
                    self._engine_answered(primary)
                return answered
            return await self._after_primary(primary, messages, list(range(len(messages))),
                                             results, [None] * len(messages))
        verdicts: list[Verdict | None] = [None] * len(messages)
        asked: list[int] = []
        prejudge = self.prejudge
        for index, message in enumerate(messages):
            if prejudge is not None and (verdict := prejudge(message)) is not None:
                verdicts[index] = verdict
            else:
                asked.append(index)
        if self._cache is not None and primary.worth_caching:
            if asked:
                await self._moderate_many_cached(self._cache, primary, messages, asked, verdicts)
        elif asked:
            results = await self._ask_primary_many(primary, [messages[i] for i in asked])
            return await self._after_primary(primary, messages, asked, results, verdicts)
        return [v if v is not None else self._last_resort for v in verdicts]

    async def _after_primary(self, primary: Engine[Any], messages: Sequence[Message],
                             asked: list[int], results: list[Verdict | Exception],
                             verdicts: list[Verdict | None]) -> list[Verdict]:
        """:meth:`moderate_many` once ``primary`` answered (``results``) for the messages at
        ``asked``: the fallback chain for each it failed. ``primary`` is the engine asked (a
        reload may have replaced it since)."""
        failed: list[int] = []
        for index, result in zip(asked, results, strict=True):
            if isinstance(result, Verdict):
                verdicts[index] = result
            else:
                self._engine_failed(primary, _reason(result), messages[index])
                failed.append(index)
        if len(failed) < len(asked):
            self._engine_answered(primary)
        if failed:
            async with trio.open_nursery() as asking:
                for index in failed:
                    asking.start_soon(self._moderate_into, verdicts, index, messages[index], 1)
        return [v if v is not None else self._last_resort for v in verdicts]

    async def _moderate_many_cached(self, cache: VerdictCache, primary: Engine[Any],
                                    messages: Sequence[Message], asked: list[int],
                                    verdicts: list[Verdict | None]) -> None:
        """:meth:`moderate_many` through the cache, as :meth:`VerdictCache.get_or_ask` does for
        one message: a text the cache answers or an identical request is asking about costs no
        engine call; the others (the leads) go to the primary in one call."""
        leading: list[int] = []
        leads: list[Lead] = []
        told: dict[int, Verdict | EngineError] = {}
        waiting = 0
        all_told = trio.Event()

        def tell(index: int, outcome: Verdict | EngineError) -> None:
            told[index] = outcome
            if len(told) == waiting:
                all_told.set()

        for index in asked:
            claim = cache.claim(messages[index].text, partial(tell, index))
            if isinstance(claim, Verdict):
                verdicts[index] = claim
            elif claim is None:
                waiting += 1
            else:
                leading.append(index)
                leads.append(claim)
        failed: list[int] = []
        settled = 0
        try:
            results = (await self._ask_primary_many(primary, [messages[i] for i in leading])
                       if leading else [])
            for index, lead, result in zip(leading, leads, results, strict=True):
                if isinstance(result, Verdict):
                    keep = self._cacheable(result)
                    cache.settle(lead, result if keep else EngineError("no verdict worth sharing"),
                                 keep=keep)
                    verdicts[index] = result
                else:
                    cache.settle(lead, EngineError("the shared request failed"), keep=False)
                    self._engine_failed(primary, _reason(result), messages[index])
                    failed.append(index)
                settled += 1
        finally:  # cancelled: the identical texts waiting on these leads ask on their own
            for lead in leads[settled:]:
                cache.settle(lead, EngineError("the shared request failed"), keep=False)
        if len(failed) < len(leading):
            self._engine_answered(primary)
        async with trio.open_nursery() as asking:
            for index in failed:
                asking.start_soon(self._moderate_into, verdicts, index, messages[index], 1)
            if len(told) < waiting:
                await all_told.wait()
            for index, outcome in told.items():
                if isinstance(outcome, Verdict):
                    verdicts[index] = outcome
                else:  # the shared request gave nothing to reuse: ask on its own
                    asking.start_soon(self._moderate_into, verdicts, index, messages[index], 0)

    async def _moderate_into(self, verdicts: list[Verdict | None], index: int,
                             message: Message, first: int | None = None) -> None:
        verdicts[index] = await (self.moderate(message) if first is None
                                 else self._ask_engines(message, first=first))

    async def _ask_primary_many(self, engine: Engine[Any],
                                messages: list[Message]) -> list[Verdict | Exception]:
        """The primary's answer for each message (or what it failed with), in one call."""
        key, count = id(engine), len(messages)
        self._using[key] += count
        try:
            if engine.enforces_own_timeout:
                results = await engine.moderate_many(messages)
            else:
                with trio.fail_after(self.timeout):
                    results = await engine.moderate_many(messages)
            if len(results) != count:
                raise RuntimeError(f"{len(results)} answers to {count} messages")
            return results
        except trio.TooSlowError:
            return [trio.TooSlowError(f"no verdict within {self.timeout:g} s")] * count
        except Exception as exc:  # a bug in an engine must not leave messages undecided
            log.exception("engine %s raised an unexpected error", engine.name)
            return [exc] * count
        finally:
            self._using[key] -= count - 1
            self.release(engine)

    def replace(self, old: Engine[Any], new: Engine[Any]) -> None:
        """Ask ``new`` where ``old`` was asked (reload); messages ``old`` holds stay counted
        until released (:meth:`wait_unused`)."""
        self._engines = [new if engine is old else engine for engine in self._engines]

    def forget(self, engine: Engine[Any]) -> None:
        """``engine`` stopped (after a :meth:`replace`): whatever it held failed with it."""
        self._using.pop(id(engine), None)
        waiting = self._unused.pop(id(engine), None)
        if waiting is not None:
            waiting.set()

    def reconfigure_cache(self, size: int, ttl: float) -> None:
        """New cache limits (reload): a cache is made when there was none and ``ttl`` > 0;
        an existing one is kept (messages may be waiting on requests it tracks) and a ``ttl``
        of 0 turns it off."""
        if self._cache is None:
            if ttl > 0:
                self._cache = VerdictCache(size, ttl)
            return
        self._cache.reconfigure(size, ttl)

    def acquire_primary(self) -> Engine[Any]:
        """The primary engine, counted as holding one more message until :meth:`release`."""
        engine = self._engines[0]
        self._using[id(engine)] += 1
        return engine

    def hold(self, engine: Engine[Any], count: int) -> None:
        """:meth:`acquire_primary` for ``count`` messages at once: each is held by ``engine``
        until its :meth:`release`."""
        self._using[id(engine)] += count

    @property
    def claims_matter(self) -> bool:
        """Whether :meth:`claim` may answer other than :data:`UNSHARED` (an allow-list, or a
        cache for the primary's answers); when not, a streaming caller need not ask it."""
        return self.prejudge is not None or (
            self._cache is not None and self._engines[0].worth_caching)

    @property
    def last_resort_route(self) -> str:
        """The route of the answer given when every engine failed."""
        return self._last_resort.route

    def release(self, engine: Engine[Any], count: int = 1) -> None:
        """``count`` messages no longer wait on ``engine``."""
        key, using = id(engine), self._using
        left = using[key] - count
        using[key] = left
        if left <= 0 and key in self._unused:
            self._unused.pop(key).set()

    async def wait_unused(self, engine: Engine[Any]) -> None:
        """Until no message waits on ``engine``."""
        key = id(engine)
        if self._using[key] > 0:
            event = self._unused.setdefault(key, trio.Event())
            await event.wait()

    def claim(self, message: Message, waiter: Waiter) -> Verdict | Lead | None:
        """Streaming: a cached verdict; ``None`` when an identical text is being asked about
        (``waiter`` gets its outcome); else the :class:`Lead`: ask the primary, then report
        with :meth:`primary_answered` or :meth:`primary_failed`. A text the allow-list
        passes (:attr:`prejudge`) is a verdict before the cache and every engine."""
        if self.prejudge is not None and (verdict := self.prejudge(message)) is not None:
            return verdict
        if self._cache is None or not self._engines[0].worth_caching:
            return UNSHARED  # no cache key (normalising the text costs): nothing is kept
        return self._cache.claim(message.text, waiter)

    def primary_answered(self, lead: Lead, verdict: Verdict) -> None:
        """Streaming: the primary's answer for ``lead``; the messages waiting on it get it."""
        if self._failing:
            self._engine_answered(self._engines[0])
        if self._cache is not None and lead is not UNSHARED:
            self._cache.settle(lead, verdict, keep=self._cacheable(verdict))

    def primary_answered_many(self, leads: list[Lead], verdicts: list[Verdict]) -> None:
        """:meth:`primary_answered` for each lead and its verdict (one read's answers)."""
        if self._failing:
            self._engine_answered(self._engines[0])
        cache = self._cache
        if cache is not None:
            for lead, verdict in zip(leads, verdicts, strict=True):
                if lead is not UNSHARED:
                    cache.settle(lead, verdict, keep=self._cacheable(verdict))

    def primary_failed(self, lead: Lead, error: EngineError) -> None:
        """Streaming: the primary failed for ``lead``; the messages waiting on it get
        ``error`` (each then falls back)."""
        if self._cache is not None and lead is not UNSHARED:
            self._cache.settle(lead, error, keep=False)

    async def fall_back(self, message: Message, error: EngineError) -> Verdict:
        """The verdict after the primary failed with ``error``: fallback engines, then the
        last resort."""
        self._engine_failed(self._engines[0], str(error), message)
        return await self._ask_engines(message, first=1)

    def _cacheable(self, verdict: Verdict) -> bool:
        # Only the primary engine's own answers: a degraded answer must not outlive the outage.
        return verdict.engine == self._engines[0].name and verdict.route not in (
            ROUTE_FALLBACK, ROUTE_FAIL_OPEN, ROUTE_FAIL_CLOSED)

    async def _ask_engines(self, message: Message, first: int = 0) -> Verdict:
        for position, engine in enumerate(self._engines[first:], start=first):
            self._using[id(engine)] += 1
            try:
                if engine.enforces_own_timeout:
                    verdict = await engine.moderate(message)
                else:
                    with trio.fail_after(self.timeout):
                        verdict = await engine.moderate(message)
            except trio.TooSlowError:
                self._engine_failed(engine, f"no verdict within {self.timeout:g} s", message)
                continue
            except EngineError as exc:
                self._engine_failed(engine, str(exc), message)
                continue
            except Exception as exc:  # a bug in an engine must not leave messages undecided
                log.exception("engine %s raised an unexpected error", engine.name)
                self._engine_failed(engine, f"{type(exc).__name__}: {exc}", message)
                continue
            finally:
                self.release(engine)
            self._engine_answered(engine)
            return verdict if position == 0 else replace(verdict, route=ROUTE_FALLBACK)
        return self._last_resort

    def _engine_answered(self, engine: Engine[Any]) -> None:
        """``engine`` gave a verdict: if it was failing, one warning that it is back."""
        if engine.name in self._failing:
            self._failing.discard(engine.name)
            log.warning("engine %s answers again", engine.name)

    def _engine_failed(self, engine: Engine[Any], reason: str, message: Message) -> None:
        self.failures[engine.name] += 1
        # One warning when an engine starts failing, not one per message.
        if engine.name not in self._failing:
            self._failing.add(engine.name)
            log.warning("engine %s failed (%s); using the fallback until it answers again",
                        engine.name, reason)
        log.debug("engine %s failed for message %s: %s", engine.name, message.id, reason)

    def statistics(self) -> dict[str, float]:
        stats = {f"engine_failures.{name}": float(n) for name, n in self.failures.items()}
        if self._cache is not None:
            stats.update(self._cache.statistics())
        return stats


def _reason(error: Exception) -> str:
    """Why an engine gave no verdict, as :meth:`EngineChain._ask_engines` words it."""
    if isinstance(error, EngineError | trio.TooSlowError):
        return str(error)
    return f"{type(error).__name__}: {error}"
