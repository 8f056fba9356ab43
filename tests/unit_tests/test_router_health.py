"""How the router's health model and schedule act on real calls, against the replica.

Faults are injected per provider (see tests/unit_tests/test_router.py); strategies get
no exploration, or a seeded one, so every order is deterministic.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.strategies import ExtraRequests, FastestStrategy
from langchain_g4f.testing import Replica, reply_for

pytestmark = pytest.mark.loopback

MODES = ("sync-invoke", "async-stream")
#: A strategy budget with nothing to spend: only providers never tried are explored.
NO_EXPLORING = ExtraRequests(share=0.0)


@pytest.fixture(autouse=True)
def _fresh_replica(replica: Replica) -> None:
    replica.reset()


def chat(replica: Replica, name: str) -> ChatG4F:
    return ChatG4F(provider=name, base_url=replica.base_url(name), timeout=1.0)


def router_of(replica: Replica, *names: str, **kwargs: Any) -> ChatG4FRouter:
    kwargs.setdefault("strategy", "priority")
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 10.0)
    return ChatG4FRouter(providers=[chat(replica, name) for name in names], **kwargs)


def requested(replica: Replica) -> Counter:
    return Counter(entry["provider"] for entry in replica.requests)


async def answer(router: ChatG4FRouter, prompt: str, mode: str) -> tuple[str, dict]:
    if mode == "sync-invoke":
        message: Any = router.invoke(prompt)
    else:
        message = None
        async for chunk in router.astream(prompt):
            message = chunk if message is None else message + chunk
    assert message.content == reply_for([{"role": "user", "content": prompt}])
    return message.response_metadata["provider"], message.response_metadata


def seed(router: ChatG4FRouter, key: str, ttft: float, calls: int = 5) -> None:
    """Measured before the test: ``calls`` complete answers, first text after ``ttft``."""
    for _ in range(calls):
        router._health.record_ttft(key, ttft)
        router._health.record_success(key)


# --- a failure rate opens the circuit ----------------------------------------------


class GivenOrder:
    """A strategy that leaves every decision to the circuit breaker."""

    def order(self, candidates: list[str], health: Any) -> list[str]:
        return list(candidates)


@pytest.mark.parametrize("mode", MODES)
async def test_a_provider_failing_one_call_in_three_cools_down(replica: Replica, mode: str) -> None:
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=0, strategy=GivenOrder())
    for call in range(12):
        if call % 3 == 2:
            replica.set_fault("Mishalsgpt", "http_500", times=1)
        provider, _ = await answer(router, f"call {call}", mode)
        assert provider == ("Lockchat" if call % 3 == 2 else "Mishalsgpt")
    assert router.stats()["Mishalsgpt"]["consecutive_failures"] == 1  # never a streak
    asked = requested(replica)["mishalsgpt"]

    provider, metadata = await answer(router, "and now?", mode)

    assert provider == "Lockchat"
    assert metadata["attempts"] == []
    assert requested(replica)["mishalsgpt"] == asked  # cooling down: not asked
    assert router.stats()["Mishalsgpt"]["cooldown_left"] > 0


# --- priority demotes a failing first provider ---------------------------------------


def test_priority_moves_a_first_provider_failing_40_percent_behind(replica: Replica) -> None:
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=0)
    for call in range(40):
        if requested(replica)["mishalsgpt"] % 5 in (1, 3):  # 2 of its every 5 requests fail
            replica.set_fault("Mishalsgpt", "http_500", times=1)
        router.invoke(f"call {call}")
        replica.set_fault("Mishalsgpt", None)

    asked = requested(replica)
    assert asked["mishalsgpt"] <= 15  # it was moved behind Lockchat after a few calls
    assert asked["lockchat"] >= 30


# --- moving on instead of waiting -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_429_moves_on_at_once_and_holds_the_provider_once_it_opens(
    replica: Replica, mode: str
) -> None:
    replica.set_fault("Mishalsgpt", "rate_limit", times=2, retry_after=3)
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=1, cooldown=1.0)

    provider, metadata = await answer(router, "busy?", mode)

    assert provider == "Lockchat"
    assert [a["error"] for a in metadata["attempts"]] == ["RateLimitError"]
    assert requested(replica) == {"mishalsgpt": 1, "lockchat": 1}  # no retry: not needed
    assert router.stats()["Mishalsgpt"]["cooldown_left"] == 0  # one 429 holds no other call

    provider, _ = await answer(router, "again", mode)  # a second 429 in a row: it opens
    assert provider == "Lockchat"
    assert requested(replica)["mishalsgpt"] == 2
    assert 2 < router.stats()["Mishalsgpt"]["cooldown_left"] <= 3  # its Retry-After, not 1 s

    provider, _ = await answer(router, "third", mode)  # within the Retry-After
    assert provider == "Lockchat"
    assert requested(replica)["mishalsgpt"] == 2


@pytest.mark.parametrize("mode", MODES)
async def test_a_read_timeout_moves_on_at_once(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "stall", after_chunks=0)
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=1, hedge_after=None)

    provider, metadata = await answer(router, "anyone?", mode)

    assert provider == "Lockchat"
    assert [a["error"] for a in metadata["attempts"]] == ["ProviderTimeoutError"]
    assert requested(replica) == {"mishalsgpt": 1, "lockchat": 1}
    assert router.stats()["Mishalsgpt"]["failure_cost"] >= 0.9  # its 1 s read timeout


# --- hedge losers -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_hedge_loser_that_became_slow_loses_first_place(
    replica: Replica, mode: str
) -> None:
    router = router_of(
        replica, "Mishalsgpt", "Lockchat", strategy=FastestStrategy(NO_EXPLORING), hedge_after=0.1
    )
    seed(router, "Mishalsgpt", 0.05)  # was fast ...
    seed(router, "Lockchat", 0.1)
    replica.set_fault("Mishalsgpt", "slow", delay=0.5)  # ... and became slow

    provider, _ = await answer(router, "first", mode)
    assert provider == "Lockchat"  # the hedge won
    assert router.stats()["Mishalsgpt"]["ttft"] >= 0.1  # at least as long as it went without text

    provider, _ = await answer(router, "second", mode)
    assert provider == "Lockchat"
    assert requested(replica) == {"mishalsgpt": 1, "lockchat": 2}  # not tried first again


@pytest.mark.parametrize("mode", MODES)
async def test_a_stall_before_the_first_byte_is_hedged_by_default(
    replica: Replica, mode: str
) -> None:
    # read timeouts of 30 s and a 10 s deadline: without the hedge the call would fail
    router = ChatG4FRouter(
        providers=[
            ChatG4F(provider=name, base_url=replica.base_url(name), timeout=30.0)
            for name in ("Mishalsgpt", "Lockchat")
        ],
        strategy=FastestStrategy(NO_EXPLORING),
        timeout=10.0,
    )
    seed(router, "Mishalsgpt", 0.05)
    seed(router, "Lockchat", 0.1)
    replica.set_fault("Mishalsgpt", "stall", after_chunks=0)

    provider, metadata = await answer(router, "anyone?", mode)

    assert provider == "Lockchat"
    assert metadata["attempts"] == []
    assert requested(replica) == {"mishalsgpt": 1, "lockchat": 1}
    stats = router.stats()["Mishalsgpt"]
    assert stats["failures"] == 0  # a hedge loser: no outcome ...
    assert stats["ttft"] > 0.1  # ... but slower than it was (a stall counts as its p99)


# --- unmeasured providers ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_an_unmeasured_provider_measured_bad_costs_nothing_more(
    replica: Replica, mode: str
) -> None:
    strategy = FastestStrategy(ExtraRequests())
    router = router_of(replica, "Gravityengine", "Mishalsgpt", strategy=strategy)
    seed(router, "Mishalsgpt", 0.2)
    replica.set_fault("Gravityengine", "http_500")  # never answers

    answered = [(await answer(router, f"call {n}", mode))[0] for n in range(8)]

    assert answered == ["Mishalsgpt"] * 8
    assert requested(replica)["gravityengine"] == 1  # tried once, then known bad


@pytest.mark.parametrize("mode", MODES)
async def test_fastest_finds_an_unmeasured_faster_provider(replica: Replica, mode: str) -> None:
    # Finding 1: A answers after 700 ms, B was never measured and answers at once.
    replica.set_fault("Mishalsgpt", "slow", delay=0.7)
    router = router_of(replica, "Mishalsgpt", "Lockchat", strategy="fastest", max_retries=0)
    seed(router, "Mishalsgpt", 0.7)

    answered = [(await answer(router, f"call {n}", mode))[0] for n in range(8)]

    assert answered.count("Lockchat") >= 7
    assert answered[0] == "Lockchat"
