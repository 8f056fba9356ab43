"""The Redis store on an event loop: async calls await redis-py's asyncio client and
never block the loop, sharing keys and scripts with the sync client; and a store URL
that is wrong fails at construction, before any call, naming what is wrong."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from langchain_g4f import ChatG4F
from langchain_g4f.budgets import Budget, Limits, LocalBudgets
from langchain_g4f.errors import ConfigurationError
from langchain_g4f.redis_store import RedisStore, open_store
from langchain_g4f.testing import Replica
from langchain_g4f.testing.redis_server import RedisServer


def count(state: dict[str, float], now: float) -> dict[str, float]:
    return {**state, "n": state.get("n", 0) + 1}


# --- a wrong URL is a configuration error, never an outage ------------------------------


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://127.0.0.1:6379/0?prefx=a", "'prefx'"),
        ("redis://127.0.0.1:6379/zero", "db"),
        ("redis://127.0.0.1:6379/0?db=1", "db"),
        ("redis://127.0.0.1:6379?db=one", "db"),
        ("redis://127.0.0.1:port/0", "port"),
        ("redis://127.0.0.1:99999/0", "port"),
        ("http://127.0.0.1:6379/0", "scheme"),
        ("redis:///0", "host"),
        ("redis://127.0.0.1:6379?cluster=maybe", "cluster"),
        ("redis://127.0.0.1:6379/2?cluster=true", "db"),
        ("unix:///tmp/redis.sock?cluster=true", "cluster"),
        ("redis://127.0.0.1:6379?prefix=a&prefix=b", "'prefix'"),
        ("redis://127.0.0.1:6379?ssl_ca_certs=/ca.pem", "rediss://"),
        ("rediss://127.0.0.1:6379?ssl_cert_reqs=always", "ssl_cert_reqs"),
        ("redis://127.0.0.1:6379?prefix=a{b}", "hash tag"),
    ],
)
def test_a_wrong_store_url_fails_at_construction_naming_the_parameter(url: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        RedisStore(url)  # sockets are disabled: nothing is tried


def test_a_wrong_url_in_a_router_fails_before_any_call_and_hides_the_password() -> None:
    from langchain_g4f import ChatG4FRouter

    with pytest.raises(ConfigurationError, match="prefx") as caught:
        ChatG4FRouter(providers=["Lockchat"], store="redis://u:hunter2@127.0.0.1:1/0?prefx=a")
    assert "hunter2" not in str(caught.value)


@pytest.mark.loopback
def test_good_urls_and_clients_open_the_same_store(redis_server: RedisServer) -> None:
    port = redis_server.port
    opened = [
        RedisStore(f"redis://127.0.0.1:{port}?db=0&prefix=same"),
        RedisStore(f"redis://127.0.0.1:{port}/0", prefix="same"),
        RedisStore(redis.Redis(host="127.0.0.1", port=port), prefix="same"),
        RedisStore(redis.asyncio.Redis(host="127.0.0.1", port=port), prefix="same"),
    ]
    try:
        assert all(store.shared for store in opened)
        opened[0].update("p", count)
        assert opened[0].flush()
        assert [store.read(["p"])["p"] for store in opened[1:]] == [{"n": 1}] * 3
        assert isinstance(open_store(redis.Redis(host="127.0.0.1", port=port)), RedisStore)
    finally:
        for store in opened:
            store.close()


# --- async calls never block the event loop ----------------------------------------------


@pytest.fixture
def store(redis_url: str) -> Any:
    opened = RedisStore(redis_url)
    yield opened
    opened.close()


def _stall(url: str, seconds: float) -> threading.Thread:
    """Make Redis sleep ``seconds`` (``DEBUG SLEEP``) from another client."""
    client = redis.Redis.from_url(url.split("?", maxsplit=1)[0])
    thread = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", seconds))
    thread.start()
    return thread


async def _ticks_during(awaitable: Any) -> tuple[Any, int]:
    """Await ``awaitable`` beside a task that ticks every millisecond; (result, ticks)."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0)
    try:
        result = await awaitable
    finally:
        ticker.cancel()
    return result, ticks


