"""Strategies: in which order a router tries the providers that may serve a call.

A strategy is any object with one method, ``order(candidates, health) -> list[str]``:
it gets the names of the providers that may serve a call now (in the order the
router was given them; those cooling down are not among them) and a
:class:`~langchain_g4f.health.HealthView` per provider, and returns the order in
which to try them.

``fastest`` explores by what it does not know yet: the first calls, before
anything is measured, are spread over the providers; a provider never tried goes
first once; after that a provider goes first in place of the best known one only
when its *optimistic* cost (its failure rate at the low end of what its few
observations allow, its time to first token as fast as the fastest's when not
measured) is the lowest of all, and only while the router's
:class:`ExtraRequests` budget (shared with hedging) has a request to spare. A
provider measured bad has no optimistic cost low enough, so it costs nothing more
until its record fades. ``priority`` keeps a fixed small share of calls for a
provider it moved behind. A provider recovering from a cooldown (its circuit
half-open) admits one call at a time, its probe, whatever the order.

>>> from langchain_g4f.health import HealthView
>>> views = {
...     "flaky": HealthView(
...         ttft=0.05,
...         failure_cost=10.0,
...         recent_successes=8,
...         recent_failures=2,
...         successes=8,
...         failures=2,
...     ),
...     "steady": HealthView(ttft=0.3, failure_cost=1.0, recent_successes=10, successes=10),
...     "new": HealthView(),
... }
>>> FastestStrategy(ExtraRequests(0)).order(["flaky", "steady", "new"], views)
['new', 'steady', 'flaky']
>>> FastestStrategy(ExtraRequests(0)).order(["flaky", "steady"], views)
['steady', 'flaky']
"""

from __future__ import annotations

import math
import random
import statistics
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from langchain_g4f.errors import ConfigurationError
from langchain_g4f.health import HealthView

__all__ = [
    "STRATEGIES",
    "ExtraRequests",
    "FastestStrategy",
    "PriorityStrategy",
    "RandomStrategy",
    "RoundRobinStrategy",
    "Strategy",
    "resolve_strategy",
]

#: Share of calls that ``priority`` explores on by default.
_EXPLORE = 0.05
#: Extra requests (hedges and exploration together) per call, by default.
EXTRA_SHARE = 0.03


class ExtraRequests:
    """A router's budget of requests beyond one per call: hedges and exploration.

    Each call earns ``share`` of a request (:meth:`earn`); an extra request is
    sent only if a whole one is saved (:meth:`spend`). At most ``burst`` are
    saved, and the budget starts full, so the first calls can measure the
    providers. Over ``n`` calls at most ``share * n + burst`` extra requests go
    out. Safe to share between threads and tasks.
    """

    def __init__(self, share: float = EXTRA_SHARE, burst: float = 20.0) -> None:
        if not 0.0 <= share <= 1.0 or burst < 0:
            msg = (
                f"ExtraRequests needs share within [0, 1] and burst >= 0, not {share!r}, {burst!r}"
            )
            raise ConfigurationError(msg)
        self.share = share
        self.burst = burst if share > 0 else 0.0
        self._saved = self.burst
        self._lock = threading.Lock()

    def earn(self) -> None:
        """A call started: it earns its share."""
        with self._lock:
            self._saved = min(self.burst, self._saved + self.share)

    def spend(self, keep: float = 0.0) -> bool:
        """Take one extra request if one is saved, and ``keep`` more after it."""
        with self._lock:
            if self._saved < 1.0 + keep:
                return False
            self._saved -= 1.0
            return True

    def __repr__(self) -> str:
        return f"ExtraRequests(share={self.share!r}, burst={self.burst!r})"


@runtime_checkable
class Strategy(Protocol):
    """Orders the providers that may serve a call."""

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        """``candidates`` in the order to try them (every name once)."""
        ...


class _Explorer:
    """A seeded chance of putting one provider first on a share of calls."""

    def __init__(self, explore: float, rng: random.Random | None) -> None:
        if not 0.0 <= explore <= 1.0:
            msg = f"explore must be within [0, 1], not {explore!r}"
            raise ConfigurationError(msg)
        self.explore = explore
        self.rng = rng or random.Random()
        self._lock = threading.Lock()  # random.Random is not safe across threads

    def pick(self, pool: Sequence[str]) -> str | None:
        """One of ``pool`` on an ``explore`` share of calls, else None."""
        if not pool:
            return None
        with self._lock:
            if self.rng.random() >= self.explore:
                return None
            return pool[self.rng.randrange(len(pool))]


