"""Routing-quality benchmark: routers over a pool of flaky free-style providers.

Starts the loopback pool of ``bench/pool.py`` (six OpenAI-compatible providers
failing 0, 5, 20, 40, 70 and 100 % of requests in the ways free ones do, with
heavy-tailed time to first byte; its own process, so its CPU is not counted),
then runs the same workload through each system, each in a fresh process:

- ``ChatG4FRouter`` with ``strategy="fastest"`` and ``"priority"``, default
  settings and ``timeout=<deadline>``; with ``on_interrupt="raise"`` beside the
  default continuation when the router has that field; ``fastest`` with
  ``hedge_after=0.5``;
- LiteLLM's ``Router`` with ``routing_strategy="latency-based-routing"`` and
  ``"simple-shuffle"`` (the six endpoints in one model group, ``num_retries=2``,
  each endpoint also a group of its own in a fallback list), streaming through
  ``acompletion(stream=True)``, when ``litellm`` is installed;
- ``ChatOpenAI(...).with_fallbacks([...])`` over the six endpoints, when
  ``langchain-openai`` is installed.

Every system lists the providers in the same order (``pool.PROVIDERS``). The
workload: ``--calls`` streamed calls, ``--concurrency`` at a time, prompt
``question <i>``, each call cut at ``--deadline`` seconds by the harness
whatever the system does. Per system it prints: correct answers (the call
returned without an error and its streamed text equals the pool's answer
exactly), exact among successes (the text is exact, among calls that returned
without an error: empty or cut answers passed off as complete lower it), time
to the first non-empty text p50/p95/p99 (over the calls that got any text),
requests per correct answer and requests to the dead provider (counted by the
pool), client CPU seconds over the workload and peak RSS. It measures; it
asserts nothing. CPU figures depend on what else the machine runs.

    pip install -e ".[bench]" && python bench/routing.py [--seed 1] [--calls 600]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline, before any import

from machine import machine
from pool import DEAD, PROVIDERS, expected_answer

HERE = Path(__file__).resolve().parent
HEDGE_AFTER = 0.5
LITELLM_RETRIES = 2

Stream = Callable[[str], AsyncIterator[str]]


@dataclass(frozen=True)
class System:
    key: str
    label: str
    kind: str  # "router", "litellm" or "openai"
    options: dict[str, Any] = field(default_factory=dict)


SYSTEMS = (
    System("fastest", "ChatG4FRouter, fastest", "router", {"strategy": "fastest"}),
    System(
        "fastest-raise",
        'ChatG4FRouter, fastest, on_interrupt="raise"',
        "router",
        {"strategy": "fastest", "on_interrupt": "raise"},
    ),
    System("priority", "ChatG4FRouter, priority", "router", {"strategy": "priority"}),
    System(
        "priority-raise",
        'ChatG4FRouter, priority, on_interrupt="raise"',
        "router",
        {"strategy": "priority", "on_interrupt": "raise"},
    ),
    System(
        "fastest-hedge",
        f"ChatG4FRouter, fastest, hedge_after={HEDGE_AFTER:g}",
        "router",
        {"strategy": "fastest", "hedge_after": HEDGE_AFTER},
    ),
    System(
        "litellm-latency",
        "LiteLLM Router, latency-based",
        "litellm",
        {"routing_strategy": "latency-based-routing"},
    ),
    System(
        "litellm-shuffle",
        "LiteLLM Router, simple-shuffle",
        "litellm",
        {"routing_strategy": "simple-shuffle"},
    ),
    System("openai-fallbacks", "ChatOpenAI.with_fallbacks", "openai"),
)


def endpoint(url: str, name: str) -> str:
    return f"{url}/{name}/v1"


# -- the systems, built in the child process -------------------------------------


def g4f_router(url: str, model: str, deadline: float, options: dict[str, Any]) -> Stream:
    from langchain_g4f import ChatG4F, ChatG4FRouter
    from langchain_g4f.providers import OpenAICompatible

    chats = [
        ChatG4F(provider=OpenAICompatible(spec.name, endpoint(url, spec.name)), model=model)
        for spec in PROVIDERS
    ]
    router = ChatG4FRouter(providers=chats, timeout=deadline, **options)

    async def stream(prompt: str) -> AsyncIterator[str]:
        async for chunk in router.astream(prompt):
            yield chunk.content

    return stream


def litellm_router(url: str, model: str, deadline: float, options: dict[str, Any]) -> Stream:
    import litellm
    from litellm import Router

    litellm.suppress_debug_info = True

    def deployment(group: str, name: str) -> dict[str, Any]:
        params = {"model": f"openai/{model}", "api_base": endpoint(url, name), "api_key": "none"}
        return {"model_name": group, "litellm_params": params}

    names = [spec.name for spec in PROVIDERS]
    router = Router(
        model_list=[deployment("pool", name) for name in names]
        + [deployment(name, name) for name in names],
        fallbacks=[{"pool": names}],
        num_retries=LITELLM_RETRIES,
        timeout=deadline,
        **options,
    )

    async def stream(prompt: str) -> AsyncIterator[str]:
        response = await router.acompletion(
            model="pool", messages=[{"role": "user", "content": prompt}], stream=True
        )
        async for chunk in response:
            if chunk.choices:
                yield chunk.choices[0].delta.content or ""

    return stream


def openai_fallbacks(url: str, model: str, deadline: float, _options: dict[str, Any]) -> Stream:
    from langchain_openai import ChatOpenAI

    chats = [
        ChatOpenAI(model=model, base_url=endpoint(url, spec.name), api_key="none", timeout=deadline)
        for spec in PROVIDERS
    ]
    chain = chats[0].with_fallbacks(chats[1:])

    async def stream(prompt: str) -> AsyncIterator[str]:
        async for chunk in chain.astream(prompt):
            yield chunk.content

    return stream


BUILDERS = {"router": g4f_router, "litellm": litellm_router, "openai": openai_fallbacks}


# -- the workload (child process) ------------------------------------------------


async def one_call(stream: Stream, prompt: str, deadline: float) -> dict[str, Any]:
    start = time.perf_counter()
    parts: list[str] = []
    first: list[float] = []

    async def consume() -> None:
        async for text in stream(prompt):
            if text and not first:
                first.append(time.perf_counter() - start)
            parts.append(text)

    error = None
    try:
        await asyncio.wait_for(consume(), deadline)
    except Exception as exc:  # every failure is a result here, reported by type
        error = type(exc).__name__
    return {
        "exact": "".join(parts) == expected_answer(prompt),
        "error": error,
        "ttft": first[0] if first else None,
    }


async def workload(
    stream: Stream, calls: int, concurrency: int, deadline: float
) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(concurrency)

    async def gated(i: int) -> dict[str, Any]:
        async with gate:
            return await one_call(stream, f"question {i}", deadline)

    return await asyncio.gather(*(gated(i) for i in range(calls)))


def run_child(args: argparse.Namespace) -> None:
    system = next(s for s in SYSTEMS if s.key == args.child)
    stream = BUILDERS[system.kind](args.url, f"bench-{system.key}", args.deadline, system.options)
    cpu, wall = time.process_time(), time.perf_counter()
    calls = asyncio.run(workload(stream, args.calls, args.concurrency, args.deadline))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"calls": calls, "cpu": cpu, "wall": wall, "rss_mb": rss_mb}))


# -- the orchestration (parent process) ------------------------------------------


def unavailable(system: System) -> str | None:
    """Why ``system`` cannot run here, or ``None``."""
    if system.kind == "litellm" and importlib.util.find_spec("litellm") is None:
        return "litellm is not installed (pip install -e '.[bench]')"
    if system.kind == "openai" and importlib.util.find_spec("langchain_openai") is None:
        return "langchain-openai is not installed (pip install -e '.[bench]')"
    if "on_interrupt" in system.options:
        from langchain_g4f import ChatG4FRouter

        if "on_interrupt" not in ChatG4FRouter.model_fields:
            return "this ChatG4FRouter has no on_interrupt"
    return None


def start_pool(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    pool = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "pool.py"),
            "--seed",
            str(args.seed),
            "--stall",
            str(args.stall),
            "--words-per-second",
            str(args.words_per_second),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = pool.stdout.readline() if pool.stdout else ""
    if not line.startswith("READY "):
        pool.kill()
        msg = f"the pool did not start: {line!r}"
        raise RuntimeError(msg)
    return pool, f"http://127.0.0.1:{int(line.split()[1])}"


def pool_stats(url: str, run: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_stats/{run}", timeout=10) as response:
        return json.load(response)


def run_system(system: System, url: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        system.key,
        "--url",
        url,
        "--calls",
        str(args.calls),
        "--concurrency",
        str(args.concurrency),
        "--deadline",
        str(args.deadline),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        msg = f"{system.label} failed (exit {done.returncode}):\n{tail}"
        raise RuntimeError(msg)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["pool"] = pool_stats(url, system.key)
    return summarize(system, result)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(system: System, result: dict[str, Any]) -> dict[str, Any]:
    calls = result["calls"]
    correct = sum(1 for c in calls if c["exact"] and c["error"] is None)
    successes = [c for c in calls if c["error"] is None]
    ttfts = [c["ttft"] for c in calls if c["ttft"] is not None]
    requests = result["pool"]["requests"]
    total = sum(requests.values())
    return {
        "system": system.key,
        "label": system.label,
        "calls": len(calls),
        "correct": correct / len(calls),
        "exact_among_successes": (sum(c["exact"] for c in successes) / len(successes))
        if successes
        else None,
        "ttft_ms": {
            f"p{q}": (v * 1e3 if (v := percentile(ttfts, q)) is not None else None)
            for q in (50, 95, 99)
        },
        "requests": total,
        "requests_per_answer": total / correct if correct else None,
        "requests_to_dead": requests.get(DEAD, 0),
        "requests_by_provider": requests,
        "continuations": sum(result["pool"]["continuations"].values()),
        "fates": result["pool"]["kinds"],
        "errors": dict(Counter(c["error"] for c in calls if c["error"]).most_common()),
        "cpu_s": result["cpu"],
        "rss_mb": result["rss_mb"],
        "wall_s": result["wall"],
        "server_cpu_s": result["pool"]["server_cpu_s"],
    }


def fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "| system | correct | exact among successes | TTFT p50 / p95 / p99 ms "
            "| requests per answer | requests to dead | client CPU s | peak RSS MB |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        t = row["ttft_ms"]
        lines.append(
            f"| {row['label']} | {row['correct']:.1%} | {fmt(row['exact_among_successes'], '.1%')} "
            f"| {fmt(t['p50'], '.0f')} / {fmt(t['p95'], '.0f')} / {fmt(t['p99'], '.0f')} "
            f"| {fmt(row['requests_per_answer'], '.2f')} | {row['requests_to_dead']} "
            f"| {row['cpu_s']:.1f} | {row['rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def run_parent(args: argparse.Namespace) -> None:
    wanted = set(args.only.split(",")) if args.only else {s.key for s in SYSTEMS}
    unknown = wanted - {s.key for s in SYSTEMS}
    if unknown:
        known = ", ".join(s.key for s in SYSTEMS)
        sys.exit(f"unknown systems: {', '.join(sorted(unknown))}; known: {known}")
    rows, notes = [], []
    pool, url = start_pool(args)
    try:
        for system in (s for s in SYSTEMS if s.key in wanted):
            reason = unavailable(system)
            if reason:
                notes.append(f"{system.label}: skipped, {reason}")
                continue
            print(f"running {system.label} ...", file=sys.stderr, flush=True)
            rows.append(run_system(system, url, args))
    finally:
        pool.terminate()
        pool.wait()
    report(args, rows, notes)


def report(args: argparse.Namespace, rows: list[dict[str, Any]], notes: list[str]) -> None:
    settings = {
        "seed": args.seed,
        "calls": args.calls,
        "concurrency": args.concurrency,
        "deadline_s": args.deadline,
        "stall_s": args.stall,
        "words_per_second": args.words_per_second,
    }
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    print(
        "pool: "
        + ", ".join(
            f"{s.name} {s.failure_rate:.0%} failing, TTFB median {s.ttfb_median * 1e3:.0f} ms"
            for s in PROVIDERS
        )
    )
    print("settings: " + ", ".join(f"{k} {v:g}" for k, v in settings.items()) + "\n")
    print(table(rows))
    for row in rows:
        errors = ", ".join(f"{name} {n}" for name, n in row["errors"].items()) or "none"
        print(
            f"\n{row['label']}: requests by provider {row['requests_by_provider']}, "
            f"continuation requests {row['continuations']}; errors: {errors}"
        )
    for note in notes:
        print(f"\n{note}")
    if rows:
        walls = sum(row["wall_s"] for row in rows)
        print(
            f"\nThe pool server used {rows[-1]['server_cpu_s']:.1f} CPU s in all "
            f"(the workloads took {walls:.0f} s)."
        )
    print(
        "\nCPU seconds are the client process's over the workload; the machine's other load "
        "makes them noisy."
    )
    if args.json:
        document = {"machine": machine(), "settings": settings, "rows": rows, "notes": notes}
        if args.json == "-":
            print(json.dumps(document, indent=2))
        else:
            Path(args.json).write_text(json.dumps(document, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="the pool's seed")
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=30)
    parser.add_argument("--deadline", type=float, default=10.0, help="per call, s")
    parser.add_argument("--stall", type=float, default=30.0, help="length of the pool's stalls, s")
    parser.add_argument(
        "--words-per-second", type=float, default=20.0, help="the pool's stream pace"
    )
    parser.add_argument(
        "--only", help="comma-separated systems: " + ", ".join(s.key for s in SYSTEMS)
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON ('-': stdout)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