@pytest.mark.loopback
async def test_a_budget_taken_on_a_stalled_redis_leaves_the_loop_running(
    store: RedisStore, redis_url: str
) -> None:
    budget = Budget("p", Limits(per_window=100, concurrent=4), store)
    assert (await budget.atake()).holder == "redis"
    stall = _stall(redis_url, 0.5)
    await asyncio.sleep(0.1)  # the stall has begun
    start = time.monotonic()
    grant, ticks = await _ticks_during(budget.atake())
    waited = time.monotonic() - start
    stall.join()
    assert grant.granted
    assert grant.holder == "local"  # Redis did not answer within the store's timeout...
    assert waited < 0.4  # ... and the call did not wait for the stall to end
    assert ticks > 0  # the loop ran meanwhile (a blocking round trip would freeze it)


@pytest.mark.loopback
async def test_reads_and_claims_on_an_event_loop_never_wait_for_redis(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any]] = []  # on this (the loop's) thread, and on others
    execute = store._redis.execute_command
    loop_thread = threading.current_thread()

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append((threading.current_thread() is loop_thread, args[0]))
        return execute(*args, **kwargs)

    monkeypatch.setattr(store._redis, "execute_command", counted)
    assert store.read(["p"]) == {"p": {}}  # a copy never fetched: no round trip here
    assert store.update("p", count, sync=True) == {"n": 1}  # shared just after
    assert await store.aread(["q"]) == {"q": {}}  # awaited on the asyncio client
    assert store.flush()
    assert not [call for on_loop, call in calls if on_loop]
    written = store._redis.get(store._key("state", "p"))  # by the background thread
    assert store._decode("p", written) == {"n": 1}


@pytest.mark.loopback
async def test_sync_and_async_clients_share_states_and_budgets(redis_url: str) -> None:
    a, b = RedisStore(redis_url, refresh=0), RedisStore(redis_url, refresh=0)
    try:
        limits = Limits(per_window=3, concurrent=2)
        taken = [a.acquire("p", limits), await b.aacquire("p", limits)]
        assert [grant.holder for grant in taken] == ["redis", "redis"]
        refused = await b.aacquire("p", limits)  # both leases are taken, fleet-wide
        assert not refused.granted
        a.release(taken[0])
        assert a.flush()
        assert (await b.aacquire("p", limits)).granted  # the third request of the window
        assert not a.acquire("p", limits).granted  # the window is spent for both
        assert b.usage("p", limits) == {"requests": 3, "concurrent": 2}

        a.update("p", count)
        assert a.flush()
        assert (await b.aread(["p"]))["p"] == {"n": 1}
    finally:
        a.close()
        b.close()


@pytest.mark.loopback
async def test_an_async_call_awaits_the_store_each_event_loop_its_own_client(
    redis_url: str, replica: Replica
) -> None:
    replica.reset()
    store = RedisStore(redis_url)
    try:
        chat = ChatG4F(
            provider="Lockchat",
            base_url=replica.base_url("Lockchat"),
            timeout=2.0,
            requests_per_minute=2,
            store=store,
        )
        assert (await chat.ainvoke("hi")).content
        other = await asyncio.to_thread(lambda: asyncio.run(chat.ainvoke("again")))
        assert other.content
        assert len(store._async) == 2  # one asyncio client per event loop
        assert chat.budget is not None
        assert chat.budget.usage()["requests"] == 2
    finally:
        store.close()


async def test_local_budgets_are_awaitable_too() -> None:
    budget = Budget("p", Limits(per_window=1), LocalBudgets())
    assert (await budget.atake()).granted
    with pytest.raises(Exception, match="budget"):
        await budget.atake()