class PriorityStrategy:
    """The order the router was given, with failing providers moved behind the others.

    A provider is failing when its circuit is open or half-open, or when at least
    ``demote_rate`` of its recent calls failed (a decayed share, see
    :mod:`langchain_g4f.health`) and it has had at least ``min_calls`` calls. On an
    ``explore`` share of calls one failing provider keeps its place, so a recovery
    shows.
    """

    def __init__(
        self,
        demote_rate: float = 0.2,
        min_calls: int = 10,
        explore: float = _EXPLORE,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 < demote_rate <= 1.0:
            msg = "PriorityStrategy demote_rate must be within (0, 1]"
            raise ConfigurationError(msg)
        self.demote_rate = demote_rate
        self.min_calls = min_calls
        self._explorer = _Explorer(explore, rng)

    def failing(self, view: HealthView | None) -> bool:
        """Whether ``view`` shows a failing provider (None: never seen, not failing)."""
        if view is None:
            return False
        if view.circuit != "closed":
            return True
        calls = view.successes + view.failures
        return calls >= self.min_calls and view.failure_rate >= self.demote_rate

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        """``candidates`` in the given order, failing ones last (bar one, when exploring)."""
        failing = [name for name in candidates if self.failing(health.get(name))]
        if not failing or len(failing) == len(candidates):
            return list(candidates)
        spared = self._explorer.pick(failing)
        demoted = [name for name in failing if name != spared]
        return [name for name in candidates if name not in demoted] + demoted


class RoundRobinStrategy:
    """Each call starts one provider further along the list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._turn = 0

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        """``candidates`` rotated by one more place than on the last call."""
        if not candidates:
            return []
        with self._lock:
            turn, self._turn = self._turn, self._turn + 1
        start = turn % len(candidates)
        return [*candidates[start:], *candidates[:start]]


class RandomStrategy:
    """A random order, each pick weighted.

    ``weights`` maps provider names to weights (a name not in it weighs 1.0);
    without ``weights`` a provider weighs its recent success rate (decayed,
    smoothed: 0.5 before any call). Pass a seeded ``random.Random`` as ``rng`` for a
    reproducible order.
    """

    def __init__(
        self, weights: Mapping[str, float] | None = None, rng: random.Random | None = None
    ) -> None:
        if weights is not None and any(w < 0 for w in weights.values()):
            msg = "RandomStrategy weights must be >= 0"
            raise ConfigurationError(msg)
        self.weights = dict(weights) if weights is not None else None
        self.rng = rng or random.Random()
        self._lock = threading.Lock()

    def weight(self, name: str, view: HealthView | None) -> float:
        """The weight of ``name`` in the draw."""
        if self.weights is not None:
            return self.weights.get(name, 1.0)
        return view.success_rate if view is not None else 0.5

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        """``candidates`` drawn one by one by weight; those of weight 0 last."""
        left = list(candidates)
        weights = [self.weight(name, health.get(name)) for name in left]
        ordered = []
        with self._lock:
            while left and sum(weights) > 0:
                pick = self.rng.choices(range(len(left)), weights=weights)[0]
                ordered.append(left.pop(pick))
                weights.pop(pick)
        return ordered + left  # weight 0: last, in the given order


class FastestStrategy:
    """Lowest expected time to a complete answer first, exploring what is not known yet.

    A provider's cost is what an attempt on it takes: its time to first token plus
    the answer's time (``answer_chars`` at its throughput) when it succeeds, and
    when it fails its failure cost (at least ``min_failure_cost``) plus
    ``request_cost`` (the price of one more request, in seconds: requests per
    answer come before speed), then the fallback to the next candidate. Tried one
    after another, the order that minimises the expected total is by
    ``cost / (1 - p)``, ``p`` being the failure probability:
    ``ttft + answer + p / (1 - p) * (failure_cost + request_cost)``. ``p`` is the
    decayed failure rate, smoothed towards ``prior_failure``. A figure not yet
    measured takes the median of the candidates' measured ones.

    Exploration follows uncertainty (see the module's docstring): before anything
    is measured, each call starts on the provider put first least often; a
    provider never tried goes first once; then the provider with the lowest
    optimistic cost (``p`` lowered by ``optimism`` standard errors of its few
    observations; an unmeasured time to first token taken as the fastest's), if
    it is not the provider of lowest expected cost, goes first when ``budget`` has
    a request to spare beyond half of what it may save (the rest is kept for
    hedges) and no other call exploring it is still on its way, else second,
    where a fallback reaches it. What is known
    of a provider no call reached lately fades (half every ``idle_half_life``
    calls), so a provider measured bad is explored again after a while, and a
    recovery shows. ``budget``: the
    router's, shared with its hedges (a strategy made by name gets it); by
    default one of its own. A provider recovering from a cooldown keeps its rank,
    its recent failures included: it gets its one probe call if it still ranks
    high.
    """

    def __init__(
        self,
        budget: ExtraRequests | None = None,
        *,
        answer_chars: int = 1000,
        min_failure_cost: float = 0.05,
        prior_failure: float = 0.1,
        request_cost: float = 8.0,
        optimism: float = 1.0,
        idle_half_life: float = 50.0,
    ) -> None:
        if (
            answer_chars < 0
            or min_failure_cost < 0
            or not 0.0 <= prior_failure < 1.0
            or request_cost < 0
            or optimism < 0
            or idle_half_life <= 0
        ):
            msg = (
                "FastestStrategy needs answer_chars, min_failure_cost, request_cost and "
                "optimism >= 0, idle_half_life > 0 and prior_failure within [0, 1)"
            )
            raise ConfigurationError(msg)
        self.budget = _budget(budget)
        self.answer_chars = answer_chars
        self.min_failure_cost = min_failure_cost
        self.prior_failure = prior_failure
        self.request_cost = request_cost
        self.optimism = optimism
        self.idle_half_life = idle_half_life
        self._firsts: Counter[str] = Counter()  # calls started on each while unmeasured
        self._calls = 0  # calls ordered so far
        self._news: dict[str, tuple[int, int]] = {}  # outcomes seen, and on which call
        self._explored: dict[str, int] = {}  # the call that last explored each provider
        self._lock = threading.Lock()

    def order(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        """``candidates`` by expected seconds per answer, exploring as described above."""
        with self._lock:
            self._calls += 1
            views = {name: self._faded(name, health.get(name)) for name in candidates}
        if not any(view.measured for view in views.values()):
            return self._spread(candidates)
        mean, optimistic = self._costs(list(views.values()))
        ranked = sorted(candidates, key=lambda name: mean(views[name]))  # stable
        with self._lock:
            untried = [n for n in ranked if not views[n].measured and not self._firsts[n]]
            if untried:  # warm-up: every provider is tried once
                self._firsts[untried[0]] += 1
                return _first(untried[0], ranked)
        hope = min(ranked, key=lambda name: (optimistic(views[name]), mean(views[name])))
        if hope == ranked[0]:
            return ranked
        with self._lock:
            if not self._exploring(hope) and self.budget.spend(
                keep=self.budget.burst / 2  # hedges come first
            ):
                self._explored[hope] = self._calls
                return _first(hope, ranked)
        return [ranked[0], *_first(hope, ranked[1:])]

    def _exploring(self, name: str) -> bool:
        """Whether a call exploring ``name`` is still on its way (under the lock).

        One at a time: calls that start meanwhile, as concurrent calls do, would
        spend requests to learn the same thing. It is on its way until an outcome of
        the provider is recorded, or for ``idle_half_life`` calls at most (a call
        cancelled before its outcome tells nothing).
        """
        at = self._explored.get(name)
        if at is None:
            return False
        _, news_at = self._news[name]  # the call that last saw its outcomes change
        return news_at <= at and self._calls - at <= self.idle_half_life

    def rank(self, candidates: Sequence[str], health: Mapping[str, HealthView]) -> list[str]:
        """``candidates`` by expected seconds per answer alone: no exploration, no state.

        Those that never gave a first text nor ended a call come last. The
        router's auto hedges go to the first of these among the providers a call
        has not tried yet: a hedge is for a first token soon, from a provider
        known to give one.
        """
        views = {name: health.get(name) or HealthView() for name in candidates}
        mean, _ = self._costs(list(views.values()))

        def key(name: str) -> tuple[bool, float]:
            view = views[name]
            return (view.ttft is None and not view.measured, mean(view))

        return sorted(candidates, key=key)

    def _faded(self, name: str, view: HealthView | None) -> HealthView:
        """``view``, its recent calls weighing less the more calls went elsewhere.

        A provider no call has reached for ``idle_half_life`` calls weighs half:
        what is known of it grows uncertain, so once its optimistic cost is the
        lowest it is explored again, and a recovery (drift) shows.
        """
        view = view or HealthView()
        outcomes = view.successes + view.failures
        seen, since = self._news.get(name, (-1, self._calls))
        if outcomes != seen:
            self._news[name] = (outcomes, self._calls)
            return view
        factor = 0.5 ** ((self._calls - since) / self.idle_half_life)
        return replace(
            view,
            recent_successes=view.recent_successes * factor,
            recent_failures=view.recent_failures * factor,
        )

    def _spread(self, candidates: Sequence[str]) -> list[str]:
        """Nothing measured: the provider started on least often first, and so on."""
        with self._lock:
            ordered = sorted(candidates, key=lambda name: self._firsts[name])  # stable
            if ordered:
                self._firsts[ordered[0]] += 1
        return ordered

    def _costs(
        self, views: list[HealthView]
    ) -> tuple[Callable[[HealthView], float], Callable[[HealthView], float]]:
        """The expected and the optimistic seconds per complete answer of a view."""
        ttft = _median([v.ttft for v in views])
        fastest = min((v.ttft for v in views if v.ttft is not None), default=0.0)
        throughput = _median([v.throughput for v in views])
        failure_cost = _median([v.failure_cost for v in views])

        def cost(view: HealthView, first: float, p: float) -> float:
            speed = view.throughput if view.throughput is not None else throughput
            answer = self.answer_chars / speed if speed else 0.0
            failing = view.failure_cost if view.failure_cost is not None else failure_cost
            failing = max(self.min_failure_cost, failing if failing is not None else first)
            return first + answer + p / (1 - p) * (failing + self.request_cost)

        def mean(view: HealthView) -> float:
            first = view.ttft if view.ttft is not None else ttft
            return cost(view, first, self.failure_probability(view))

        def optimistic(view: HealthView) -> float:
            first = view.ttft if view.ttft is not None else fastest
            p = self.failure_probability(view)
            low = p - self.optimism * math.sqrt(p * (1 - p) / (view.volume + 1))
            return cost(view, first, max(0.0, low))

        return mean, optimistic

    def failure_probability(self, view: HealthView) -> float:
        """Decayed failure rate, smoothed by one call's worth of ``prior_failure``."""
        return (view.recent_failures + self.prior_failure) / (view.volume + 1)


def _budget(budget: object) -> ExtraRequests:
    """``budget``, or a fresh default one for ``None``; anything else is a mistake."""
    if budget is None:
        return ExtraRequests()
    if not isinstance(budget, ExtraRequests):
        msg = f"FastestStrategy budget must be an ExtraRequests, not {budget!r}"
        raise ConfigurationError(msg)
    return budget


def _first(name: str, order: Sequence[str]) -> list[str]:
    return [name, *(other for other in order if other != name)]


def _median(values: list[float | None]) -> float:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else 0.0


#: Strategy names accepted by ``ChatG4FRouter(strategy=...)``.
STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "priority": PriorityStrategy,
    "round_robin": RoundRobinStrategy,
    "random": RandomStrategy,
    "fastest": FastestStrategy,
}


def resolve_strategy(strategy: object, budget: ExtraRequests | None = None) -> Strategy:
    """A strategy from a name or an object with an ``order`` method.

    A name in :data:`STRATEGIES` makes a fresh strategy, so its state is the router's
    own (``"fastest"`` explores from ``budget``, the router's budget of extra
    requests); an object is returned as it is.

    Raises:
        ConfigurationError: an unknown name, or an object without an ``order`` method.
    """
    if isinstance(strategy, str):
        factory = STRATEGIES.get(strategy.lower().replace("-", "_"))
        if factory is None:
            msg = (
                f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)} "
                "or pass an object with an order(candidates, health) method"
            )
            raise ConfigurationError(msg)
        if factory is FastestStrategy and budget is not None:
            return FastestStrategy(budget)
        return factory()
    if not isinstance(strategy, Strategy):
        msg = (
            f"strategy must be a name or have an order(candidates, health) method, "
            f"not {type(strategy).__name__}"
        )
        raise ConfigurationError(msg)
    return strategy
