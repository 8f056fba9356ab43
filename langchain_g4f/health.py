"""The router's health model: what each observation says about a provider. Pure logic.

Per provider it learns:

- a **decayed success rate**: every success and failure weighs 1 when it
  happens, half as much ``half_life`` seconds later and half as much again
  after ``call_half_life`` further outcomes of the same provider, so old news
  fades with time and, on a busy provider, within tens of calls (a provider
  that starts failing shows it at once);
- the **time to first token** (an exponentially weighted average), raised by hedge
  losers: an attempt that had no text after ``t`` seconds when another won says the
  time to first token is at least ``t`` (at most the quantile below: a longer wait
  is a stall);
- a **high quantile of the time to first token** (``ttft_quantile``, p99 by
  default): a decayed mean and variance of its logarithm (times to first token
  are heavy-tailed, about lognormal), hedge losers included as their lower
  bound. :meth:`HealthPolicy.late_after` turns it into the seconds after which an
  attempt without text is late and the next provider starts beside it;
- the **throughput** of its answers (characters per second after the first text);
- the **failure cost**: how long a failure takes to show (a refusal costs a
  millisecond, a stall the whole read timeout), a decayed mean, so rare long
  stalls weigh what they cost;
- a **circuit breaker**. It opens when the decayed share of failures reaches
  ``failure_threshold`` once ``min_calls`` calls have ended since it last closed,
  or after ``cooldown_after`` failures in a row. It stays open ``cooldown``
  seconds, doubling with each consecutive opening up to ``max_cooldown``, never
  less than a 429's ``Retry-After``. Then it is half-open: exactly one call may
  probe it; its first text (or a success) closes it, a failure opens it again
  for longer, a probe the caller abandoned frees the slot for the next one (the
  slot is matched by the claim's token: another attempt ending frees nothing).

Mid-stream failures count as failures; a :class:`~langchain_g4f.errors.ConfigurationError`
(the request's fault) and a caller's cancellation count as neither success nor failure.

The numbers live in a :class:`~langchain_g4f.store.Store`, one flat ``{field: number}``
state per provider, changed only by the pure functions of :class:`HealthPolicy`
(``change(state, now) -> state``), so a shared store can apply the same changes
atomically for several processes. :class:`Health` composes a policy with a store
(a :class:`~langchain_g4f.store.MemoryStore` by default) and is what the router
talks to; strategies (:mod:`langchain_g4f.strategies`) read its :class:`HealthView`
snapshots.

>>> from langchain_g4f.store import MemoryStore
>>> now = [0.0]
>>> health = Health(["a"], HealthPolicy(min_calls=4), store=MemoryStore(lambda: now[0]))
>>> health.record_success("a")
>>> health.record_failure("a", OSError("reset"))  # seconds before it may be tried again
0.0
>>> health.record_success("a")
>>> health.record_failure("a", OSError("reset"))  # 2 of 4 recent calls failed: open
5.0
>>> health.view("a").circuit, health.view("a").cooldown_left
('open', 5.0)
>>> now[0] = 5.0
>>> health.view("a").circuit, health.claim("a", token=1), health.claim("a", token=2) > 0
('half_open', 0.0, True)
>>> health.record_success("a")
>>> health.view("a").circuit
'closed'
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from langchain_g4f.errors import (
    ConfigurationError,
    ProviderConnectionError,
    ProviderTimeoutError,
)
from langchain_g4f.store import MemoryStore, State, Store

__all__ = [
    "EWMA_ALPHA",
    "STATE_VERSION",
    "Health",
    "HealthPolicy",
    "HealthView",
]

#: Weight of the newest measurement in the averages (time to first token,
#: throughput).
EWMA_ALPHA = 0.3
#: The ``v`` field of every state this model writes; a state with another (or none)
#: is read as empty.
STATE_VERSION = 1
#: While another call probes a half-open circuit, ask again after this many seconds.
_PROBE_POLL = 0.25
#: ``ttft_quantile`` must be above the median: a time below it is not late.
_MEDIAN = 0.5

_CLOSED, _OPEN, _HALF_OPEN = "closed", "open", "half_open"

# State fields (all numbers; a missing field is zero / unknown):
#   v          STATE_VERSION
#   t          when the decayed weights were last aged (store clock)
#   ok, bad    decayed successes / failures (what strategies read)
#   wok, wbad  the breaker's window: decayed, restarted each time the circuit closes
#   wn         calls in the breaker's window (not decayed)
#   n_ok, n_bad, streak    lifetime successes / failures, failures in a row
#   ttft, tput averages: time to first token, chars/s
#   lm, lv, ln decayed mean and variance of log(time to first token), and how
#              many times it was measured
#   fsec, fnum decayed seconds and count of timed failures (their mean: the failure cost)
#   tripped    1 while the circuit is open or half-open
#   open_until end of the current cooldown (absolute)
#   openings   openings since the last complete answer (sets the cooldown's length)
#   probe_until, probe     lease end and token of the half-open circuit's probe
_WEIGHTS = ("ok", "bad", "wok", "wbad", "fsec", "fnum")


@dataclass(frozen=True, slots=True)
class HealthView:
    """One provider's health at one moment (immutable). Times are in seconds."""

    #: Lifetime counts, and the failures since the last success.
    successes: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    #: Decayed counts: each observation weighs 1, halving every ``half_life`` seconds.
    recent_successes: float = 0.0
    recent_failures: float = 0.0
    #: Time to first token (average, seconds); None until measured.
    ttft: float | None = None
    #: The policy's high quantile of the time to first token (seconds, p99 by
    #: default); None until measured.
    ttft_quantile: float | None = None
    #: Characters per second after the first text (average); None until measured.
    throughput: float | None = None
    #: Seconds a failure takes to show (decayed mean); None until one was timed.
    failure_cost: float | None = None
    #: ``"closed"``, ``"open"`` (cooling down) or ``"half_open"`` (one probe call may go).
    circuit: str = _CLOSED
    #: Seconds before a call may try it: its cooldown (a Retry-After at least), or another
    #: call's probe in flight. 0.0: now.
    cooldown_left: float = 0.0
    last_error: str | None = None

    @property
    def volume(self) -> float:
        """Recent calls with an outcome (decayed)."""
        return self.recent_successes + self.recent_failures

    @property
    def failure_rate(self) -> float:
        """Decayed share of recent calls that failed (0.0 without any)."""
        volume = self.volume
        return self.recent_failures / volume if volume > 0 else 0.0

    @property
    def success_rate(self) -> float:
        """Decayed share of recent calls that succeeded, smoothed: 0.5 without any."""
        return (self.recent_successes + 1) / (self.volume + 2)

    @property
    def measured(self) -> bool:
        """Whether any call to it ever ended in a success or a failure."""
        return self.successes + self.failures > 0


