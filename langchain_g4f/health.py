"""The router's view of its providers: health records, and strategies that order them.

:class:`Health` keeps, per provider, successes, failures, consecutive failures,
the last error, a cooldown and an EWMA of the time to first token. One router owns
one :class:`Health`; it is safe to share between threads and asyncio tasks (every
update is a short critical section under one lock, with no I/O).

A strategy is any object with one method,
``order(candidates, health) -> list[str]``: it gets the names of the providers
that may serve a request (in the order the router was given them) and a snapshot
of their health, and returns the order in which to try them.

>>> from langchain_g4f.health import FastestStrategy, HealthView
>>> views = {"a": HealthView(ttft=0.9), "b": HealthView(ttft=0.2), "c": HealthView()}
>>> FastestStrategy(epsilon=0).order(["a", "b", "c"], views)
['c', 'b', 'a']
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from langchain_g4f.errors import ConfigurationError

__all__ = [
    "EWMA_ALPHA",
    "FastestStrategy",
    "Health",
    "HealthView",
    "PriorityStrategy",
    "RandomStrategy",
    "RoundRobinStrategy",
    "STRATEGIES",
    "Strategy",
    "resolve_strategy",
]

#: Weight of the newest measurement in the time-to-first-token average.
EWMA_ALPHA = 0.3


@dataclass(frozen=True, slots=True)
class HealthView:
    """One provider's health at one moment (immutable; times are ``time.monotonic``)."""

    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    #: Recent time to first token (EWMA, seconds); None until measured.
    ttft: float | None = None
    last_error: str | None = None

    def cooldown_left(self, now: float) -> float:
        return max(0.0, self.cooldown_until - now)

    @property
    def success_rate(self) -> float:
        """Successes over attempts, smoothed so a new provider starts at 0.5."""
        return (self.successes + 1) / (self.successes + self.failures + 2)


class Health:
    """Per-provider health records, owned by one router.

    ``cooldown_after`` consecutive failures put a provider in cooldown for
    ``cooldown`` seconds, doubling with each further failure up to
    ``max_cooldown``; a success ends it.
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        cooldown_after: int = 2,
        cooldown: float = 5.0,
        max_cooldown: float = 300.0,
        alpha: float = EWMA_ALPHA,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cooldown_after = cooldown_after
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.alpha = alpha
        self.clock = clock
        self._lock = threading.Lock()
        self._views = {name: HealthView() for name in names}

    def views(self) -> dict[str, HealthView]:
        """A consistent snapshot of every provider's health."""
        with self._lock:
            return dict(self._views)

    def cooldown_seconds(self, consecutive_failures: int) -> float:
        """How long a provider with this many consecutive failures cools down."""
        extra = consecutive_failures - self.cooldown_after
        if extra < 0:
            return 0.0
        return min(self.max_cooldown, self.cooldown * 2 ** min(extra, 32))

    def cooldown_left(self, name: str) -> float:
        with self._lock:
            view = self._views[name]
        return view.cooldown_left(self.clock())

    def record_ttft(self, name: str, seconds: float) -> None:
        with self._lock:
            view = self._views[name]
            ttft = seconds if view.ttft is None else (
                self.alpha * seconds + (1 - self.alpha) * view.ttft
            )
            self._views[name] = dataclasses.replace(view, ttft=ttft)

    def record_success(self, name: str, *, chars: int = 0, seconds: float = 0.0) -> None:
        """A complete answer: ``chars`` of text over ``seconds`` after its first text."""
        with self._lock:
            view = self._views[name]
            self._views[name] = dataclasses.replace(
                view, successes=view.successes + 1, consecutive_failures=0, cooldown_until=0.0
            )

    def record_failure(
        self, name: str, error: BaseException, *, after_text: bool = False
    ) -> float:
        """Count a failure (``after_text``: the stream broke after text had started);
        returns the cooldown it started (0.0 for none)."""
        now = self.clock()
        last_error = f"{type(error).__name__}: {error}"
        with self._lock:
            view = self._views[name]
            consecutive = view.consecutive_failures + 1
            pause = self.cooldown_seconds(consecutive)
            self._views[name] = dataclasses.replace(
                view,
                failures=view.failures + 1,
                consecutive_failures=consecutive,
                cooldown_until=now + pause if pause else view.cooldown_until,
                last_error=last_error,
            )
        return pause

    def record_cancelled(self, name: str) -> None:
        """The caller abandoned the answer: neither a success nor a failure."""

    def stats(self) -> dict[str, dict[str, object]]:
        now = self.clock()
        return {
            name: {
                "successes": view.successes,
                "failures": view.failures,
                "consecutive_failures": view.consecutive_failures,
                "cooldown_left": view.cooldown_left(now),
                "ttft": view.ttft,
                "last_error": view.last_error,
            }
            for name, view in self.views().items()
        }


