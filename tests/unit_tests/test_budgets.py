"""Request budgets (``requests_per_minute``, ``max_concurrent``): in the process, in Redis
for the fleet, on ChatG4F alone (waits within its timeout, then BudgetExhaustedError)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from langchain_g4f import ChatG4F
from langchain_g4f.budgets import Budget, Limits, LocalBudgets, budgets_of
from langchain_g4f.errors import BudgetExhaustedError, ConfigurationError
from langchain_g4f.redis_store import RedisStore
from langchain_g4f.store import MemoryStore
from langchain_g4f.testing import Replica
from tests.unit_tests.fleet_harness import Fleet, budgeted_calls

pytestmark = pytest.mark.loopback


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(autouse=True)
def _fresh_replica(replica: Replica) -> None:
    replica.reset()


@pytest.fixture
def redis_store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url)
    yield store
    store.close()


def test_local_sliding_window_and_leases() -> None:
    clock = FakeClock()
    budgets = LocalBudgets(clock, lease_ttl=30)
    limits = Limits(per_window=2, concurrent=1, window=60)
    first = budgets.acquire("p", limits)
    assert first.granted
    assert first.lease
    refused = budgets.acquire("p", limits)
    assert not refused.granted
    assert refused.wait > 0
    budgets.release(first)
    assert budgets.acquire("p", limits).granted  # second request of the window
    clock.t += 31  # that lease expired (its holder "died"); the window is full though
    refused = budgets.acquire("p", limits)
    assert not refused.granted
    assert refused.wait == pytest.approx(29)
    clock.t += 29
    assert budgets.acquire("p", limits).granted
    assert budgets.usage("p", limits) == {"requests": 1, "concurrent": 1}


def test_budgets_of_a_memory_store_are_local_and_a_redis_store_holds_its_own(
    redis_store: RedisStore,
) -> None:
    assert isinstance(budgets_of(MemoryStore()), LocalBudgets)
    assert budgets_of(redis_store) is redis_store


def test_redis_budget_is_exact_across_stores_and_threads(redis_url: str) -> None:
    stores = [RedisStore(redis_url) for _ in range(3)]
    limits = Limits(per_window=25, concurrent=None)
    granted: list[int] = []

    def take(store: RedisStore) -> None:
        granted.append(sum(store.acquire("p", limits).granted for _ in range(20)))

    threads = [threading.Thread(target=take, args=(s,)) for s in stores * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 25
    refused = stores[0].acquire("p", limits)
    assert not refused.granted
    assert 59 < refused.wait <= 60
    assert stores[1].usage("p", limits) == {"requests": 25, "concurrent": 0}
    for store in stores:
        store.close()


def test_redis_leases_are_released_and_expire_when_their_process_dies(redis_url: str) -> None:
    limits = Limits(concurrent=2)
    dying = RedisStore(redis_url, lease_ttl=0.3)
    alive = RedisStore(redis_url, lease_ttl=0.3)
    try:
        held = [dying.acquire("p", limits) for _ in range(2)]
        assert all(grant.granted for grant in held)
        assert not alive.acquire("p", limits).granted
        dying.close()  # gone without giving its leases back, and no longer renewing
        for _ in range(200):
            grant = alive.acquire("p", limits)
            if grant.granted:
                break
            threading.Event().wait(0.01)
        assert grant.granted
        alive.release(grant)
        assert alive.flush()
        assert alive.usage("p", limits)["concurrent"] == 0
    finally:
        alive.close()


def test_redis_leases_of_a_live_process_are_renewed(redis_url: str) -> None:
    limits = Limits(concurrent=1)
    holder = RedisStore(redis_url, lease_ttl=0.3)
    other = RedisStore(redis_url)
    try:
        grant = holder.acquire("p", limits)
        threading.Event().wait(1.0)  # three lease lifetimes: renewed, not expired
        assert not other.acquire("p", limits).granted
        holder.release(grant)
        assert holder.flush()
        assert other.acquire("p", limits).granted
    finally:
        holder.close()
        other.close()


def chat(replica: Replica, **kwargs: Any) -> ChatG4F:
    kwargs.setdefault("timeout", 1.0)
    return ChatG4F(provider="Lockchat", base_url=replica.base_url("Lockchat"), **kwargs)


def test_chat_alone_raises_when_the_budget_cannot_fit_its_timeout(replica: Replica) -> None:
    model = chat(replica, requests_per_minute=2, timeout=0.2)
    model.invoke("one")
    model.invoke("two")
    with pytest.raises(BudgetExhaustedError) as info:
        model.invoke("three")
    assert info.value.provider == "Lockchat"
    assert 59 < info.value.retry_after <= 60
    assert "2 requests per 60s" in str(info.value)
    assert len(replica.requests) == 2  # nothing was sent for the third


def test_chat_alone_waits_for_a_lease_within_its_timeout(replica: Replica) -> None:
    model = chat(replica, max_concurrent=1, timeout=5)
    stream = model.stream("first")
    next(stream)  # holds the only lease
    done: list[str] = []
    waiter = threading.Thread(target=lambda: done.append(model.invoke("second").content))
    waiter.start()
    threading.Event().wait(0.2)
    assert not done  # waiting for the lease
    assert len(replica.requests) == 1
    stream.close()  # gives it back
    waiter.join(5)
    assert done
    assert len(replica.requests) == 2


async def test_async_calls_respect_max_concurrent(replica: Replica) -> None:
    replica.set_fault("Lockchat", "slow", delay=0.02)
    model = chat(replica, max_concurrent=2, timeout=5)
    in_flight = peak = 0
    budget = model._budget
    assert isinstance(budget, Budget)
    acquire = budget.holder.acquire

    def counting_acquire(key: str, limits: Limits) -> Any:
        nonlocal in_flight, peak
        grant = acquire(key, limits)
        if grant.granted:
            in_flight += 1
            peak = max(peak, in_flight)
        return grant

    release = budget.holder.release

    def counting_release(grant: Any) -> None:
        nonlocal in_flight
        in_flight -= 1
        release(grant)

    budget.holder.acquire = counting_acquire  # type: ignore[method-assign]
    budget.holder.release = counting_release  # type: ignore[method-assign]
    answers = await asyncio.gather(*(model.ainvoke(f"q{i}") for i in range(8)))
    assert len(answers) == 8
    assert peak == 2
    assert in_flight == 0


def test_a_failed_request_gives_its_lease_back(replica: Replica) -> None:
    replica.set_fault("Lockchat", "http_500", times=1)
    model = chat(replica, max_concurrent=1, max_retries=1)
    assert model.invoke("hi").content  # the retry got the lease the failure gave back
    assert model._budget.usage()["concurrent"] == 0  # type: ignore[union-attr]


def test_budget_fields_are_validated_and_kept_out_of_serialization(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="requests_per_minute: Input should be greater"):
        ChatG4F(provider="Lockchat", requests_per_minute=0)
    with pytest.raises(ConfigurationError, match="max_concurrent: Input should be greater"):
        ChatG4F(provider="Lockchat", max_concurrent=-1)
    model = ChatG4F(provider="Lockchat", requests_per_minute=5, store=redis_url)
    assert "store" not in model.model_dump()
    assert isinstance(model._budget.holder, RedisStore)  # type: ignore[union-attr]
    model._budget.holder.close()  # type: ignore[union-attr]


def test_a_per_minute_budget_holds_across_four_processes(
    replica: Replica, redis_url: str, fleet: Fleet
) -> None:
    results = fleet.run(budgeted_calls, redis_url, replica.base_url("Lockchat"), 6, 6)
    assert sum(answers for answers, _ in results) == 6
    assert sum(refusals for _, refusals in results) == 18
    assert len(replica.requests) == 6


def router_of(replica: Replica, *chats: ChatG4F, **kwargs: Any) -> Any:
    from langchain_g4f import ChatG4FRouter

    kwargs.setdefault("strategy", "priority")
    return ChatG4FRouter(providers=list(chats), **kwargs)


def test_router_skips_a_spent_budget_while_another_provider_can_answer(replica: Replica) -> None:
    budgeted = chat(replica, requests_per_minute=2)
    other = ChatG4F(provider="Mishalsgpt", base_url=replica.base_url("Mishalsgpt"), timeout=1.0)
    router = router_of(replica, budgeted, other, timeout=5.0)
    answered = [router.invoke(f"q{i}").response_metadata for i in range(5)]
    assert [m["provider"] for m in answered] == ["Lockchat"] * 2 + ["Mishalsgpt"] * 3
    # the refusal was learnt once; later calls did not even ask the budget
    assert [a["error"] for a in answered[2]["attempts"]] == ["BudgetExhaustedError"]
    assert answered[3]["attempts"] == answered[4]["attempts"] == []
    assert sum(r["provider"] == "lockchat" for r in replica.requests) == 2
    stats = router.stats()["Lockchat"]
    assert stats["failures"] == 0  # nothing was sent: not the provider's failure
    assert stats["budget"]["requests_left"] == 0


def test_router_waits_for_the_only_provider_within_its_deadline(replica: Replica) -> None:
    router = router_of(replica, chat(replica, max_concurrent=1, timeout=5.0), timeout=5.0)
    holder = router._entries[0].chat
    stream = holder.stream("holding the only lease")
    next(stream)
    done: list[str] = []
    waiter = threading.Thread(target=lambda: done.append(router.invoke("waiting").content))
    waiter.start()
    threading.Event().wait(0.3)
    assert not done
    assert len(replica.requests) == 1
    stream.close()
    waiter.join(5)
    assert done
    assert len(replica.requests) == 2


def test_router_gives_up_when_the_budget_frees_after_its_deadline(replica: Replica) -> None:
    from langchain_g4f.errors import AllProvidersFailedError

    router = router_of(replica, chat(replica, requests_per_minute=1), timeout=2.0)
    router.invoke("the one request of this minute")
    with pytest.raises(AllProvidersFailedError) as info:
        router.invoke("one too many")
    assert [a["error"] for a in info.value.attempts] == ["BudgetExhaustedError"]
    assert len(replica.requests) == 1
