"""Router benchmark: what routing costs, what fallback adds, what hedging saves.

One run against the local replica on 127.0.0.1 (for 1., in a process of its own),
medians of ``--runs``:

1. stream throughput of ``ChatG4FRouter`` over one provider against ``ChatG4F``
   alone (sync and async, ``--chunks`` chunks), as wall time and as the client
   process's CPU time;
2. time to first text of a call whose first provider refuses connections (the
   router falls back to the second) against a call to the second provider alone:
   the added latency of failing over;
3. time to first text when the first provider is slow to answer (``--slow``
   seconds), without hedging and with ``hedge_after=--hedge``.

It measures; it asserts nothing.

    pip install -e . && python bench/router.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.strategies import PriorityStrategy
from langchain_g4f.testing import Replica

PROMPT = "benchmark"


def first_text_sync(stream: Iterator[Any]) -> float:
    start = time.perf_counter()
    for chunk in stream:
        if chunk.content:
            elapsed = time.perf_counter() - start
            break
    else:
        msg = "no text"
        raise RuntimeError(msg)
    for _ in stream:  # drain, so the connection is reused
        pass
    return elapsed


#: A throughput sample: chunks per second of wall time and of this process's CPU time.
Rates = tuple[float, float]


def throughput_sync(make: Callable[[], Iterator[Any]]) -> Rates:
    start, cpu = time.perf_counter(), time.process_time()
    n = sum(1 for _ in make())
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def throughput_async(
    loop: asyncio.AbstractEventLoop, make: Callable[[], AsyncIterator[Any]]
) -> Rates:
    async def run() -> Rates:
        start, cpu = time.perf_counter(), time.process_time()
        n = 0
        async for _ in make():
            n += 1
        return n / (time.perf_counter() - start), n / (time.process_time() - cpu)

    return loop.run_until_complete(run())


def serve_replica(conn: Any, chunks: int) -> None:
    """In its own process: a replica in benchmark mode until told to stop."""
    with Replica() as replica:
        replica.set_stream_size(chunks, "tok ")
        conn.send(replica.base_url("Lockchat"))
        conn.recv()


def paired(
    rounds: int, base: Callable[[], Rates], other: Callable[[], Rates]
) -> tuple[float, float, float, float, float]:
    """Rates of ``base`` and ``other``, sampled in turn.

    Returns their best wall-time rates, the ratio of the best (noise only slows a run
    down: the best is the closest to what the code costs, as ``timeit`` reasons), the
    median of the rounds' wall-time ratios, and the median of their CPU-time ratios
    (the replica serves from another process, so this one's CPU is the client's work
    alone: the steadiest of the three on a shared machine).
    """
    base(), other()  # warm-up
    bases, others, walls, cpus = [], [], [], []
    for i in range(rounds):
        if i % 2:
            b, o = base(), other()
        else:
            o, b = other(), base()
        bases.append(b[0])
        others.append(o[0])
        walls.append(o[0] / b[0])
        cpus.append(o[1] / b[1])
    best, best_other = max(bases), max(others)
    return (
        best,
        best_other,
        best_other / best,
        statistics.median(walls),
        statistics.median(cpus),
    )


def median_of(runs: int, sample: Callable[[], float]) -> float:
    sample()  # warm-up
    return statistics.median(sample() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=5000)
    parser.add_argument("--slow", type=float, default=0.5, help="the slow provider's delay, s")
    parser.add_argument("--hedge", type=float, default=0.1, help="hedge_after, s")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()

    with Replica() as replica:

        def chat(name: str) -> ChatG4F:
            return ChatG4F(provider=name, base_url=replica.base_url(name), max_retries=0)

        print(f"replica at {replica.url}; medians of {args.runs} runs\n")

        # 1. throughput, from a replica in a process of its own (in this one, its
        # thread would take the GIL from the client being measured). The two are
        # sampled in turn (order alternating), so a change in the machine's load falls
        # on both; the ratio is the median of the rounds' ratios.
        parent, child = multiprocessing.get_context("spawn").Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=serve_replica, args=(child, args.chunks), daemon=True
        )
        server.start()
        lockchat_url = parent.recv()
        alone = ChatG4F(provider="Lockchat", base_url=lockchat_url, max_retries=0)
        router = ChatG4FRouter(
            providers=[ChatG4F(provider="Lockchat", base_url=lockchat_url, max_retries=0)],
            strategy="priority",
        )
        rounds = max(5, args.runs // 2)
        sync = paired(
            rounds,
            lambda: throughput_sync(lambda: alone.stream(PROMPT)),
            lambda: throughput_sync(lambda: router.stream(PROMPT)),
        )
        async_ = paired(
            rounds,
            lambda: throughput_async(loop, lambda: alone.astream(PROMPT)),
            lambda: throughput_async(loop, lambda: router.astream(PROMPT)),
        )
        parent.send("stop")
        server.join()
        print(
            f"stream throughput, {args.chunks:,} chunks, {rounds} rounds in turn"
            "   best chunks/s  × ChatG4F: best  median  median CPU"
        )
        for kind, (base, through, best, median, cpu) in (("stream", sync), ("astream", async_)):
            print(f"  {'ChatG4F.' + kind:40} {base:>15,.0f} {1:>16.2f}")
            label = "ChatG4FRouter." + kind
            print(f"  {label:40} {through:>15,.0f} {best:>16.2f} {median:>7.2f} {cpu:>11.2f}")
        replica.reset()

        # 2. failover from a refused provider
        replica.set_fault("Mishalsgpt", "refuse")
        refused = ChatG4F(
            provider="Mishalsgpt", base_url=replica.base_url("Mishalsgpt"), max_retries=0
        )
        direct = chat("Lockchat")
        # the health model never learns here, so the refused provider is tried first on every call
        failover = ChatG4FRouter(
            providers=[refused, chat("Lockchat")],
            max_retries=0,
            strategy=PriorityStrategy(min_calls=10**9, explore=0.0),
            cooldown_after=10**9,
            min_calls=10**9,
        )
        t_direct = median_of(args.runs, lambda: first_text_sync(direct.stream(PROMPT)))
        t_failover = median_of(args.runs, lambda: first_text_sync(failover.stream(PROMPT)))
        print("\ntime to first text                                   ms")
        print(f"  Lockchat alone                          {t_direct * 1e3:>10.2f}")
        print(
            f"  router: Mishalsgpt refused, Lockchat    {t_failover * 1e3:>10.2f}"
            f"   (+{(t_failover - t_direct) * 1e3:.2f} ms for the failover)"
        )
        replica.reset()

        # 3. hedging past a slow provider
        replica.set_fault("Mishalsgpt", "slow", delay=args.slow)

        def hedged(hedge_after: float | None) -> ChatG4FRouter:
            return ChatG4FRouter(
                providers=[chat("Mishalsgpt"), chat("Lockchat")],
                strategy="priority",
                hedge_after=hedge_after,
            )

        plain, hedging = hedged(None), hedged(args.hedge)
        t_plain = median_of(max(3, args.runs // 4), lambda: first_text_sync(plain.stream(PROMPT)))
        t_hedged = median_of(
            max(3, args.runs // 4), lambda: first_text_sync(hedging.stream(PROMPT))
        )
        print(f"  {f'Mishalsgpt slow ({args.slow:g} s), no hedging':39} {t_plain * 1e3:>10.2f}")
        print(
            f"  {f'same, hedge_after={args.hedge:g} s':39} {t_hedged * 1e3:>10.2f}"
            f"   ({t_plain / t_hedged:.1f}× sooner)"
        )
        stats = hedging.stats()
        print(
            "  hedged router's successes: "
            + ", ".join(f"{name} {s['successes']}" for name, s in stats.items())
        )
    loop.close()


if __name__ == "__main__":
    main()
