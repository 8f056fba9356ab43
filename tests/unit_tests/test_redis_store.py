"""RedisStore against a real redis-server on 127.0.0.1: the Store protocol, shared and
atomic; the read-through cache; TTLs; versioned values; server-clock deadlines; network
failures kept local until two hosts see them; Redis down, back, or answering nonsense.

The changes here are small pure functions of the tests' own, as the health model's are.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Any

import pytest
import redis

from langchain_g4f.errors import ConfigurationError
from langchain_g4f.redis_store import SCHEMA, RedisStore, open_store
from langchain_g4f.store import MemoryStore, Store
from langchain_g4f.testing.redis_server import RedisServer

pytestmark = pytest.mark.loopback


def count(field: str = "n", by: float = 1) -> Any:
    def change(state: dict[str, float], now: float) -> dict[str, float]:
        return {**state, field: state.get(field, 0) + by}

    return change


def cool_down(seconds: float) -> Any:
    """Open a cooldown ``seconds`` from the observation, on the store's clock."""

    def change(state: dict[str, float], now: float) -> dict[str, float]:
        return {**state, "cooldown_until": now + seconds}

    return change


def raw(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.split("?", maxsplit=1)[0])


@pytest.fixture
def stores(redis_url: str) -> Any:
    opened: list[RedisStore] = []

    def open_(**kwargs: Any) -> RedisStore:
        # Redis on a busy CI host sometimes answers after the default 50 ms; these tests
        # are about sharing, so they allow a second (the outage tests build their own).
        kwargs.setdefault("timeout", 1.0)
        store = RedisStore(redis_url, **kwargs)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_is_a_store_and_counts_every_change_across_stores_and_threads(stores: Any) -> None:
    a, b = stores(), stores()
    assert isinstance(a, Store)

    def hammer(store: RedisStore) -> None:
        for _ in range(250):
            store.update("p", count())

    threads = [threading.Thread(target=hammer, args=(s,)) for s in (a, b, a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert a.flush()
    assert b.flush()
    fresh = stores()
    assert fresh.read(["p"]) == {"p": {"n": 1000}}


def test_update_returns_the_new_state_at_once_and_reads_see_it(stores: Any) -> None:
    store = stores()
    assert store.update("p", count(by=2)) == {"n": 2}
    assert store.read(["p", "q"]) == {"p": {"n": 2}, "q": {}}


def test_a_change_on_its_way_to_redis_counts_once_while_its_commit_lands(
    stores: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Redis holds the committed state (fetched, and published to the listener) before
    # the writer drops the change from its pending ones: neither copy may count it twice.
    store = stores(refresh=3600)
    assert store.read(["p"]) == {"p": {}}  # fetched: the listener takes p's publications
    seen: list[dict[str, Any]] = []
    committed = store._committed

    def landing(batch: Any, states: Any) -> None:
        time.sleep(0.3)  # the publication reaches the listener
        seen.append(store.read(["p"])["p"])
        store._fetch(["p"])  # and a fetch answers with Redis's new state
        seen.append(store.read(["p"])["p"])
        committed(batch, states)

    monkeypatch.setattr(store, "_committed", landing)
    assert store.update("p", count(by=2)) == {"n": 2}
    assert store.flush()
    assert seen == [{"n": 2}, {"n": 2}]
    assert store.read(["p"]) == {"p": {"n": 2}}
    assert raw(store._url).get(store._key("state", "p")) is not None


def test_read_through_cache_one_round_trip_at_most_and_fresh_within_refresh(
    stores: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = stores(refresh=3600)
    b = stores(refresh=0)
    calls: list[str] = []
    execute = a._redis.execute_command

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return execute(*args, **kwargs)

    monkeypatch.setattr(a._redis, "execute_command", counted)
    a.read(["p", "q", "r"])
    assert calls == ["MGET"]  # one pipelined round trip for every key
    for _ in range(50):
        a.read(["p", "q"])
    assert calls == ["MGET"]  # then the cache, until it is older than refresh
    b.update("p", cool_down(30))  # committed and published: a's copy follows at once
    assert b.flush()
    wait_for(lambda: "cooldown_until" in a.read(["p"])["p"])
    assert a.read(["p"])["p"]["cooldown_until"] == pytest.approx(b.now() + 30, abs=1)
    assert calls == ["MGET"]  # with no round trip of a's own

    # A change that was not published (another client wrote it) is seen at the refresh.
    raw(b._url).set(b._key("state", "q"), b._encode({"n": 7}))
    assert a.read(["q"])["q"] == {}  # a's copy is not older than its refresh
    a.refresh = 0
    assert a.read(["q"])["q"] == {"n": 7}


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_every_key_has_a_ttl_and_a_schema_version(stores: Any, redis_url: str) -> None:
    from langchain_g4f.budgets import Limits

    store = stores(host_window=5)
    store.update("p", count())
    store.update("p", count(), hosts=2)
    grant = store.acquire("p", Limits(per_window=5, concurrent=2))
    assert store.flush()
    client = raw(redis_url)
    names = list(client.scan_iter(match=f"{{{store.prefix}}}:*"))
    assert len(names) == 5  # state, hosts, rate, lease, limits
    for name in names:
        assert name.decode().startswith(f"{{{store.prefix}}}:v{SCHEMA}:")
        assert client.pttl(name) > 0, name
    store.release(grant)


def test_values_that_make_no_sense_are_ignored_with_one_warning(
    stores: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores(refresh=0)
    client = raw(redis_url)
    key = partial(store._key, "state")
    client.set(key("junk"), b"\xff not json")
    client.set(key("old"), '{"v": 0, "s": {"n": 1}}')
    client.set(key("types"), f'{{"v": {SCHEMA}, "s": {{"n": "many", "ok": true}}}}')
    client.rpush(key("list"), "x")
    caplog.set_level(logging.WARNING, logger="langchain_g4f.redis_store")
    names = ["junk", "old", "types", "list"]
    for _ in range(3):
        assert store.read(names) == {name: {} for name in names}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # one per bad value, not one per read; the list reads as nil
    for name in names:  # a change replaces the nonsense
        store.update(name, count())
    assert store.flush()
    assert stores().read(names) == {name: {"n": 1} for name in names}


def test_clocks_offset_by_minutes_agree_on_every_deadline(stores: Any) -> None:
    ahead = stores(clock=lambda: time.monotonic() + 300)
    behind = stores(clock=lambda: time.monotonic() - 240, refresh=0)
    assert ahead.now() == pytest.approx(behind.now(), abs=0.05)
    assert ahead.now() == pytest.approx(time.time(), abs=1)  # the server's clock: this host's
    ahead.update("p", cool_down(20))
    assert ahead.flush()
    until = behind.read(["p"])["p"]["cooldown_until"]
    assert until - behind.now() == pytest.approx(20, abs=0.1)
    assert until - ahead.now() == pytest.approx(20, abs=0.1)


def test_network_failures_stay_local_until_two_hosts_see_them(stores: Any) -> None:
    a, b, c = stores(refresh=0), stores(refresh=0), stores(refresh=0)
    a.update("p", count("net"), hosts=2)
    assert a.flush()
    assert a.read(["p"])["p"] == {"net": 1}  # a counts its own
    assert b.read(["p"])["p"] == {}  # nobody else does
    b.update("p", count("net"), hosts=2)  # a second host: now it is shared
    assert b.flush()
    assert c.read(["p"])["p"] == {"net": 1}
    assert a.read(["p"])["p"] == {"net": 2}  # shared + its own
    c.update("p", count("fault"))  # the provider's fault: shared at once
    assert c.flush()
    assert b.read(["p"])["p"] == {"net": 1, "fault": 1}


def test_redis_down_local_state_one_warning_then_sharing_resumes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="langchain_g4f.redis_store")
    with RedisServer() as server:
        a = RedisStore(server.url, refresh=0)
        b = RedisStore(server.url, refresh=0)
        try:
            a.update("p", cool_down(60))
            assert a.flush()
            assert b.read(["p"])["p"]["cooldown_until"] > b.now()
            server.stop()
            for _ in range(100):  # every call still works, on this process's state
                b.update("p", count())
                assert "n" in b.read(["p"])["p"]
            assert b.read(["p"])["p"]["n"] == 100
            assert not b.shared

            def down() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "unreachable" in r.getMessage()]

            wait_for(down)  # logged by whichever thread noticed first
            assert len(down()) == 1
            assert b._redis.connection_pool.connection_kwargs["socket_timeout"] == 0.05

            server.start()  # empty: no persistence
            deadline = time.monotonic() + 15
            while not (a.shared and b.shared) and time.monotonic() < deadline:
                a.read(["p"]), b.read(["p"])
                time.sleep(0.05)
            assert a.shared
            assert b.shared
            assert b.read(["p"])["p"] == {}  # no stale cooldown, no outage-era state
            a.update("p", cool_down(5))
            assert a.flush()
            # sharing again: b sees it by pub/sub or its next refresh, however busy the host
            wait_for(lambda: b.read(["p"])["p"].get("cooldown_until", 0) > b.now(), timeout=15)
        finally:
            a.close()
            b.close()


def test_a_store_whose_redis_never_answered_works_locally() -> None:
    with RedisServer() as server:
        url = server.url
    store = RedisStore(url)
    try:
        assert not store.shared
        store.update("p", count())
        assert store.read(["p"]) == {"p": {"n": 1}}
        assert abs(store.now() - time.time()) < 1
    finally:
        store.close()


def test_open_store_and_configuration_errors(redis_url: str) -> None:
    assert isinstance(open_store(None), MemoryStore)
    memory = MemoryStore()
    assert open_store(memory) is memory
    store = open_store(redis_url)
    try:
        assert isinstance(store, RedisStore)
        assert store.prefix.startswith("test-")
    finally:
        store.close()
    with pytest.raises(ConfigurationError, match="redis://"):
        open_store("http://127.0.0.1:6379")
    with pytest.raises(ConfigurationError, match="store must be"):
        open_store(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl"):
        RedisStore(redis_url, ttl=0)


def test_password_never_shown(redis_server: RedisServer) -> None:
    store = RedisStore(f"redis://user:hunter2@127.0.0.1:{redis_server.port}/0")
    try:
        assert "hunter2" not in repr(store)
        assert "***" in repr(store)
    finally:
        store.close()


def test_budget_and_host_keys_of_the_wrong_type_are_replaced_with_a_warning(
    stores: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from langchain_g4f.budgets import Limits

    store = stores()
    client = raw(redis_url)
    client.set(store._key("rate", "p"), "not a sorted set")
    client.set(store._key("hosts", "p"), "not a sorted set either")
    caplog.set_level(logging.WARNING, logger="langchain_g4f.redis_store")
    assert store.acquire("p", Limits(per_window=2)).granted
    assert store.usage("p", Limits(per_window=2)) == {"requests": 1, "concurrent": 0}
    store.update("p", count(), hosts=2)
    assert store.flush()
    assert store.shared
    assert client.type(store._key("rate", "p")) == b"zset"
    assert any("wrong type" in r.getMessage() for r in caplog.records)
    assert not any("unreachable" in r.getMessage() for r in caplog.records)


def test_a_redis_that_accepts_but_never_answers_leaves_the_store_local() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers a command
    port = listener.getsockname()[1]
    try:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        assert not store.shared  # TIME timed out: local state
        store.update("p", count())
        assert store.read(["p"]) == {"p": {"n": 1}}
        store.close()
    finally:
        listener.close()


def test_a_synchronous_claim_has_one_winner_across_stores(stores: Any) -> None:
    a, b = stores(refresh=3600), stores(refresh=3600)

    def claim(token: float) -> Any:
        def change(state: dict[str, float], now: float) -> dict[str, float]:
            return state if state.get("owner") else {**state, "owner": token}

        return change

    assert a.read(["probe"]) == b.read(["probe"]) == {"probe": {}}  # both copies: free
    won_a = a.update("probe", claim(1.0), sync=True)["owner"] == 1.0
    won_b = b.update("probe", claim(2.0), sync=True)["owner"] == 2.0
    assert (won_a, won_b) == (True, False)  # b's stale copy did not fool it
    assert b.read(["probe"])["probe"] == {"owner": 1.0}


def _child_counts(store: RedisStore) -> None:
    store.update("p", count())
    store.flush()


def test_a_forked_child_shares_through_the_parents_store(stores: Any) -> None:
    import multiprocessing

    store = stores(refresh=0)
    store.update("p", count())
    assert store.flush()
    children = [
        multiprocessing.get_context("fork").Process(target=_child_counts, args=(store,))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(10)
        assert child.exitcode == 0
    assert store.read(["p"])["p"] == {"n": 3}
    assert store.shared


def test_stores_add_no_fork_hook_of_their_own(stores: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # One hook for the module resets every store in a forked child: a process that makes
    # stores by the thousand does not grow the interpreter's list of fork hooks.
    hooks: list[Any] = []
    monkeypatch.setattr("os.register_at_fork", lambda **kwargs: hooks.append(kwargs))
    for _ in range(3):
        stores()
    assert hooks == []


def test_router_store_argument(redis_url: str) -> None:
    from langchain_g4f import ChatG4FRouter

    assert isinstance(ChatG4FRouter(providers=["Lockchat"])._store, MemoryStore)
    shared = RedisStore(redis_url)
    try:
        first = ChatG4FRouter(providers=["Lockchat"], store=shared)
        second = ChatG4FRouter(providers=["Lockchat", "Aichat"], store=shared)
        assert first._store is second._store is shared
        assert "store" not in first.model_dump()
        assert redis_url not in repr(first)
    finally:
        shared.close()
    with pytest.raises(ConfigurationError, match="store must be"):
        ChatG4FRouter(providers=["Lockchat"], store=42)
    with pytest.raises(ConfigurationError, match="redis://"):
        ChatG4FRouter(providers=["Lockchat"], store="memcached://127.0.0.1")
