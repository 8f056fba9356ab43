"""Router benchmark: what routing costs, what fallback adds, what hedging saves.

One run against the local replica on 127.0.0.1, medians of ``--runs``:

1. stream throughput of ``ChatG4FRouter`` over one provider against ``ChatG4F``
   alone (sync and async, ``--chunks`` chunks);
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


def throughput_sync(make: Callable[[], Iterator[Any]]) -> float:
    start = time.perf_counter()
    n = sum(1 for _ in make())
    return n / (time.perf_counter() - start)


def throughput_async(
    loop: asyncio.AbstractEventLoop, make: Callable[[], AsyncIterator[Any]]
) -> float:
    async def run() -> float:
        start = time.perf_counter()
        n = 0
        async for _ in make():
            n += 1
        return n / (time.perf_counter() - start)

    return loop.run_until_complete(run())


def paired(
    rounds: int, base: Callable[[], float], other: Callable[[], float]
) -> tuple[float, float, float]:
    """Median rates of ``base`` and ``other``, sampled in turn, and the median of their ratios."""
    base(), other()  # warm-up
    bases, others, ratios = [], [], []
    for i in range(rounds):
        if i % 2:
            b, o = base(), other()
        else:
            o, b = other(), base()
        bases.append(b)
        others.append(o)
        ratios.append(o / b)
    return statistics.median(bases), statistics.median(others), statistics.median(ratios)


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

        # 1. throughput: the two are sampled in turn (order alternating), so a change in
        # the machine's load falls on both; the ratio is the median of the rounds' ratios.
        replica.set_stream_size(args.chunks, "tok ")
        alone = chat("Lockchat")
        router = ChatG4FRouter(providers=[chat("Lockchat")], strategy="priority")
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
        print(
            f"stream throughput, {args.chunks:,} chunks, {rounds} rounds      chunks/s   × ChatG4F"
        )
        for kind, (base, through, ratio) in (("stream", sync), ("astream", async_)):
            print(f"  {'ChatG4F.' + kind:40} {base:>10,.0f} {1:>9.2f}")
            print(f"  {'ChatG4FRouter.' + kind:40} {through:>10,.0f} {ratio:>9.2f}")
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
