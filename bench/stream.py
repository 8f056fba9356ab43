"""Streaming benchmark: ChatG4F and ChatG4FRouter against their peers, one run.

Starts the local replica as an OpenAI SSE server on 127.0.0.1 and measures, on the
same server in the same process, chunks per second and time to first chunk for:

- a raw ``requests`` + ``json`` loop (no LangChain): the wire's ceiling;
- langchain-core's own ``BaseChatModel.stream`` over prebuilt chunks: the floor
  cost of any LangChain chat model; and over chunks built as they are yielded;
- ``ChatOpenAI.stream`` / ``.astream`` (when langchain-openai is installed);
- ``ChatG4F.stream`` / ``.astream``;
- ``ChatG4FRouter.stream`` / ``.astream`` (over the same one provider);
- ``ChatG4F.stream`` with the garbage collector paused (its share of the cost);

at 1,000 and 20,000 chunks, printed as a table with ratios to ChatOpenAI and to
the raw loop, and how the cost per chunk grows from the smallest size to the
largest. Then: the first call (a model built, then ``invoke`` / ``ainvoke``d
once) beside a call on a reused model, for ChatG4F and ChatOpenAI; 200
concurrent ``astream`` calls through one router (wall time, peak threads), and
import times. It measures; it asserts nothing.

    pip install -e ".[bench]" && python bench/stream.py [--runs 5] [--sizes 1000 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from machine import machine  # bench/ is sys.path[0]

try:  # the peer; without it the ChatOpenAI rows are left out
    from langchain_openai import ChatOpenAI
except ImportError:
    ChatOpenAI = None

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.providers import OpenAICompatible
from langchain_g4f.testing import Replica

PROMPT = "benchmark"


class PrebuiltChunks(BaseChatModel):
    """A chat model whose ``_stream`` only yields chunks built in advance.

    ``refill`` builds fresh chunks (outside the timed part): chunks that went
    through ``stream`` once already carry an id and would flatter the floor.
    """

    size: int
    chunks: list[ChatGenerationChunk] = []

    def refill(self) -> None:
        self.chunks = [
            ChatGenerationChunk(message=AIMessageChunk(content="tok ")) for _ in range(self.size)
        ]

    @property
    def _llm_type(self) -> str:
        return "prebuilt"

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        yield from self.chunks


class FreshChunks(PrebuiltChunks):
    """The same, but each chunk is built as it is yielded, as a real model must."""

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        for _ in range(self.size):
            yield ChatGenerationChunk(message=AIMessageChunk(content="tok "))


def gc_paused(
    run: Callable[[], tuple[int, float, float]],
) -> Callable[[], tuple[int, float, float]]:
    """``run`` with the cyclic garbage collector off, to show its share of the cost."""

    def paused() -> tuple[int, float, float]:
        gc.disable()
        try:
            return run()
        finally:
            gc.enable()

    return paused


def timed_sync(stream: Callable[[], Iterator[Any]]) -> tuple[int, float, float]:
    """(chunks, seconds, seconds to first chunk) for one sync stream."""
    start = time.perf_counter()
    first = None
    n = 0
    for _ in stream():
        if first is None:
            first = time.perf_counter() - start
        n += 1
    return n, time.perf_counter() - start, first or 0.0


#: One event loop for every async measurement: clients cached by a chat model
#: (ChatOpenAI's among them) are bound to the loop they were created on.
LOOP = asyncio.new_event_loop()


def timed_async(stream: Callable[[], Any]) -> tuple[int, float, float]:
    async def run() -> tuple[int, float, float]:
        start = time.perf_counter()
        first = None
        n = 0
        async for _ in stream():
            if first is None:
                first = time.perf_counter() - start
            n += 1
        return n, time.perf_counter() - start, first or 0.0

    return LOOP.run_until_complete(run())


def raw_loop(url: str, model: str) -> Callable[[], Iterator[str]]:
    session = requests.Session()

    def stream() -> Iterator[str]:
        body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
        with session.post(url, json=body, stream=True) as response:
            for line in response.iter_lines():
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    content = json.loads(line[6:])["choices"][0]["delta"].get("content")
                    if content:
                        yield content

    return stream


def measure(
    label: str,
    run: Callable[[], tuple[int, float, float]],
    runs: int,
    prepare: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    prepare()
    run()  # warm-up: connections, imports, caches
    results = []
    for _ in range(runs):
        prepare()
        results.append(run())
    chunks = results[0][0]
    seconds = statistics.median(r[1] for r in results)
    ttft = statistics.median(r[2] for r in results)
    return {"label": label, "chunks": chunks, "rate": chunks / seconds, "ttft": ttft}


def table(rows: list[dict[str, Any]], size: int) -> str:
    by_label = {r["label"]: r for r in rows}
    raw = by_label.get("raw requests loop")
    lines = [
        f"\n{size:,} chunks (median of runs)",
        (
            f"{'':34} {'chunks/s':>10} {'µs/chunk':>9} {'TTFT ms':>8} "
            f"{'× ChatOpenAI':>13} {'× raw':>7}"
        ),
    ]
    for row in rows:
        peer_label = (
            "ChatOpenAI.astream" if row["label"].endswith(".astream") else "ChatOpenAI.stream"
        )
        peer = by_label.get(peer_label)
        vs_peer = f"{row['rate'] / peer['rate']:.2f}" if peer else "-"
        vs_raw = f"{row['rate'] / raw['rate']:.2f}" if raw else "-"
        lines.append(
            f"{row['label']:34} {row['rate']:>10,.0f} {1e6 / row['rate']:>9.1f} "
            f"{row['ttft'] * 1e3:>8.2f} {vs_peer:>13} {vs_raw:>7}"
        )
    return "\n".join(lines)


def first_calls(build: dict[str, Callable[[], Any]], calls: int) -> str:
    """Median ms of a fresh model's first call beside a reused model's call.

    ``build`` maps a name to a function that constructs a model. For each, sync
    and async, ``calls`` times: build a model and ``invoke`` / ``ainvoke`` it
    once (fresh), then call one model built before (reused).
    """

    def sync_call(model: Any) -> float:
        start = time.perf_counter()
        model.invoke(PROMPT)
        return time.perf_counter() - start

    def async_call(model: Any) -> float:
        async def run() -> float:
            start = time.perf_counter()
            await model.ainvoke(PROMPT)
            return time.perf_counter() - start

        return LOOP.run_until_complete(run())

    def fresh(make: Callable[[], Any], call: Callable[[Any], float]) -> float:
        start = time.perf_counter()
        model = make()
        return time.perf_counter() - start + call(model)

    lines = [
        (
            "\nfirst call: model built then called once (fresh) vs a reused model; "
            f"median of {calls}, ms"
        ),
        f"{'':24} {'fresh':>8} {'reused':>8} {'fresh - reused':>15}",
    ]
    for name, make in build.items():
        for how, call in (("invoke", sync_call), ("ainvoke", async_call)):
            reused_model = make()
            call(reused_model)  # warm-up: imports, shared pools, connections
            fresh(make, call)
            # Interleaved, so that a change in the machine's load touches both alike.
            pairs = [(fresh(make, call), call(reused_model)) for _ in range(calls)]
            first = statistics.median(p[0] for p in pairs)
            reused = statistics.median(p[1] for p in pairs)
            lines.append(
                f"{name + '.' + how:24} {first * 1e3:>8.2f} {reused * 1e3:>8.2f} "
                f"{(first - reused) * 1e3:>15.2f}"
            )
    return "\n".join(lines)


def concurrent_router(router: Any, streams: int) -> str:
    peak = threading.active_count()
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, threading.active_count())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def one() -> int:
        return sum([1 async for _ in router.astream(PROMPT)])

    async def run() -> list[int]:
        return await asyncio.gather(*(one() for _ in range(streams)))

    before = threading.active_count()
    start = time.perf_counter()
    counts = LOOP.run_until_complete(run())
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    return (
        f"\n{streams} concurrent astream calls through one router, {counts[0]:,} chunks each: "
        f"{wall:.2f} s wall, {sum(counts) / wall:,.0f} chunks/s in all; "
        f"threads {before} before, peak {peak} (the sampler thread included)"
    )


def import_time(statement: str, runs: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(runs)
    ]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument(
        "--concurrent", type=int, default=200, help="concurrent router streams (0 to skip)"
    )
    parser.add_argument(
        "--first-calls", type=int, default=100, help="calls per first-call row (0 to skip)"
    )
    args = parser.parse_args()

    if ChatOpenAI is None:
        print("langchain-openai is not installed: ChatOpenAI rows are left out")
    with Replica() as replica:
        root = replica.base_url("OpenAI") + "/v1"
        model = "bench-model"
        g4f = ChatG4F(provider=OpenAICompatible("OpenAI", root), model=model, max_retries=0)
        router = ChatG4FRouter(providers=[g4f], strategy="priority")
        print(f"machine: {machine()}")
        print(
            f"server: langchain_g4f.testing.Replica at {replica.url}, "
            "OpenAI SSE, one event per chunk"
        )
        per_chunk: dict[str, list[float]] = {}
        for size in args.sizes:
            replica.set_stream_size(size, "tok ")
            floor = PrebuiltChunks(size=size)
            fresh = FreshChunks(size=size)

            def floor_run(floor: PrebuiltChunks = floor) -> tuple[int, float, float]:
                return timed_sync(lambda: floor.stream(PROMPT))

            cases: list[tuple[str, Callable[[], tuple[int, float, float]]]] = [
                (
                    "raw requests loop",
                    lambda: timed_sync(raw_loop(root + "/chat/completions", model)),
                ),
                ("langchain-core floor (prebuilt)", floor_run),
                (
                    "langchain-core floor (fresh chunks)",
                    lambda fresh=fresh: timed_sync(lambda: fresh.stream(PROMPT)),
                ),
            ]
            if ChatOpenAI is not None:
                openai = ChatOpenAI(base_url=root, api_key="bench", model=model, max_retries=0)
                cases += [
                    ("ChatOpenAI.stream", lambda o=openai: timed_sync(lambda: o.stream(PROMPT))),
                    ("ChatOpenAI.astream", lambda o=openai: timed_async(lambda: o.astream(PROMPT))),
                ]
            cases += [
                ("ChatG4F.stream", lambda: timed_sync(lambda: g4f.stream(PROMPT))),
                ("ChatG4F.astream", lambda: timed_async(lambda: g4f.astream(PROMPT))),
            ]
            cases += [
                ("ChatG4FRouter.stream", lambda: timed_sync(lambda: router.stream(PROMPT))),
                ("ChatG4FRouter.astream", lambda: timed_async(lambda: router.astream(PROMPT))),
                (
                    "ChatG4F.stream, gc paused",
                    gc_paused(lambda: timed_sync(lambda: g4f.stream(PROMPT))),
                ),
            ]
            rows = [
                measure(label, run, args.runs, floor.refill if run is floor_run else lambda: None)
                for label, run in cases
            ]
            print(table(rows, size))
            for row in rows:
                per_chunk.setdefault(row["label"], []).append(1e6 / row["rate"])
        if len(args.sizes) > 1:
            first, last = args.sizes[0], args.sizes[-1]
            print(f"\ncost per chunk at {last:,} chunks / at {first:,} chunks")
            for label, costs in per_chunk.items():
                print(f"  {label:40} {costs[-1] / costs[0]:.2f}")
        if args.first_calls:
            replica.set_stream_size(20, "tok ")
            build: dict[str, Callable[[], Any]] = {
                "ChatG4F": lambda: ChatG4F(
                    provider=OpenAICompatible("OpenAI", root), model=model, max_retries=0
                )
            }
            if ChatOpenAI is not None:
                build["ChatOpenAI"] = lambda: ChatOpenAI(
                    base_url=root, api_key="bench", model=model, max_retries=0
                )
            print(first_calls(build, args.first_calls))
        if args.concurrent:
            replica.set_stream_size(1000, "tok ")
            print(concurrent_router(router, args.concurrent))

    core = import_time("import langchain_core.language_models")
    print("\nimport time (median of 5 fresh interpreters)")
    for statement in (
        "import langchain_core.language_models",
        "from langchain_core.language_models import BaseChatModel",
        "import langchain_g4f",
        "from langchain_g4f import ChatG4F",
        "import langchain_openai",
    ):
        try:
            seconds = import_time(statement)
        except subprocess.CalledProcessError:
            continue
        print(
            f"  {statement:40} {seconds * 1e3:7.1f} ms  "
            f"({seconds / core:.2f}× langchain_core.language_models)"
        )


if __name__ == "__main__":
    main()
