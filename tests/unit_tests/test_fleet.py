"""Many processes, one router's knowledge: four worker processes, each with its own
ChatG4FRouter, share health and budgets through a real Redis; the providers are the
replica's, in this process."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from langchain_g4f.testing import Replica
from langchain_g4f.testing.redis_server import RedisServer
from tests.unit_tests.fleet_harness import (
    Fleet,
    ainvoke_many,
    call_many,
    flush,
    invoke,
    invoke_many,
    make_router,
    read,
    stats,
)

pytestmark = pytest.mark.loopback

#: The workers' cache refresh (seconds); a test waits this long for others' changes.
REFRESH = 0.2


@pytest.fixture(autouse=True)
def _fresh_replica(replica: Replica) -> None:
    replica.reset()


def spec(replica: Replica, name: str, *, refused: bool = False, **kwargs: Any) -> dict:
    base_url = f"http://127.0.0.1:{replica._closed_port()}" if refused else replica.base_url(name)
    return {"provider": name, "base_url": base_url, "timeout": 1.0} | kwargs


def routers(
    fleet: Fleet,
    name: str,
    url: str | None,
    specs: list[list[dict]] | list[dict],
    **options: Any,
) -> None:
    """The same router in every worker (``specs`` per worker when a list of lists)."""
    options.setdefault("strategy", "priority")
    options.setdefault("timeout", 5.0)
    options.setdefault("backoff", 0.01)
    options.setdefault("max_retries", 0)
    options.setdefault("store_options", {"refresh": REFRESH})
    per_worker = specs if isinstance(specs[0], list) else [specs] * len(fleet)
    for i, worker_specs in enumerate(per_worker):
        fleet.one(i, make_router, name, url, worker_specs, **options)


def requested(replica: Replica) -> Counter:
    return Counter(entry["provider"] for entry in replica.requests)


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_a_provider_failing_in_one_process_is_cooled_down_in_all(
    fleet: Fleet, replica: Replica, redis_url: str
) -> None:
    pool = [spec(replica, "Mishalsgpt", timeout=5.0), spec(replica, "Lockchat", timeout=5.0)]
    routers(fleet, "cool", redis_url, pool, cooldown=3.0, timeout=10.0)
    replica.set_fault("Mishalsgpt", "http_500")
    first = fleet.one(0, invoke_many, "cool", ["a", "b"])
    assert [r["provider"] for r in first] == ["Lockchat", "Lockchat"]
    assert fleet.one(0, flush, "cool")
    wait_for(lambda: {s["Mishalsgpt"]["circuit"] for s in fleet.run(stats, "cool")} == {"open"})

    before = requested(replica)["mishalsgpt"]
    for answers in fleet.run(invoke_many, "cool", ["c", "d", "e"]):
        assert [(r["provider"], r["attempts"]) for r in answers] == [("Lockchat", [])] * 3
    assert requested(replica)["mishalsgpt"] == before  # nobody asked it again
    assert {s["Mishalsgpt"]["circuit"] for s in fleet.run(stats, "cool")} == {"open"}

    # The cooldown ends; the provider is well again, and slow: its one probe is in
    # flight while every process wants it (the other provider now fails).
    replica.set_fault("Lockchat", "http_500")
    replica.set_fault("Mishalsgpt", "slow", delay=1.5, times=1)
    replica.set_reply("Mishalsgpt", None, chunks=["probe ok"])
    wait_for(lambda: fleet.one(0, stats, "cool")["Mishalsgpt"]["circuit"] == "half_open")
    before = requested(replica)["mishalsgpt"]
    answers: list[Any] = []
    calls = threading.Thread(target=lambda: answers.extend(fleet.run(invoke, "cool", "probe?")))
    calls.start()
    wait_for(lambda: requested(replica)["mishalsgpt"] > before)
    time.sleep(0.3)  # the others have claimed meanwhile, and wait
    assert requested(replica)["mishalsgpt"] - before == 1  # one probe for the fleet
    calls.join()
    # The probe closed the circuit for all: the others then got their answers from it.
    assert [r.get("provider", r) for r in answers] == ["Mishalsgpt"] * 4
    assert all(fleet.run(flush, "cool"))
    wait_for(lambda: {s["Mishalsgpt"]["circuit"] for s in fleet.run(stats, "cool")} == {"closed"})


def test_a_connection_error_in_one_process_does_not_cool_the_provider_down_elsewhere(
    fleet: Fleet, replica: Replica, redis_url: str
) -> None:
    broken = [spec(replica, "Mishalsgpt", refused=True), spec(replica, "Lockchat")]
    healthy = [spec(replica, "Mishalsgpt"), spec(replica, "Lockchat")]
    routers(fleet, "net", redis_url, [broken, healthy, broken, healthy])
    answers = fleet.one(0, invoke_many, "net", ["a", "b", "c"])
    assert answers[0]["attempts"] == [("Mishalsgpt", "ProviderConnectionError")]
    assert fleet.one(0, stats, "net")["Mishalsgpt"]["circuit"] == "open"  # for itself
    assert fleet.one(0, flush, "net")
    time.sleep(REFRESH)
    elsewhere = fleet.one(1, stats, "net")["Mishalsgpt"]
    assert (elsewhere["failures"], elsewhere["circuit"]) == (0, "closed")
    assert fleet.one(1, invoke, "net", "d")["provider"] == "Mishalsgpt"

    # A second host sees connection errors too: now they count for the fleet.
    fleet.one(2, invoke_many, "net", ["e", "f"])
    assert fleet.one(2, flush, "net")
    # What is shared is the count; whether it opens the circuit is the health policy's
    # call (it depends on the successes in between, shared at once).
    wait_for(lambda: fleet.one(3, stats, "net")["Mishalsgpt"]["failures"] >= 1)


def test_processes_with_clocks_minutes_apart_agree_on_every_deadline(
    fleet: Fleet, replica: Replica, redis_url: str
) -> None:
    pool = [spec(replica, "Mishalsgpt"), spec(replica, "Lockchat")]
    offsets = [300.0, -240.0, 0.0, 90.0]
    for i, offset in enumerate(offsets):
        fleet.one(
            i,
            make_router,
            "skew",
            redis_url,
            pool,
            strategy="priority",
            timeout=5.0,
            max_retries=0,
            cooldown=30.0,
            store_options={"refresh": REFRESH, "clock_offset": offset},
        )
    replica.set_fault("Mishalsgpt", "rate_limit", retry_after=45)
    fleet.one(0, invoke, "skew", "a")  # a 429 asking for 45 s ...
    fleet.one(0, invoke, "skew", "b")  # ... twice in a row: the circuit opens for 45 s
    assert fleet.one(0, flush, "skew")
    wait_for(
        lambda: all("open_until" in v["states"]["Mishalsgpt"] for v in fleet.run(read, "skew"))
    )
    views = fleet.run(read, "skew")
    nows = [view["now"] for view in views]
    assert max(nows) - min(nows) < 1.0  # the same clock: the server's
    open_until = {view["states"]["Mishalsgpt"]["open_until"] for view in views}
    assert len(open_until) == 1
    lefts = [s["Mishalsgpt"]["cooldown_left"] for s in fleet.run(stats, "skew")]
    assert all(40 < left <= 45 for left in lefts)
    assert max(lefts) - min(lefts) < 1.0


def test_a_budget_holds_across_processes_through_routers(
    fleet: Fleet, replica: Replica, redis_url: str
) -> None:
    pool = [spec(replica, "Lockchat", requests_per_minute=5), spec(replica, "Mishalsgpt")]
    routers(fleet, "budget", redis_url, pool)
    results = fleet.run(invoke_many, "budget", [f"q{i}" for i in range(5)])
    answers = [r for rs in results for r in rs]
    assert all("provider" in r for r in answers)  # every call answered
    assert requested(replica)["lockchat"] == 5
    assert sum(r["provider"] == "Lockchat" for r in answers) == 5
    budget = fleet.one(0, stats, "budget")["Lockchat"]["budget"]
    assert (budget["requests"], budget["requests_left"]) == (5, 0)


def test_shared_counters_equal_the_sum_of_what_the_processes_observed(
    fleet: Fleet, replica: Replica, redis_url: str
) -> None:
    # Generous timeouts: a timeout (this host's, maybe) would stay out of the shared
    # counters by design.
    names = ("Mishalsgpt", "Gravityengine", "Lockchat")
    pool = [spec(replica, name, timeout=10.0) for name in names]
    routers(fleet, "count", redis_url, pool, strategy="round_robin", cooldown=0.2, timeout=60.0)
    replica.set_fault("Mishalsgpt", "http_503", times=60)
    replica.set_fault("Gravityengine", "html", times=40)
    seen: Counter = Counter()
    for observed in fleet.run(ainvoke_many, "count", 200, 20):
        seen.update(observed)
    assert seen["errors"] == 0
    assert sum(seen[f"ok:{name}"] for name in names) == 800
    assert all(fleet.run(flush, "count"))
    observed = {name: (seen[f"ok:{name}"], seen[f"failed:{name}"]) for name in names}

    def shared() -> dict[str, tuple[int, int]]:
        views = fleet.one(0, stats, "count")
        return {name: (views[name]["successes"], views[name]["failures"]) for name in names}

    wait_for(lambda: shared() == observed)
    assert observed["Mishalsgpt"][1] > 0
    assert observed["Gravityengine"][1] > 0


def test_sync_and_async_processes_share_health_and_budgets(
    fleet: Fleet, replica: Replica, redis_url: str
) -> None:
    check_sync_and_async_processes_share(fleet, replica, redis_url)


def check_sync_and_async_processes_share(
    fleet: Fleet, replica: Replica, url: str, **options: Any
) -> float:
    """Workers 0 and 2 call through ``ainvoke``, 1 and 3 through ``invoke``: a cooldown
    opened on either path is honoured on both, a budget holds across both. Returns the
    seconds until every process honoured the first cooldown."""
    use_async = [True, False, True, False]
    names = ("Mishalsgpt", "Gravityengine", "Lockchat")
    pool = [spec(replica, name, timeout=5.0) for name in names]
    routers(fleet, "mixed", url, pool, cooldown=30.0, timeout=10.0, **options)
    replica.set_fault("Mishalsgpt", "http_500")
    replica.set_fault("Gravityengine", "http_500")
    first = fleet.one(0, call_many, "mixed", ["a", "b"], use_async=True)
    assert [r["provider"] for r in first] == ["Lockchat"] * 2
    opened = time.monotonic()
    wait_for(lambda: {s["Mishalsgpt"]["circuit"] for s in fleet.run(stats, "mixed")} == {"open"})
    honoured = time.monotonic() - opened
    fleet.one(1, call_many, "mixed", ["c", "d"], use_async=False)  # Gravityengine: sync
    wait_for(lambda: {s["Gravityengine"]["circuit"] for s in fleet.run(stats, "mixed")} == {"open"})
    before = requested(replica)
    for i, mode in enumerate(use_async):
        answers = fleet.one(i, call_many, "mixed", ["e", "f"], use_async=mode)
        assert [(r["provider"], r["attempts"]) for r in answers] == [("Lockchat", [])] * 2
    after = requested(replica)
    assert (after["mishalsgpt"], after["gravityengine"]) == (
        before["mishalsgpt"],
        before["gravityengine"],
    )

    budgeted = [spec(replica, "Lockchat", requests_per_minute=5), spec(replica, "Mishalsgpt")]
    replica.reset()
    # a prefix of its own (the url ends with the prefix)
    routers(fleet, "mixed_budget", f"{url}-budget", budgeted, **options)
    answers = [
        r
        for i, mode in enumerate(use_async)
        for r in fleet.one(i, call_many, "mixed_budget", ["q1", "q2", "q3"], use_async=mode)
    ]
    assert all("provider" in r for r in answers)  # every call answered
    assert requested(replica)["lockchat"] == 5
    assert sum(r["provider"] == "Lockchat" for r in answers) == 5
    return honoured


def test_redis_killed_mid_run_every_call_succeeds_and_sharing_resumes(
    fleet: Fleet, replica: Replica
) -> None:
    with RedisServer() as server:
        pool = [spec(replica, "Mishalsgpt", timeout=5.0), spec(replica, "Lockchat", timeout=5.0)]
        routers(fleet, "outage", server.url, pool, cooldown=60.0)
        replica.set_fault("Mishalsgpt", "slow", delay=0.005)
        results: list[Any] = []
        calls = threading.Thread(
            target=lambda: results.extend(fleet.run(ainvoke_many, "outage", 150, 5))
        )
        calls.start()
        time.sleep(0.5)
        server.stop()  # mid-run
        calls.join()
        assert sum(r.get("errors", 0) for r in results) == 0
        assert sum(sum(v for k, v in r.items() if k.startswith("ok:")) for r in results) == 600
        assert not any(view["shared"] for view in fleet.run(read, "outage"))

        # While Redis is down each process learns alone: a cooldown here stays here.
        replica.set_fault("Mishalsgpt", "http_500", times=2)
        fleet.one(0, invoke_many, "outage", ["a", "b"])
        assert fleet.one(0, stats, "outage")["Mishalsgpt"]["circuit"] == "open"
        assert fleet.one(1, stats, "outage")["Mishalsgpt"]["circuit"] == "closed"

        server.start()  # empty, as after a restart without persistence
        wait_for(lambda: all(view["shared"] for view in fleet.run(read, "outage")))
        for s in fleet.run(stats, "outage"):  # no stale cooldown left behind
            assert s["Mishalsgpt"]["circuit"] == "closed"
        replica.set_fault("Mishalsgpt", "http_500", times=2)
        fleet.one(2, invoke_many, "outage", ["c", "d"])
        assert fleet.one(2, flush, "outage")
        wait_for(
            lambda: {s["Mishalsgpt"]["circuit"] for s in fleet.run(stats, "outage")} == {"open"}
        )


def test_health_command_prints_the_fleets_view(
    replica: Replica, redis_url: str, capsys: pytest.CaptureFixture
) -> None:
    from langchain_g4f import ChatG4F, ChatG4FRouter
    from langchain_g4f.cli import main

    providers = [
        ChatG4F(
            provider="Lockchat",
            base_url=replica.base_url("Lockchat"),
            timeout=1.0,
            requests_per_minute=10,
            max_concurrent=2,
        ),
        ChatG4F(provider="Mishalsgpt", base_url=replica.base_url("Mishalsgpt"), timeout=1.0),
    ]
    router = ChatG4FRouter(providers=providers, strategy="priority", store=redis_url)
    router.invoke("hi")
    replica.set_fault("Lockchat", "http_500")
    router.invoke("again")
    router.invoke("and again")
    assert router._store.flush()
    url, prefix = redis_url.split("?prefix=")
    assert main(["health", "--store", url, "--prefix", prefix]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "provider",
        "state",
        "cooldown",
        "calls",
        "success",
        "recent",
        "ttft",
        "budget",
        "left",
    ]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"Lockchat", "Mishalsgpt"}
    assert "open" in rows["Lockchat"]
    assert "7/10 per 60s, 2/2 at once" in rows["Lockchat"]
    assert rows["Lockchat"].split()[3:5] == ["1/3", "33%"]  # observed, not smoothed
    assert rows["Mishalsgpt"].split()[3:6] == ["2/2", "100%", "100%"]
    assert "closed" in rows["Mishalsgpt"]
    assert router.stats()["Lockchat"]["budget"]["requests_left"] == 7


def test_health_command_without_redis_says_so(capsys: pytest.CaptureFixture) -> None:
    from langchain_g4f.cli import main

    with RedisServer() as server:
        url = server.url
    assert main(["health", "--store", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1  # one line, worded for this command
    assert "does not answer" in err