@dataclass(frozen=True)
class HealthPolicy:
    """How observations change a provider's state: the pure half of :class:`Health`.

    Each ``record_*``-like method is a change ``(state, now) -> new state``: it never
    changes its argument and has no side effects, so a store may run it more than
    once. Bind the keyword arguments with :func:`functools.partial`.
    """

    #: Seconds after which an observation weighs half as much.
    half_life: float = 60.0
    #: Outcomes of the same provider after which an observation weighs half as much
    #: (on top of ``half_life``).
    call_half_life: float = 20.0
    #: Decayed share of failures that opens the circuit ...
    failure_threshold: float = 0.2
    #: ... once this many calls have ended since the circuit last closed.
    min_calls: int = 10
    #: Failures in a row that open the circuit whatever the rate.
    cooldown_after: int = 2
    #: First cooldown, seconds; doubles with each consecutive opening.
    cooldown: float = 5.0
    #: Longest cooldown, seconds.
    max_cooldown: float = 300.0
    #: Weight of the newest measurement in the averages.
    alpha: float = EWMA_ALPHA
    #: Seconds a probe holds its slot if its outcome is never recorded.
    probe_lease: float = 60.0
    #: The quantile of the time to first token past which an attempt is late.
    ttft_quantile: float = 0.99
    #: Weight of the newest measurement in the mean and variance of log(TTFT).
    ttft_alpha: float = 0.05
    #: Standard deviation of log(TTFT) assumed before measurements say otherwise
    #: (1.0: the p99 is about 10x the median).
    ttft_prior_sigma: float = 1.0
    #: An attempt is never late sooner than this, seconds.
    late_floor: float = 0.3
    #: Seconds after which an attempt on a provider never measured is late.
    late_unmeasured: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "half_life must be > 0": self.half_life > 0,
            "call_half_life must be > 0": self.call_half_life > 0,
            "failure_threshold must be within (0, 1]": 0 < self.failure_threshold <= 1,
            "min_calls must be >= 1": self.min_calls >= 1,
            "cooldown_after must be >= 1": self.cooldown_after >= 1,
            "cooldown must be >= 0": self.cooldown >= 0,
            "max_cooldown must be >= cooldown": self.max_cooldown >= self.cooldown,
            "alpha must be within (0, 1]": 0 < self.alpha <= 1,
            "probe_lease must be > 0": self.probe_lease > 0,
            "ttft_quantile must be within (0.5, 1)": _MEDIAN < self.ttft_quantile < 1,
            "ttft_alpha must be within (0, 1]": 0 < self.ttft_alpha <= 1,
            "ttft_prior_sigma must be >= 0": self.ttft_prior_sigma >= 0,
            "late_floor must be >= 0": self.late_floor >= 0,
            "late_unmeasured must be >= late_floor": self.late_unmeasured >= self.late_floor,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ConfigurationError("health policy: " + "; ".join(failed))

    def cooldown_seconds(self, openings: int) -> float:
        """The cooldown of a circuit opening for the ``openings``-th time in a row."""
        if openings < 1:
            return 0.0
        return min(self.max_cooldown, self.cooldown * 2.0 ** min(openings - 1, 32))

    # -- reading ------------------------------------------------------------------

    def view(self, state: State, now: float, last_error: str | None = None) -> HealthView:
        """What ``state`` says of the provider at ``now``."""
        s = self._aged(_valid(state), now)
        return HealthView(
            successes=int(s.get("n_ok", 0)),
            failures=int(s.get("n_bad", 0)),
            consecutive_failures=int(s.get("streak", 0)),
            recent_successes=s["ok"],
            recent_failures=s["bad"],
            ttft=s.get("ttft"),
            ttft_quantile=self._quantile(s),
            throughput=s.get("tput"),
            failure_cost=s["fsec"] / s["fnum"] if s["fnum"] > 0 else None,
            circuit=_circuit(s, now),
            cooldown_left=self.wait(s, now),
            last_error=last_error,
        )

    def late_after(self, view: HealthView) -> float:
        """Seconds without text after which an attempt on the provider is late.

        Its time-to-first-token quantile, never less than ``late_floor``;
        ``late_unmeasured`` until it was measured.
        """
        if view.ttft_quantile is None:
            return self.late_unmeasured
        return max(self.late_floor, view.ttft_quantile)

    def circuit(self, state: State, now: float) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``."""
        return _circuit(_valid(state), now)

    def wait(self, state: State, now: float, token: float = 0.0) -> float:
        """Seconds before a call may start on this provider (0.0: now).

        ``token`` names the caller that claimed a half-open circuit's probe.
        """
        s = _valid(state)
        left = 0.0
        circuit = _circuit(s, now)
        if circuit == _OPEN:
            left = max(left, s["open_until"] - now)
        elif (
            circuit == _HALF_OPEN
            and s.get("probe_until", 0.0) > now
            and not (token and s.get("probe") == token)
        ):
            left = max(left, min(_PROBE_POLL, s["probe_until"] - now))
        return left

    # -- changes ------------------------------------------------------------------

    def claimed(self, state: State, now: float, *, token: float) -> State:
        """A call wants to start.

        A half-open circuit with no probe in flight becomes this call's probe
        (``token`` tells whose).
        """
        s = _valid(state)
        if _circuit(s, now) == _HALF_OPEN and s.get("probe_until", 0.0) <= now:
            s["probe_until"] = now + self.probe_lease
            s["probe"] = token
        return s

    def succeeded(self, state: State, now: float, *, chars: int = 0, seconds: float = 0.0) -> State:
        """A complete answer: ``chars`` of text over ``seconds`` after its first text."""
        s = self._outcome(_valid(state), now)
        s["n_ok"] = s.get("n_ok", 0) + 1
        s["ok"] += 1
        s["wok"] += 1
        s["wn"] = s.get("wn", 0) + 1
        s["streak"] = 0
        if chars > 0 and seconds > 0:
            self._average(s, "tput", chars / seconds)
        if _circuit(s, now) == _HALF_OPEN:
            _close(s)
        if _circuit(s, now) == _CLOSED:
            s.pop("openings", None)  # a complete answer: the next opening starts afresh
        return s

    def failed(
        self,
        state: State,
        now: float,
        *,
        seconds: float | None = None,
        retry_after: float | None = None,
    ) -> State:
        """A failed call, ``seconds`` after it started (when known).

        ``retry_after``: the server asked not to be called again before that many
        seconds. It is the floor of the cooldown when the circuit opens or is open
        (up to ``max_cooldown``); one 429 alone does not hold the provider for every
        call (the failed attempt's own retry waits for it, see
        :mod:`langchain_g4f._race`).
        """
        s = self._outcome(_valid(state), now)
        s["n_bad"] = s.get("n_bad", 0) + 1
        s["bad"] += 1
        s["wbad"] += 1
        s["wn"] = s.get("wn", 0) + 1
        s["streak"] = s.get("streak", 0) + 1
        if seconds is not None and seconds >= 0:
            s["fsec"] += seconds
            s["fnum"] += 1
        hold = min(retry_after or 0.0, self.max_cooldown)
        circuit = _circuit(s, now)
        if circuit == _HALF_OPEN or (circuit == _CLOSED and self._trips(s)):
            self._open(s, now, hold)
        elif circuit == _OPEN:
            s["open_until"] = max(s["open_until"], now + hold)
        return s

    def cancelled(self, state: State, now: float, *, token: float = 0.0) -> State:
        """The call was abandoned by its caller: no outcome.

        If it was the half-open circuit's probe (it claimed with ``token``), the
        slot is free for the next call; any other attempt ending frees nothing.
        """
        s = _valid(state)
        if token and s.get("probe") == token:
            s.pop("probe_until", None)
            s.pop("probe", None)
        return s

    def timed_first_token(self, state: State, now: float, *, seconds: float) -> State:
        """The first text came ``seconds`` after the attempt started.

        A half-open circuit closes: its probe got an answer going.
        """
        s = _valid(state)
        self._average(s, "ttft", seconds)
        self._log_ttft(s, seconds)
        if _circuit(s, now) == _HALF_OPEN:
            _close(s)
        return s

    def censored_first_token(
        self, state: State, now: float, *, seconds: float, token: float = 0.0
    ) -> State:
        """The attempt lost a race after ``seconds`` without text.

        Its time to first token is at least that; the attempt ends without an
        outcome. A bound above the average time to first token becomes the
        average, and one above the typical time widens the quantile; one below
        says nothing new. A wait past the provider's quantile is most likely a
        stall (a failure, not a slow first token): it counts as the quantile, and
        only moves the average towards it, so one stall does not make a fast
        provider look slow.
        """
        s = self.cancelled(state, now, token=token)
        quantile = self._quantile(s)
        stalled = quantile is not None and seconds > quantile
        bound = min(seconds, quantile) if quantile is not None else seconds
        if "ttft" not in s or (bound > s["ttft"] and not stalled):
            s["ttft"] = bound
        elif bound > s["ttft"]:
            self._average(s, "ttft", bound)
        if s.get("ln", 0) > 0 and _log(bound) > s["lm"]:
            self._log_ttft(s, bound)
        return s

    # -- helpers ------------------------------------------------------------------

    def _aged(self, s: State, now: float) -> State:
        """``s`` with its decayed weights brought to ``now`` (in place)."""
        last = s.get("t", now)
        factor = 0.5 ** (max(0.0, now - last) / self.half_life)
        for field in _WEIGHTS:
            s[field] = s.get(field, 0.0) * factor
        s["t"] = max(last, now)
        return s

    def _outcome(self, s: State, now: float) -> State:
        """``s`` aged to ``now`` and by one more outcome (in place)."""
        s = self._aged(s, now)
        factor = 0.5 ** (1.0 / self.call_half_life)
        s["ok"] *= factor
        s["bad"] *= factor
        return s

    def _average(self, s: State, field: str, value: float) -> None:
        old = s.get(field)
        s[field] = value if old is None else self.alpha * value + (1 - self.alpha) * old

    def _log_ttft(self, s: State, seconds: float) -> None:
        """Fold one time to first token into the decayed mean and variance of its log."""
        x = _log(seconds)
        if s.get("ln", 0) <= 0:
            s["lm"], s["lv"] = x, self.ttft_prior_sigma**2
        else:
            delta = x - s["lm"]
            s["lm"] += self.ttft_alpha * delta
            s["lv"] = (1 - self.ttft_alpha) * (s["lv"] + self.ttft_alpha * delta * delta)
        s["ln"] = s.get("ln", 0) + 1

    def _quantile(self, s: State) -> float | None:
        if s.get("ln", 0) <= 0:
            return None
        z = statistics.NormalDist().inv_cdf(self.ttft_quantile)
        return math.exp(s["lm"] + z * math.sqrt(max(0.0, s["lv"])))

    def _trips(self, s: State) -> bool:
        if s["streak"] >= self.cooldown_after:
            return True
        if s["wn"] < self.min_calls:
            return False
        return s["wbad"] >= self.failure_threshold * (s["wok"] + s["wbad"])

    def _open(self, s: State, now: float, retry_after: float) -> None:
        s["openings"] = s.get("openings", 0) + 1
        pause = max(self.cooldown_seconds(int(s["openings"])), retry_after)
        s["tripped"] = 1
        s["open_until"] = now + pause
        s.pop("probe_until", None)
        s.pop("probe", None)


def _valid(state: State) -> State:
    """A copy of ``state``, or an empty state if it is not one this model wrote."""
    if state.get("v") != STATE_VERSION or not all(_number(v) for v in state.values()):
        return {"v": STATE_VERSION}
    return dict(state)


def _log(seconds: float) -> float:
    return math.log(max(seconds, 1e-3))  # a millisecond at least: no log(0)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _circuit(s: State, now: float) -> str:
    if not s.get("tripped"):
        return _CLOSED
    return _OPEN if now < s.get("open_until", 0.0) else _HALF_OPEN


def _close(s: State) -> None:
    for field in ("tripped", "open_until", "probe_until", "probe"):
        s.pop(field, None)
    s["wok"] = s["wbad"] = 0.0
    s["wn"] = s["streak"] = 0


# --- the router's health -------------------------------------------------------------


class Health:
    """Per-provider health of one router: a :class:`HealthPolicy` over a store.

    Safe to share between threads and asyncio tasks: every change is one atomic
    store update with no I/O in a memory store. ``clock`` is used only for the
    default :class:`~langchain_g4f.store.MemoryStore`; with a store of your own,
    times come from ``store.now()``.
    """

    def __init__(
        self,
        names: Iterable[str],
        policy: HealthPolicy | None = None,
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names = list(names)
        self.policy = policy or HealthPolicy()
        self.store: Store = store if store is not None else MemoryStore(clock)
        self._errors: dict[str, str] = {}  # last error text per provider, this process only
        self._lock = threading.Lock()
        self._tokens = random.Random()

    # -- reading ------------------------------------------------------------------

    def views(self) -> dict[str, HealthView]:
        """A snapshot of every provider's health."""
        states = self.store.read(self.names)
        now = self.store.now()
        with self._lock:
            errors = dict(self._errors)
        return {name: self.policy.view(states[name], now, errors.get(name)) for name in self.names}

    def view(self, key: str) -> HealthView:
        """A snapshot of ``key``'s health."""
        state = self.store.read([key])[key]
        with self._lock:
            error = self._errors.get(key)
        return self.policy.view(state, self.store.now(), error)

    def cooldown_left(self, key: str) -> float:
        """Seconds before a call may try ``key`` (see :attr:`HealthView.cooldown_left`)."""
        return self.view(key).cooldown_left

    def cooldown_seconds(self, openings: int) -> float:
        """The policy's cooldown for the ``openings``-th opening in a row."""
        return self.policy.cooldown_seconds(openings)

    def late_after(self, key: str) -> float:
        """Seconds without text after which an attempt on ``key`` is late.

        See :meth:`HealthPolicy.late_after`.
        """
        return self.policy.late_after(self.view(key))

    def token(self) -> float:
        """A fresh token naming one attempt (see :meth:`claim`)."""
        with self._lock:
            return float(self._tokens.getrandbits(52) + 1)

    def claim(self, key: str, token: float = 0.0) -> float:
        """Ask to start a call on ``key`` now, as the attempt named ``token``.

        Returns 0.0 if it may (if its circuit is half-open, this call is now its one
        probe, freed by :meth:`record_cancelled` with the same token), else seconds
        to wait before asking again. Without a token the claim gets one of its own,
        and only an outcome or the lease's end frees a probe slot it took.
        """
        state, now = self.store.read([key])[key], self.store.now()
        wait = self.policy.wait(state, now)
        if wait > 0 or self.policy.circuit(state, now) == _CLOSED:
            return wait
        token = token or self.token()
        state = self.store.update(key, partial(self.policy.claimed, token=token), sync=True)
        return self.policy.wait(state, self.store.now(), token)

    def stats(self) -> dict[str, dict[str, object]]:
        """Every provider's figures, for operators.

        Per provider: ``successes``, ``failures`` (observed, lifetime),
        ``consecutive_failures``, ``cooldown_left`` (s), ``ttft`` (s or None),
        ``last_error``, ``success_rate`` (the observed share of recent calls that
        succeeded, each weighed by its age; None before any), ``recent_calls``
        (the weight of those calls), ``throughput`` (chars/s or None),
        ``failure_cost`` (s or None), ``circuit``.
        """
        return {
            name: {
                "successes": view.successes,
                "failures": view.failures,
                "consecutive_failures": view.consecutive_failures,
                "cooldown_left": view.cooldown_left,
                "ttft": view.ttft,
                "last_error": view.last_error,
                "success_rate": 1.0 - view.failure_rate if view.volume > 0 else None,
                "recent_calls": view.volume,
                "throughput": view.throughput,
                "failure_cost": view.failure_cost,
                "circuit": view.circuit,
            }
            for name, view in self.views().items()
        }

    # -- observations ---------------------------------------------------------------

    def record_ttft(self, key: str, seconds: float) -> None:
        """The attempt won: its first text came ``seconds`` after it started."""
        self.store.update(key, partial(self.policy.timed_first_token, seconds=seconds))

    def record_censored_ttft(self, key: str, seconds: float, token: float = 0.0) -> None:
        """The attempt lost a hedge race, still without text ``seconds`` after it started.

        It ends without an outcome (a probe, claimed with ``token``, frees its slot).
        """
        change = partial(self.policy.censored_first_token, seconds=seconds, token=token)
        self.store.update(key, change)

    def record_success(self, key: str, *, chars: int = 0, seconds: float = 0.0) -> None:
        """A complete answer: ``chars`` of text over ``seconds`` after its first text."""
        self.store.update(key, partial(self.policy.succeeded, chars=chars, seconds=seconds))

    def record_failure(
        self,
        key: str,
        error: BaseException,
        *,
        after_text: bool = False,
        seconds: float | None = None,
        token: float = 0.0,
    ) -> float:
        """Count a failure; return the seconds before the provider may be tried again.

        ``after_text``: the stream broke after text had started; ``seconds``: how long
        after the attempt started it showed. A
        :class:`~langchain_g4f.errors.ConfigurationError` is the request's fault and
        counts as nothing. A connection error or a timeout may be this host's own
        fault: with a shared store it counts for the fleet only once two hosts saw
        one. ``token``: the attempt's claim (a configuration error frees its probe slot).
        """
        if isinstance(error, ConfigurationError):
            self.record_cancelled(key, token)
            return self.cooldown_left(key)
        with self._lock:
            self._errors[key] = f"{type(error).__name__}: {error}"
        retry_after = getattr(error, "retry_after", None)
        if not isinstance(retry_after, (int, float)):
            retry_after = None
        change = partial(self.policy.failed, seconds=seconds, retry_after=retry_after)
        # A network failure may be this host's own: shared once two hosts see one.
        hosts = 2 if isinstance(error, (ProviderConnectionError, ProviderTimeoutError)) else 1
        state = self.store.update(key, change, hosts=hosts)
        return self.policy.wait(state, self.store.now())

    def record_cancelled(self, key: str, token: float = 0.0) -> None:
        """The caller abandoned the call: neither a success nor a failure.

        A probe (claimed with ``token``) frees its slot.
        """
        self.store.update(key, partial(self.policy.cancelled, token=token))
