"""The fleet on a real three-node Redis Cluster: processes share cooldowns and budgets
(sync and async alike) with no store warning; a node killed and restarted costs no call.
Stores built from redis-py's cluster clients share with stores built from the URL."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster

from langchain_g4f.redis_store import RedisStore
from langchain_g4f.testing import Replica
from langchain_g4f.testing.redis_server import RedisClusterServer
from tests.unit_tests.fleet_harness import (
    Fleet,
    ainvoke_many,
    call_many,
    flush,
    read,
    stats,
    store_warnings,
)
from tests.unit_tests.test_fleet import (
    check_sync_and_async_processes_share,
    routers,
    spec,
    wait_for,
)

pytestmark = pytest.mark.loopback


@pytest.fixture(autouse=True)
def _fresh_replica(replica: Replica) -> None:
    replica.reset()


def count(state: dict[str, float], now: float) -> dict[str, float]:
    return {**state, "n": state.get("n", 0) + 1}


def test_a_store_keeps_its_keys_in_one_slot_on_the_node_serving_it(
    redis_cluster: RedisClusterServer, cluster_url: str
) -> None:
    store = RedisStore(cluster_url)
    try:
        assert store.shared
        names = [store._key(kind, "p") for kind in ("state", "rate", "lease", "limits", "hosts")]
        slots = {redis.crc.key_slot(name.encode()) for name in names}
        assert len(slots) == 1
        assert store._node.port == redis_cluster.node_for(names[0]).port
    finally:
        store.close()


def test_stores_from_cluster_clients_sync_and_async_share_with_the_url(
    redis_cluster: RedisClusterServer, cluster_url: str
) -> None:
    prefix = cluster_url.rsplit("prefix=", 1)[1]
    port = redis_cluster.nodes[1].port  # any node leads to the one serving the slot
    stores = [
        RedisStore(cluster_url, refresh=0),
        RedisStore(redis.cluster.RedisCluster(host="127.0.0.1", port=port), prefix=prefix),
        RedisStore(
            redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=port),
            prefix=prefix,
            refresh=0,
        ),
    ]
    try:
        for store in stores:
            store.update("p", count)
            assert store.flush()
        assert [store.read(["p"])["p"] for store in (stores[0], stores[2])] == [{"n": 3}] * 2
    finally:
        for store in stores:
            store.close()


def test_on_the_cluster_processes_share_cooldowns_and_budgets_without_a_warning(
    fleet: Fleet, replica: Replica, cluster_url: str
) -> None:
    fleet.run(store_warnings)  # from now on
    # A timeout generous for busy CI machines: a slow answer is no warning of the cluster's.
    options = {"store_options": {"refresh": 0.2, "timeout": 0.5}}
    honoured = check_sync_and_async_processes_share(fleet, replica, cluster_url, **options)
    assert honoured < 1.0  # the cooldown opened in one process, honoured by all
    assert all(view["shared"] for view in fleet.run(read, "mixed"))
    assert fleet.run(store_warnings) == [[]] * len(fleet)


def test_a_cluster_node_killed_and_restarted_costs_no_call(fleet: Fleet, replica: Replica) -> None:
    with RedisClusterServer() as cluster:
        pool = [spec(replica, "Mishalsgpt", timeout=5.0), spec(replica, "Lockchat", timeout=5.0)]
        routers(fleet, "node", f"{cluster.url}&prefix=outage", pool, cooldown=60.0)
        serving = cluster.node_for("{outage}")
        replica.set_fault("Mishalsgpt", "slow", delay=0.005)
        results: list[Any] = []
        calls = threading.Thread(
            target=lambda: results.extend(fleet.run(ainvoke_many, "node", 100, 4))
        )
        calls.start()
        wait_for(lambda: len(replica.requests) > 40)
        serving.stop()  # mid-run: the node that holds the router's keys
        calls.join()
        assert sum(r.get("errors", 0) for r in results) == 0
        assert sum(sum(v for k, v in r.items() if k.startswith("ok:")) for r in results) == 400
        assert not any(view["shared"] for view in fleet.run(read, "node"))

        cluster.restart(serving)  # back with its slots, without its data
        wait_for(lambda: all(view["shared"] for view in fleet.run(read, "node")), timeout=30)
        replica.set_fault("Mishalsgpt", "http_500", times=2)
        fleet.one(2, call_many, "node", ["c", "d"], use_async=True)
        assert fleet.one(2, flush, "node")
        wait_for(lambda: {s["Mishalsgpt"]["circuit"] for s in fleet.run(stats, "node")} == {"open"})