# --- strategies ----------------------------------------------------------------


@runtime_checkable
class Strategy(Protocol):
    """Orders the providers that may serve a request."""

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        """``candidates`` in the order to try them (every name once)."""
        ...


class PriorityStrategy:
    """The order the router was given."""

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        return list(candidates)


class RoundRobinStrategy:
    """Each request starts one provider further along the list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turn = 0

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        if not candidates:
            return []
        with self._lock:
            turn, self._turn = self._turn, self._turn + 1
        start = turn % len(candidates)
        return [*candidates[start:], *candidates[:start]]


class RandomStrategy:
    """A random order, each pick weighted.

    ``weights`` maps provider names to weights (a name not in it weighs 1.0);
    without ``weights`` a provider weighs its smoothed success rate. Pass a seeded
    ``random.Random`` as ``rng`` for a reproducible order.
    """

    def __init__(
        self, weights: Mapping[str, float] | None = None, rng: random.Random | None = None
    ) -> None:
        if weights is not None and any(w < 0 for w in weights.values()):
            raise ConfigurationError("RandomStrategy weights must be >= 0")
        self.weights = dict(weights) if weights is not None else None
        self.rng = rng or random.Random()

    def weight(self, name: str, view: HealthView | None) -> float:
        if self.weights is not None:
            return self.weights.get(name, 1.0)
        return view.success_rate if view is not None else 0.5

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        left = list(candidates)
        weights = [self.weight(name, health.get(name)) for name in left]
        ordered = []
        while left and sum(weights) > 0:
            pick = self.rng.choices(range(len(left)), weights=weights)[0]
            ordered.append(left.pop(pick))
            weights.pop(pick)
        return ordered + left  # weight 0: last, in the given order


class FastestStrategy:
    """Lowest recent time to first token first.

    Providers never measured come first, in the given order (so each gets
    measured); then the measured ones by their average, ties in the given order.
    With probability ``epsilon`` a random other provider goes first, so one that
    was slow, or failed, gets measured again after it recovers.
    """

    def __init__(self, epsilon: float = 0.1, rng: random.Random | None = None) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigurationError("FastestStrategy epsilon must be within [0, 1]")
        self.epsilon = epsilon
        self.rng = rng or random.Random()

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        def ttft(name: str) -> float | None:
            view = health.get(name)
            return view.ttft if view is not None else None

        unmeasured = [name for name in candidates if ttft(name) is None]
        measured = sorted(
            (name for name in candidates if ttft(name) is not None),
            key=lambda name: ttft(name),  # type: ignore[arg-type,return-value]
        )  # sorted() is stable: ties keep the given order
        ordered = unmeasured + measured
        if len(ordered) > 1 and self.rng.random() < self.epsilon:
            ordered.insert(0, ordered.pop(self.rng.randrange(1, len(ordered))))
        return ordered


#: Strategy names accepted by ``ChatG4FRouter(strategy=...)``.
STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "priority": PriorityStrategy,
    "round_robin": RoundRobinStrategy,
    "random": RandomStrategy,
    "fastest": FastestStrategy,
}


def resolve_strategy(strategy: str | Strategy) -> Strategy:
    """A strategy object from a name (a fresh one, so its state is the router's own)."""
    if isinstance(strategy, str):
        factory = STRATEGIES.get(strategy.lower().replace("-", "_"))
        if factory is None:
            raise ConfigurationError(
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)} "
                "or pass an object with an order(candidates, health) method"
            )
        return factory()
    if not isinstance(strategy, Strategy):
        raise ConfigurationError(
            f"strategy must be a name or have an order(candidates, health) method, "
            f"not {type(strategy).__name__}"
        )
    return strategy
