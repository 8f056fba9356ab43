"""The health model, the strategies and the schedule, fed observations and times.

No sockets and no sleeps: every clock is a number the test moves, every random choice
comes from a seeded ``random.Random``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections import Counter
from functools import partial
from typing import Any

import pytest

from langchain_g4f._race import Attempt, Entry, Request, Schedule
from langchain_g4f.errors import (
    ConfigurationError,
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderTimeoutError,
    RateLimitError,
)
from langchain_g4f.health import STATE_VERSION, Health, HealthPolicy, HealthView
from langchain_g4f.store import MemoryStore
from langchain_g4f.strategies import ExtraRequests, FastestStrategy, PriorityStrategy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def health_of(clock: Clock, *names: str, **policy: Any) -> Health:
    return Health(names or ["a"], HealthPolicy(**policy), store=MemoryStore(clock))


RESET = ProviderConnectionError("connection reset", provider="a")
STALL = ProviderTimeoutError("no data for 10s", provider="a")


def feed(health: Health, key: str, pattern: str, *, clock: Clock, step: float = 0.1) -> None:
    """``pattern``: ``s`` a success, ``f`` a failure, one every ``step`` seconds."""
    for outcome in pattern:
        clock.now += step
        if outcome == "s":
            health.record_success(key)
        else:
            health.record_failure(key, RESET, seconds=0.01)


# --- the circuit breaker ----------------------------------------------------------


@pytest.mark.parametrize("pattern", ["ssssf" * 2, "ssf" * 4, "sfssf" * 2])
def test_a_failure_rate_opens_the_circuit_without_a_streak(clock: Clock, pattern: str) -> None:
    health = health_of(clock)  # defaults: 20 % over >= 10 recent calls, or 2 in a row

    feed(health, "a", pattern, clock=clock)

    view = health.view("a")
    assert view.consecutive_failures <= 1  # no streak ever
    assert view.circuit == "open"
    assert view.cooldown_left > 0


def test_concurrent_successes_do_not_reset_a_failing_provider(clock: Clock) -> None:
    health = health_of(clock)
    for _ in range(4):  # one call fails while two others, running at the same time, succeed
        health.record_failure("a", RESET)
        health.record_success("a")
        health.record_success("a")
    assert health.view("a").circuit == "open"


def test_a_reliable_provider_stays_closed(clock: Clock) -> None:
    health = health_of(clock)
    feed(health, "a", "sssssssssssssssssssf" * 5, clock=clock)  # 5 %
    assert health.view("a").circuit == "closed"


def test_below_the_minimum_volume_only_a_streak_opens(clock: Clock) -> None:
    health = health_of(clock)
    feed(health, "a", "sf", clock=clock)
    assert health.view("a").circuit == "closed"  # 50 %, but 2 calls are too few
    feed(health, "a", "f", clock=clock)
    feed(health, "a", "f", clock=clock)
    assert health.view("a").circuit == "open"  # two in a row


def test_old_failures_fade_with_the_half_life(clock: Clock) -> None:
    health = health_of(clock, half_life=10.0)
    feed(health, "a", "f", clock=clock, step=0)
    assert health.view("a").recent_failures == pytest.approx(1.0)
    clock.now += 10.0
    assert health.view("a").recent_failures == pytest.approx(0.5)
    clock.now += 20.0
    assert health.view("a").recent_failures == pytest.approx(0.125)
    assert health.view("a").failures == 1  # the lifetime count stays


def test_old_outcomes_also_fade_with_newer_ones(clock: Clock) -> None:
    # Drift on a busy provider: a hundred successes in a few seconds, then it fails
    # seven calls in ten. Within tens of calls its failure rate says so.
    health = health_of(clock, call_half_life=20.0, failure_threshold=1.0, cooldown_after=10**6)
    feed(health, "a", "s" * 100, clock=clock, step=0.01)
    assert health.view("a").failure_rate == 0.0
    feed(health, "a", "fsfffsfffs" * 3, clock=clock, step=0.01)
    assert health.view("a").failure_rate > 0.4  # by the time half-life alone: 0.16
    policy = HealthPolicy(call_half_life=20.0)
    one = policy.succeeded({"v": STATE_VERSION}, 0.0)
    assert policy.failed(one, 0.0)["ok"] == pytest.approx(0.5 ** (1 / 20))


def half_open(health: Health, clock: Clock) -> None:
    clock.now += health.view("a").cooldown_left
    assert health.view("a").circuit == "half_open"


def test_cooldowns_double_per_consecutive_opening_and_are_capped(clock: Clock) -> None:
    health = health_of(clock, cooldown=5.0, max_cooldown=30.0)
    feed(health, "a", "ff", clock=clock)
    cooldowns = [health.view("a").cooldown_left]
    for _ in range(4):
        half_open(health, clock)
        assert health.claim("a") == 0.0
        health.record_failure("a", RESET)  # the probe failed
        cooldowns.append(health.view("a").cooldown_left)
    assert cooldowns == pytest.approx([5.0, 10.0, 20.0, 30.0, 30.0])

    half_open(health, clock)
    assert health.claim("a") == 0.0
    health.record_ttft("a", 0.2)  # the probe's first text closes it ...
    assert health.view("a").circuit == "closed"
    health.record_failure("a", RESET, after_text=True)  # ... but its answer broke
    health.record_failure("a", RESET)
    assert health.view("a").cooldown_left == pytest.approx(30.0)  # still in a row

    half_open(health, clock)
    assert health.claim("a") == 0.0
    health.record_success("a")  # a complete answer closes it ...
    assert health.view("a").circuit == "closed"
    feed(health, "a", "ff", clock=clock)
    assert health.view("a").cooldown_left == pytest.approx(5.0)  # ... the next opening: afresh


def test_retry_after_is_the_floor_of_a_cooldown(clock: Clock) -> None:
    health = health_of(clock, cooldown=5.0)
    limited = RateLimitError("slow down", provider="a", status=429, retry_after=42.0)
    health.record_failure("a", RESET)
    assert health.record_failure("a", limited) == 42.0
    view = health.view("a")
    assert view.circuit == "open"
    assert view.cooldown_left == 42.0


def test_retry_after_is_honoured_up_to_the_longest_cooldown(clock: Clock) -> None:
    health = health_of(clock, max_cooldown=60.0)
    health.record_failure("a", RESET)
    health.record_failure(
        "a", RateLimitError("tomorrow", provider="a", status=429, retry_after=86400.0)
    )
    assert health.view("a").cooldown_left == 60.0


def test_one_429_does_not_hold_a_healthy_provider_for_every_call(clock: Clock) -> None:
    health = health_of(clock)
    feed(health, "a", "s" * 10, clock=clock)
    health.record_failure("a", RateLimitError("wait", provider="a", status=429, retry_after=3.0))
    view = health.view("a")
    assert view.circuit == "closed"
    assert view.cooldown_left == 0.0
    assert health.claim("a") == 0.0


def test_a_429_while_the_circuit_is_open_extends_the_cooldown(clock: Clock) -> None:
    health = health_of(clock, cooldown=5.0)
    feed(health, "a", "ff", clock=clock)
    assert health.view("a").cooldown_left == 5.0
    health.record_failure("a", RateLimitError("wait", provider="a", status=429, retry_after=9.0))
    assert health.view("a").circuit == "open"
    assert health.view("a").cooldown_left == 9.0


def test_half_open_admits_exactly_one_probe(clock: Clock) -> None:
    health = health_of(clock)
    feed(health, "a", "ff", clock=clock)
    assert health.claim("a") == 5.0  # open: wait for the cooldown
    half_open(health, clock)

    assert health.claim("a") == 0.0  # the probe
    assert all(health.claim("a") > 0 for _ in range(5))  # everyone else waits
    assert health.view("a").cooldown_left > 0
    health.record_success("a")
    assert health.view("a").circuit == "closed"
    assert [health.claim("a") for _ in range(3)] == [0.0, 0.0, 0.0]


def end_without_outcome(health: Health, release: str, token: float) -> None:
    """An attempt of ``a`` ends without telling whether ``a`` works, as ``release`` says."""
    if release == "cancelled":
        health.record_cancelled("a", token=token)
    elif release == "censored":
        health.record_censored_ttft("a", 0.4, token=token)
    else:
        health.record_failure("a", ConfigurationError("bad request"), token=token)


@pytest.mark.parametrize("release", ["cancelled", "censored", "configuration"])
def test_a_probe_that_ends_without_an_outcome_frees_the_slot(clock: Clock, release: str) -> None:
    health = health_of(clock)
    feed(health, "a", "ff", clock=clock)
    half_open(health, clock)
    assert health.claim("a", token=7.0) == 0.0
    assert health.claim("a", token=8.0) > 0

    end_without_outcome(health, release, token=7.0)

    assert health.view("a").circuit == "half_open"
    assert health.claim("a", token=8.0) == 0.0  # the next call probes


@pytest.mark.parametrize("release", ["cancelled", "censored", "configuration"])
def test_only_the_probe_itself_frees_the_probe_slot(clock: Clock, release: str) -> None:
    # An ordinary attempt, started before the circuit opened, ends without an outcome
    # while another call holds the half-open circuit's probe: the slot stays taken.
    health = health_of(clock)
    feed(health, "a", "ff", clock=clock)
    half_open(health, clock)
    assert health.claim("a", token=7.0) == 0.0  # the probe

    end_without_outcome(health, release, token=3.0)
    health.record_cancelled("a")  # an attempt that never claimed

    assert health.claim("a", token=8.0) > 0  # still one probe at a time


def test_a_lost_probe_expires_after_its_lease(clock: Clock) -> None:
    health = health_of(clock, probe_lease=30.0)
    feed(health, "a", "ff", clock=clock)
    half_open(health, clock)
    assert health.claim("a") == 0.0  # and this process dies
    clock.now += 30.0
    assert health.claim("a") == 0.0


def test_cancellations_count_as_nothing(clock: Clock) -> None:
    health = health_of(clock)
    feed(health, "a", "sf", clock=clock)
    before = health.view("a")
    for _ in range(10):
        health.record_cancelled("a")
    assert health.view("a") == before

    feed(health, "a", "ff", clock=clock)
    cooling = health.view("a")
    health.record_cancelled("a")
    assert health.view("a") == cooling  # a cancellation does not end a cooldown


def test_configuration_errors_count_as_nothing(clock: Clock) -> None:
    health = health_of(clock)
    for _ in range(5):
        assert health.record_failure("a", ConfigurationError("image input")) == 0.0
    assert health.view("a") == HealthView()


def test_mid_stream_failures_count_as_failures(clock: Clock) -> None:
    health = health_of(clock)
    health.record_failure("a", RESET, after_text=True)
    health.record_failure("a", RESET, after_text=True)
    view = health.view("a")
    assert view.failures == 2
    assert view.circuit == "open"
    assert view.last_error == f"ProviderConnectionError: {RESET}"


def test_a_hedge_loser_raises_its_time_to_first_token(clock: Clock) -> None:
    health = health_of(clock)
    health.record_censored_ttft("a", 0.3)
    assert health.view("a").ttft == 0.3  # unmeasured: at least 0.3 s
    for _ in range(5):
        health.record_ttft("a", 0.05)
    fast = health.view("a").ttft
    assert fast < 0.1

    quantile = health.view("a").ttft_quantile
    health.record_censored_ttft("a", 0.2)  # lost a race after 0.2 s without text
    raised = health.view("a").ttft
    assert raised == 0.2
    health.record_censored_ttft("a", 0.02)  # a lower bound below the estimate says nothing
    assert health.view("a").ttft == raised
    assert health.view("a").volume == 0.0  # and no outcome was counted

    health.record_censored_ttft("a", 30.0)  # a stall: counted as the quantile, no more
    assert raised < health.view("a").ttft < quantile


def test_throughput_and_failure_cost_are_averages(clock: Clock) -> None:
    health = health_of(clock, alpha=0.5)
    health.record_success("a", chars=1000, seconds=2.0)
    health.record_success("a", chars=1000, seconds=1.0)
    health.record_failure("a", STALL, seconds=10.0)
    health.record_failure("a", RESET, seconds=0.0)
    view = health.view("a")
    assert view.throughput == pytest.approx(750.0)
    assert view.failure_cost == pytest.approx(5.0)


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"v": STATE_VERSION},
        {"v": 99, "ok": 3.0, "something_new": 1.0},
        {"ok": 5.0, "bad": 1.0},  # no version
        {"v": STATE_VERSION, "ok": "many"},
        {"v": STATE_VERSION, "ttft": float("nan")},
        {"v": STATE_VERSION, "tripped": True},
    ],
)
def test_an_unknown_state_reads_as_empty(clock: Clock, state: dict) -> None:
    store = MemoryStore(clock)
    store.update("a", lambda old, now: dict(state))
    health = Health(["a"], store=store)

    assert health.views()["a"] == HealthView()
    assert health.claim("a") == 0.0
    health.record_failure("a", RESET)
    health.record_success("a", chars=10, seconds=1.0)
    health.record_ttft("a", 0.2)
    health.record_censored_ttft("a", 0.3)
    health.record_cancelled("a")
    view = health.view("a")
    assert (view.successes, view.failures, view.ttft) == (1, 1, 0.3)


def test_missing_fields_take_their_defaults(clock: Clock) -> None:
    store = MemoryStore(clock)
    store.update("a", lambda old, now: {"v": STATE_VERSION, "n_ok": 4, "tripped": 1})
    view = Health(["a"], store=store).view("a")
    assert view.successes == 4
    assert view.recent_successes == 0.0
    assert view.circuit == "half_open"
    assert view.ttft is None


def test_changes_are_pure_and_states_are_numbers() -> None:
    policy = HealthPolicy()
    state: dict[str, float] = {}
    for change in (
        partial(policy.failed, seconds=1.0, retry_after=2.0),
        partial(policy.failed, seconds=1.0),
        partial(policy.claimed, token=7.0),
        partial(policy.succeeded, chars=10, seconds=0.5),
        partial(policy.timed_first_token, seconds=0.2),
        partial(policy.censored_first_token, seconds=0.3),
        policy.cancelled,
    ):
        frozen = dict(state)
        new = change(state, 100.0)
        assert state == frozen  # the argument is left alone
        assert new == change(dict(frozen), 100.0)  # same input, same output
        assert all(type(v) in (int, float) for v in new.values())
        state = new


def test_policy_validation() -> None:
    for bad in (
        {"half_life": 0},
        {"failure_threshold": 0},
        {"failure_threshold": 1.5},
        {"min_calls": 0},
        {"cooldown": 10, "max_cooldown": 5},
    ):
        with pytest.raises(ConfigurationError):
            HealthPolicy(**bad)


# --- strategies --------------------------------------------------------------------


def test_fastest_prefers_a_reliable_provider_over_a_fast_flaky_one(clock: Clock) -> None:
    health = health_of(clock, "fast", "steady", failure_threshold=1.0, cooldown_after=10**6)
    for call in range(50):
        clock.now += 0.2
        health.record_ttft("steady", 0.3)
        health.record_success("steady", chars=500, seconds=1.0)
        if call % 5 == 4:  # one call in five stalls for 10 s
            health.record_failure("fast", STALL, seconds=10.0)
        else:
            health.record_ttft("fast", 0.05)
            health.record_success("fast", chars=500, seconds=1.0)
    views = health.views()
    assert views["fast"].ttft < views["steady"].ttft
    assert views["fast"].circuit == "closed"

    assert FastestStrategy(NONE).order(["fast", "steady"], views) == ["steady", "fast"]


def test_fastest_ranks_equally_reliable_providers_by_speed(clock: Clock) -> None:
    health = health_of(clock, "slow", "quick", "slow_stream")
    for _ in range(10):
        health.record_ttft("slow", 0.8)
        health.record_success("slow", chars=1000, seconds=1.0)
        health.record_ttft("quick", 0.1)
        health.record_success("quick", chars=1000, seconds=1.0)
        health.record_ttft("slow_stream", 0.1)
        health.record_success("slow_stream", chars=1000, seconds=10.0)
    order = FastestStrategy(NONE).order(["slow", "slow_stream", "quick"], health.views())
    assert order == ["quick", "slow", "slow_stream"]


#: No budget: no exploration beyond providers never tried.
NONE = ExtraRequests(share=0.0)


def measured(ttft: float = 0.1, **fields: Any) -> HealthView:
    return HealthView(ttft=ttft, successes=10, recent_successes=10.0, **fields)


def test_fastest_tries_an_unmeasured_faster_provider_first(clock: Clock) -> None:
    # Finding 1: A answers after 700 ms, B was never measured; B goes first at once,
    # and once measured fast it keeps the calls.
    views = {"a": measured(0.7), "b": HealthView()}
    strategy = FastestStrategy(NONE)
    assert strategy.order(["a", "b"], views)[0] == "b"  # never tried: tried once
    views["b"] = measured(0.05)
    assert all(strategy.order(["a", "b"], views)[0] == "b" for _ in range(8))


def test_a_provider_never_tried_goes_first_once_then_only_on_the_budget() -> None:
    views = {"known": measured(0.5), "new": HealthView()}
    strategy = FastestStrategy(ExtraRequests(share=0.0))
    firsts = Counter(strategy.order(["known", "new"], views)[0] for _ in range(100))
    assert firsts == {"new": 1, "known": 99}  # while its answer is still on the way
    assert strategy.order(["known", "new"], views) == ["known", "new"]


def test_exploration_spends_from_the_budget_and_stops_when_it_is_spent() -> None:
    budget = ExtraRequests(share=0.05, burst=2.0)
    views = {"a": measured(0.2), "b": measured(0.3), "x": HealthView(), "y": HealthView()}
    strategy = FastestStrategy(budget)
    strategy.order(["x", "y", "a", "b"], views)  # x and y tried once each (warm-up)
    strategy.order(["x", "y", "a", "b"], views)
    firsts = Counter()
    for _ in range(1000):
        budget.earn()
        firsts[strategy.order(["x", "y", "a", "b"], views)[0]] += 1
    assert firsts["x"] + firsts["y"] <= 0.05 * 1000 + 2  # never more than the budget
    assert firsts["a"] >= 940


def test_a_provider_measured_bad_is_not_explored_again() -> None:
    bad = HealthView(ttft=0.01, failures=6, recent_failures=6.0, failure_cost=0.01)
    views = {"good": measured(0.5), "bad": bad}
    budget = ExtraRequests(share=1.0, burst=100.0)
    strategy = FastestStrategy(budget)
    assert all(strategy.order(["bad", "good"], views) == ["good", "bad"] for _ in range(50))


def test_a_provider_measured_bad_is_explored_again_once_its_record_fades() -> None:
    # Drift: a provider that failed may have recovered. What is known of a provider
    # no call reached fades with the calls that went elsewhere.
    bad = HealthView(ttft=0.1, failures=3, recent_failures=3.0, failure_cost=0.01)
    views = {"good": measured(0.5), "bad": bad}
    strategy = FastestStrategy(ExtraRequests(share=1.0, burst=100.0), idle_half_life=10)
    firsts = [strategy.order(["good", "bad"], views)[0] for _ in range(100)]
    assert firsts[:10] == ["good"] * 10
    assert "bad" in firsts


def test_one_exploration_of_a_provider_at_a_time() -> None:
    # Concurrent calls see the same record until the exploring call's outcome comes:
    # they do not each spend a request to learn the same thing.
    thin = HealthView(ttft=0.05, successes=3, failures=1, recent_successes=3.0, recent_failures=1.0)
    views = {"steady": measured(0.5), "fast": thin}
    budget = ExtraRequests(share=1.0, burst=100.0)
    strategy = FastestStrategy(budget, idle_half_life=40)
    firsts = [strategy.order(["steady", "fast"], views)[0] for _ in range(30)]
    assert firsts == ["fast"] + ["steady"] * 29
    assert budget._saved == 99.0  # one request spent
    views["fast"] = dataclasses.replace(thin, successes=4, recent_successes=4.0)  # it answered
    assert strategy.order(["steady", "fast"], views)[0] == "fast"
    # An exploration whose outcome never comes (a cancelled call) holds for
    # idle_half_life calls at most.
    firsts = [strategy.order(["steady", "fast"], views)[0] for _ in range(45)]
    assert firsts.count("fast") == 1
    assert firsts.index("fast") == 40


def test_a_promising_provider_is_explored_while_its_data_is_thin() -> None:
    # 1 failure in 4 calls: perhaps 25 % failing, perhaps much less; fast when it answers
    thin = HealthView(ttft=0.05, successes=3, failures=1, recent_successes=3.0, recent_failures=1.0)
    thick = dataclasses.replace(
        thin, successes=75, failures=25, recent_successes=75.0, recent_failures=25.0
    )
    views = {"steady": measured(0.5), "fast": thin}
    assert FastestStrategy(ExtraRequests(1.0)).order(["steady", "fast"], views)[0] == "fast"
    views["fast"] = thick  # known to fail one call in four: not worth a request
    assert FastestStrategy(ExtraRequests(1.0)).order(["steady", "fast"], views)[0] == "steady"


def test_fastest_ranks_a_recovering_provider_by_its_cost_failures_included() -> None:
    recovering = HealthView(
        ttft=0.05,
        successes=10,
        failures=4,
        recent_successes=10.0,
        recent_failures=4.0,
        failure_cost=0.01,
        circuit="half_open",
    )
    views = {"recovering": recovering, "slow": measured(5.0)}
    strategy = FastestStrategy(NONE)
    assert strategy.order(["slow", "recovering"], views) == ["recovering", "slow"]
    stalling = dataclasses.replace(recovering, failure_cost=10.0)
    views["recovering"] = stalling
    assert strategy.order(["slow", "recovering"], views) == ["slow", "recovering"]


def test_fastest_spreads_the_first_calls_over_the_providers() -> None:
    # Finding 3: calls started before anything is measured do not all go to the first
    # listed provider (which may be down).
    strategy = FastestStrategy(NONE)
    views = {name: HealthView() for name in "cab"}
    firsts = Counter(strategy.order(["c", "a", "b"], views)[0] for _ in range(30))
    assert firsts == {"c": 10, "a": 10, "b": 10}
    assert strategy.order(["c", "a", "b"], views) == ["c", "a", "b"]  # then round again


def test_priority_demotes_a_failing_first_provider_and_restores_it(clock: Clock) -> None:
    # a breaker that never opens, so the strategy alone must notice
    health = health_of(
        clock,
        "first",
        "second",
        "third",
        failure_threshold=1.0,
        cooldown_after=10**6,
        half_life=30.0,
    )
    strategy = PriorityStrategy(explore=0)
    names = ["first", "second", "third"]
    assert strategy.order(names, health.views()) == names

    feed(health, "first", "sfsfs" * 4, clock=clock)  # 40 % failing
    feed(health, "second", "s" * 20, clock=clock, step=0)
    assert strategy.order(names, health.views()) == ["second", "third", "first"]

    feed(health, "first", "s" * 30, clock=clock, step=2.0)  # it recovered
    assert strategy.order(names, health.views()) == names


def test_priority_moves_an_open_circuit_behind_and_explores_it(clock: Clock) -> None:
    views = {"a": HealthView(circuit="half_open", failures=2), "b": HealthView(), "c": HealthView()}
    assert PriorityStrategy(explore=0).order(["a", "b", "c"], views) == ["b", "c", "a"]
    strategy = PriorityStrategy(rng=random.Random(3))
    firsts = Counter(strategy.order(["a", "b", "c"], views)[0] for _ in range(1000))
    assert 20 < firsts["a"] < 80
    assert firsts["a"] + firsts["b"] == 1000
    everyone_failing = {name: HealthView(circuit="half_open") for name in "ab"}
    assert PriorityStrategy().order(["b", "a"], everyone_failing) == ["b", "a"]


# --- the schedule --------------------------------------------------------------------


def entries(*keys: str) -> list[Entry]:
    return [Entry(key, chat=None, provider=None) for key in keys]  # type: ignore[arg-type]


def schedule_of(
    health: Health, ready: list[Entry], *, waiting: Any = (), deadline: float = 10.0, **kw: Any
) -> Schedule:
    request = Request([], None, {}, None, deadline, deadline)
    kw.setdefault("max_retries", 1)
    kw.setdefault("backoff", 0.5)
    kw.setdefault("hedge_after", None)
    return Schedule(ready, list(waiting), request=request, health=health, **kw)


def keys(schedule: Schedule) -> list[str]:
    return [attempt.entry.key for attempt in schedule.running]


@pytest.mark.parametrize(
    "error",
    [
        RateLimitError("slow down", provider="a", status=429, retry_after=3.0),
        ProviderTimeoutError("read timed out", provider="a"),
        ProviderHTTPError("overloaded", provider="a", status=503),
    ],
)
def test_a_retryable_failure_moves_on_at_once(clock: Clock, error: Exception) -> None:
    health = health_of(clock, "a", "b")
    schedule = schedule_of(health, entries("a", "b"))
    first = schedule.next_action(0.0)
    assert isinstance(first, Attempt)
    assert first.entry.key == "a"

    schedule.failed(first, error, 0.1)

    second = schedule.next_action(0.1)
    assert isinstance(second, Attempt)
    assert (second.entry.key, second.number) == ("b", 0)


def test_the_retry_comes_when_nobody_else_can_start(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    schedule = schedule_of(health, entries("a", "b"))
    a = schedule.next_action(0.0)
    schedule.failed(a, RateLimitError("slow", provider="a", status=429, retry_after=3.0), 0.1)
    b = schedule.next_action(0.1)
    schedule.failed(b, ProviderHTTPError("bad", provider="b", status=401), 0.2)

    clock.now = 0.2
    wait = schedule.next_action(0.2)
    assert wait == pytest.approx(2.9)  # a's Retry-After
    clock.now = 3.1
    retry = schedule.next_action(3.1)
    assert isinstance(retry, Attempt)
    assert (retry.entry.key, retry.number) == ("a", 1)


def test_a_provider_due_goes_before_a_retry_due(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    schedule = schedule_of(health, entries("a"), waiting=[(0.3, entries("b")[0])])
    a = schedule.next_action(0.0)
    schedule.failed(a, ProviderHTTPError("bad", provider="a", status=503), 0.1)
    assert schedule.next_action(0.1) == pytest.approx(0.2)  # b's turn comes first
    clock.now = 1.0  # the retry (0.25-0.5 s after the failure) is due too
    b = schedule.next_action(1.0)
    assert isinstance(b, Attempt)
    assert b.entry.key == "b"


def test_a_retry_does_not_wait_for_a_provider_cooling_down_longer(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    schedule = schedule_of(health, entries("a"), waiting=[(8.0, entries("b")[0])])
    a = schedule.next_action(0.0)
    schedule.failed(a, ProviderHTTPError("bad", provider="a", status=503), 0.1)
    wait = schedule.next_action(0.1)
    assert 0.25 <= wait <= 0.5  # the backoff, not b's 8 s
    clock.now = 0.7
    retry = schedule.next_action(0.7)
    assert isinstance(retry, Attempt)
    assert (retry.entry.key, retry.number) == ("a", 1)


def test_no_retry_once_the_circuit_opened(clock: Clock) -> None:
    health = health_of(clock, "a")
    health.record_failure("a", RESET)
    schedule = schedule_of(health, entries("a"), max_retries=3)
    a = schedule.next_action(0.0)
    schedule.failed(a, ProviderHTTPError("bad", provider="a", status=503), 0.1)
    assert health.view("a").circuit == "open"
    with pytest.raises(Exception, match="every provider failed"):
        schedule.next_action(0.1)


def test_hedge_losers_record_a_censored_time_to_first_token(clock: Clock) -> None:
    health = health_of(clock, "a", "b", "c")
    health.record_ttft("a", 0.05)
    schedule = schedule_of(health, entries("a", "b", "c"), hedge_after=0.5)
    assert schedule.next_action(0.0).entry.key == "a"
    assert schedule.next_action(0.0) == 0.5
    assert schedule.next_action(0.5).entry.key == "b"
    assert schedule.next_action(1.0).entry.key == "c"

    schedule.won(schedule.running[1], 1.2)  # b has text first

    views = health.views()
    assert views["b"].ttft == pytest.approx(0.7)
    # 50 ms before, at least 1.2 s now: raised towards its p99 (1.2 s is past it: a stall)
    p99 = 0.05 * math.exp(statistics.NormalDist().inv_cdf(0.99))  # one measurement, prior 1.0
    assert views["a"].ttft == pytest.approx(0.7 * 0.05 + 0.3 * p99)
    assert views["c"].ttft == pytest.approx(0.2)
    assert all(view.volume == 0 for view in views.values())  # no outcome for anyone yet


def test_the_deadline_fails_running_attempts_with_their_elapsed_time(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    schedule = schedule_of(health, entries("a", "b"), hedge_after=1.0, deadline=3.0)
    schedule.next_action(0.0)
    schedule.next_action(1.0)
    with pytest.raises(Exception, match="deadline"):
        schedule.next_action(3.0)
    views = health.views()
    assert views["a"].failure_cost == pytest.approx(3.0)
    assert views["b"].failure_cost == pytest.approx(2.0)
    assert [a["elapsed"] for a in schedule.attempts] == [3.0, 2.0]


def test_a_half_open_provider_gets_one_probe_across_calls(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    feed(health, "a", "ff", clock=clock)
    half_open(health, clock)
    first = schedule_of(health, entries("a", "b"))
    second = schedule_of(health, entries("a", "b"))

    assert first.next_action(0.0).entry.key == "a"  # the probe
    assert second.next_action(0.0).entry.key == "b"  # a is being probed: next one

    first.abandon()  # the caller went away: the slot is free again
    third = schedule_of(health, entries("a", "b"))
    assert third.next_action(0.0).entry.key == "a"


def test_an_open_provider_found_at_start_waits_its_cooldown(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    schedule = schedule_of(health, entries("a", "b"))
    feed(health, "a", "ff", clock=clock, step=0)  # opened after the call was planned
    assert schedule.next_action(0.0).entry.key == "b"


# --- the time-to-first-token quantile and auto hedging -----------------------------


def lognormal_ttfts(median: float, sigma: float, n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [median * rng.lognormvariate(0.0, sigma) for _ in range(n)]


def test_an_unmeasured_provider_is_late_after_the_conservative_default(clock: Clock) -> None:
    health = health_of(clock, "a", late_unmeasured=2.5)
    assert health.view("a").ttft_quantile is None
    assert health.late_after("a") == 2.5


@pytest.mark.parametrize(("quantile", "z"), [(0.95, 1.645), (0.99, 2.326)])
def test_the_quantile_learns_a_lognormal_one(clock: Clock, quantile: float, z: float) -> None:
    health = health_of(clock, ttft_quantile=quantile)
    for seconds in lognormal_ttfts(0.3, 0.8, 400):
        health.record_ttft("a", seconds)
    true_quantile = 0.3 * math.exp(z * 0.8)
    assert health.view("a").ttft_quantile == pytest.approx(true_quantile, rel=0.35)
    assert health.late_after("a") == health.view("a").ttft_quantile


def test_one_measurement_gives_a_wide_quantile_from_the_prior(clock: Clock) -> None:
    health = health_of(clock, ttft_prior_sigma=1.0)  # default quantile: p99
    health.record_ttft("a", 0.5)
    assert health.view("a").ttft_quantile == pytest.approx(0.5 * 10.24, rel=0.01)  # exp(2.326)


def test_a_fast_provider_is_never_late_before_the_floor(clock: Clock) -> None:
    health = health_of(clock, late_floor=0.3)
    for seconds in lognormal_ttfts(0.02, 0.5, 100):
        health.record_ttft("a", seconds)
    assert health.view("a").ttft_quantile < 0.3
    assert health.late_after("a") == 0.3


def test_a_provider_that_slows_down_raises_its_quantile(clock: Clock) -> None:
    health = health_of(clock)
    for seconds in lognormal_ttfts(0.05, 0.5, 100):
        health.record_ttft("a", seconds)
    fast = health.view("a").ttft_quantile
    for seconds in lognormal_ttfts(1.0, 0.5, 60, seed=8):
        health.record_ttft("a", seconds)
    assert health.view("a").ttft_quantile > 10 * fast


def test_a_censored_time_above_the_median_widens_the_quantile(clock: Clock) -> None:
    health = health_of(clock)
    for seconds in lognormal_ttfts(0.2, 0.5, 50):
        health.record_ttft("a", seconds)
    before = health.view("a").ttft_quantile

    health.record_censored_ttft("a", 0.01)  # lost a race early: says nothing new
    assert health.view("a").ttft_quantile == before
    health.record_censored_ttft("a", 3.0)  # three seconds without text: at least that
    assert health.view("a").ttft_quantile > before


def test_the_quantile_policy_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="ttft_quantile"):
        HealthPolicy(ttft_quantile=1.0)
    with pytest.raises(ConfigurationError, match="late_unmeasured"):
        HealthPolicy(late_floor=3.0, late_unmeasured=2.0)


def test_auto_hedging_starts_the_next_provider_past_the_first_ones_quantile(clock: Clock) -> None:
    health = health_of(clock, "a", "b", late_unmeasured=2.5)
    for seconds in lognormal_ttfts(0.3, 0.8, 200):
        health.record_ttft("a", seconds)
    late = health.late_after("a")
    schedule = schedule_of(health, entries("a", "b"), hedge_after="auto")

    assert schedule.next_action(0.0).entry.key == "a"
    assert schedule.next_action(0.0) == pytest.approx(late)  # wait until a is late
    assert schedule.next_action(late * 0.9) == pytest.approx(late * 0.1)  # not yet
    assert schedule.next_action(late).entry.key == "b"  # a is late: b starts beside it
    assert keys(schedule) == ["a", "b"]


def test_auto_hedging_waits_the_default_for_an_unmeasured_provider(clock: Clock) -> None:
    health = health_of(clock, "a", "b", late_unmeasured=2.5)
    schedule = schedule_of(health, entries("a", "b"), hedge_after="auto")
    schedule.next_action(0.0)
    assert schedule.next_action(0.3) == pytest.approx(2.2)
    assert schedule.next_action(2.5).entry.key == "b"


def test_auto_hedging_times_each_attempt_by_its_own_provider(clock: Clock) -> None:
    health = health_of(clock, "a", "b", "c", late_floor=0.0)
    health.record_ttft("a", 0.01)
    health.record_ttft("b", 0.1)
    health.record_ttft("c", 0.5)
    late_a, late_b = health.late_after("a"), health.late_after("b")
    schedule = schedule_of(health, entries("a", "b", "c"), hedge_after="auto")

    schedule.next_action(0.0)
    assert schedule.next_action(late_a).entry.key == "b"
    assert schedule.next_action(late_a) == pytest.approx(late_b)  # b's own limit now
    assert schedule.next_action(late_a + late_b).entry.key == "c"


def test_an_auto_hedge_loser_records_its_censored_time(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    for seconds in lognormal_ttfts(0.1, 0.5, 100):
        health.record_ttft("a", seconds)
    health.record_ttft("b", 0.2)
    before = health.view("a")
    schedule = schedule_of(health, entries("a", "b"), hedge_after="auto")
    first = schedule.next_action(0.0)
    late = first.late_at
    second = schedule.next_action(late)

    schedule.won(second, late + 0.2)  # a stalls; b has text first

    after = health.view("a")
    assert after.ttft > before.ttft  # raised towards how long it went without text
    assert after.ttft_quantile > before.ttft_quantile
    assert after.volume == 0  # neither a success nor a failure
    assert health.view("b").ttft == pytest.approx(0.2)


def test_a_slow_provider_first_is_hedged_only_past_its_own_quantile(clock: Clock) -> None:
    # A hedge is a second request: it waits until the running attempt is late by
    # its own provider's measure, however fast the next one is.
    health = health_of(clock, "slow", "fast", late_floor=0.0)
    health.record_ttft("slow", 1.5)  # first: the fast one was cooling down, or exploring
    health.record_ttft("fast", 0.1)
    late_slow, late_fast = health.late_after("slow"), health.late_after("fast")
    assert late_fast < late_slow
    schedule = schedule_of(
        health,
        entries("slow"),
        waiting=[(0.2, entries("fast")[0])],
        hedge_after="auto",
        deadline=60.0,
    )

    assert schedule.next_action(0.0).entry.key == "slow"
    assert schedule.next_action(0.0) == pytest.approx(late_slow)
    assert not isinstance(schedule.next_action(late_fast), Attempt)
    assert schedule.next_action(late_slow).entry.key == "fast"


def test_no_hedging_when_off_and_a_fixed_hedge_ignores_the_quantile(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    health.record_ttft("a", 5.0)
    off = schedule_of(health, entries("a", "b"), hedge_after=None)
    off.next_action(0.0)
    assert off.next_action(9.0) == pytest.approx(1.0)  # only the deadline wakes it
    fixed = schedule_of(health, entries("a", "b"), hedge_after=0.5)
    fixed.next_action(0.0)
    assert fixed.next_action(0.5).entry.key == "b"


# --- hedging on a budget ------------------------------------------------------------


def test_an_auto_hedge_spends_from_the_budget_and_waits_when_it_is_spent(clock: Clock) -> None:
    health = health_of(clock, "a", "b", "c", late_floor=0.0)
    health.record_ttft("a", 0.1)
    health.record_ttft("b", 0.1)
    health.record_ttft("c", 0.1)
    late = health.late_after("a")
    budget = ExtraRequests(share=0.01, burst=1.0)
    first = schedule_of(health, entries("a", "b"), hedge_after="auto", extra=budget)
    first.next_action(0.0)
    assert first.next_action(late).entry.key == "b"  # the one extra request saved

    second = schedule_of(health, entries("a", "c"), hedge_after="auto", extra=budget)
    second.next_action(0.0)
    assert second.next_action(late) == pytest.approx(late)  # asked again when doubled
    assert keys(second) == ["a"]  # no second request without budget
    # twice past its limit, a has most likely stalled: replaced whatever the budget
    assert second.next_action(2 * late).entry.key == "c"

    third = schedule_of(health, entries("a", "b"), hedge_after="auto", extra=budget)
    third.next_action(0.0)
    for _ in range(100):  # a hundred calls earn one
        budget.earn()
    assert third.next_action(late).entry.key == "b"


def test_no_auto_hedge_to_a_provider_slower_than_what_is_left(clock: Clock) -> None:
    health = health_of(clock, "a", "b", late_floor=0.0)
    health.record_ttft("a", 0.1)
    health.record_ttft("b", 3.0)  # its first token comes later than a's, late as it is
    late = health.late_after("a")
    schedule = schedule_of(health, entries("a", "b"), hedge_after="auto", extra=ExtraRequests())
    schedule.next_action(0.0)
    assert not isinstance(schedule.next_action(late), Attempt)
    assert keys(schedule) == ["a"]
    assert schedule.next_action(3.5).entry.key == "b"  # a waited longer than b takes


def test_a_fixed_hedge_ignores_the_budget(clock: Clock) -> None:
    health = health_of(clock, "a", "b")
    schedule = schedule_of(health, entries("a", "b"), hedge_after=0.5, extra=ExtraRequests(0.0))
    schedule.next_action(0.0)
    assert schedule.next_action(0.5).entry.key == "b"
