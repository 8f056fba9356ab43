"""Routing-quality benchmark: routers over a pool of flaky free-style providers, as regret.

Starts the loopback pool of ``bench/pool.py`` (six OpenAI-compatible providers
failing 0, 5, 20, 40, 70 and 100 % of requests in the ways free ones do, with
heavy-tailed time to first byte whose medians the seed shuffles; its own
process, so its CPU is not counted), then runs the same workload through each
system, each in a fresh process:

- the **oracle**: ``ChatOpenAI`` pinned to the provider that never fails (with
  ``--drift``, to the one that never fails in each half), what a user would have
  picked knowing the pool in advance; every other row is measured against it;

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
whatever the system does. ``--drift``: from the middle prompt on, the provider
that never failed fails 70 % of requests and the one failing 70 % never fails.

Per seed (``--seeds 1,2,3``: one table each) and system it prints: correct
answers (returned without an error, streamed text equal to the pool's answer),
requests per correct answer and requests to the dead provider (counted by the
pool); time to the first non-empty text (TTFT) and to the whole answer (total,
an error's time for a call that failed) over the warm-up (the first
``WARMUP`` calls, started before much can be known) and the steady state (the
rest), in ms and as a ratio of the oracle's; client CPU seconds. Then, over
the seeds, the geometric mean of each ratio. It measures; it asserts nothing.
CPU figures depend on what else the machine runs.

    pip install -e ".[bench]" && python bench/routing.py [--seeds 1,2,3,4] [--drift]
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
from pool import DEAD, DRIFTER, PROVIDERS, RELIABLE, expected_answer, prompt_number, providers_for

HERE = Path(__file__).resolve().parent
HEDGE_AFTER = 0.5
LITELLM_RETRIES = 2
#: Calls that make the warm-up; the steady state is the rest.
WARMUP = 60

Stream = Callable[[str], AsyncIterator[str]]


@dataclass(frozen=True)
class System:
    key: str
    label: str
    kind: str  # "oracle", "router", "litellm" or "openai"
    options: dict[str, Any] = field(default_factory=dict)


SYSTEMS = (
    System("oracle", "oracle: ChatOpenAI on the provider that never fails", "oracle"),
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


def oracle(url: str, model: str, deadline: float, options: dict[str, Any]) -> Stream:
    from langchain_openai import ChatOpenAI

    def pinned(name: str) -> Any:
        return ChatOpenAI(
            model=model, base_url=endpoint(url, name), api_key="none", timeout=deadline
        )

    before, after = pinned(RELIABLE), pinned(DRIFTER)
    drift_at = options.get("drift_at")

    async def stream(prompt: str) -> AsyncIterator[str]:
        number = prompt_number(prompt)
        drifted = drift_at is not None and number is not None and number >= drift_at
        async for chunk in (after if drifted else before).astream(prompt):
            yield chunk.content

    return stream


BUILDERS = {
    "oracle": oracle,
    "router": g4f_router,
    "litellm": litellm_router,
    "openai": openai_fallbacks,
}


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
        "total": time.perf_counter() - start,
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
    options = dict(system.options)
    if system.kind == "oracle":
        options["drift_at"] = args.drift_at
    stream = BUILDERS[system.kind](args.url, f"bench-{system.key}", args.deadline, options)
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
    if system.kind in ("openai", "oracle") and importlib.util.find_spec("langchain_openai") is None:
        return "langchain-openai is not installed (pip install -e '.[bench]')"
    if "on_interrupt" in system.options:
        from langchain_g4f import ChatG4FRouter

        if "on_interrupt" not in ChatG4FRouter.model_fields:
            return "this ChatG4FRouter has no on_interrupt"
    return None


def drift_at(args: argparse.Namespace) -> int | None:
    return args.calls // 2 if args.drift else None


def start_pool(args: argparse.Namespace, seed: int) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable,
        str(HERE / "pool.py"),
        "--seed",
        str(seed),
        "--stall",
        str(args.stall),
        "--words-per-second",
        str(args.words_per_second),
    ]
    if args.drift:
        command += ["--drift-at", str(drift_at(args))]
    pool = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
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
    if args.drift:
        command += ["--drift-at", str(drift_at(args))]
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


def ms(values: list[float], q: float) -> float | None:
    value = percentile(values, q)
    return None if value is None else value * 1e3


def summarize(system: System, result: dict[str, Any]) -> dict[str, Any]:
    calls = result["calls"]
    correct = sum(1 for c in calls if c["exact"] and c["error"] is None)
    warm, steady = calls[:WARMUP], calls[WARMUP:]
    requests = result["pool"]["requests"]
    total = sum(requests.values())
    ttfts = [c["ttft"] for c in steady if c["ttft"] is not None]
    totals = [c["total"] for c in steady]
    return {
        "system": system.key,
        "label": system.label,
        "calls": len(calls),
        "correct": correct / len(calls),
        "warm_ttft_p95": ms([c["ttft"] for c in warm if c["ttft"] is not None], 95),
        "ttft_p50": ms(ttfts, 50),
        "ttft_p95": ms(ttfts, 95),
        "total_p50": ms(totals, 50),
        "total_p95": ms(totals, 95),
        "requests": total,
        "requests_per_answer": total / correct if correct else None,
        "requests_to_dead": requests.get(DEAD, 0),
        "requests_by_provider": requests,
        "continuations": sum(result["pool"]["continuations"].values()),
        "errors": dict(Counter(c["error"] for c in calls if c["error"]).most_common()),
        "cpu_s": result["cpu"],
        "rss_mb": result["rss_mb"],
        "wall_s": result["wall"],
    }


#: The timing columns, each also shown as a ratio of the oracle's.
TIMES = ("warm_ttft_p95", "ttft_p50", "ttft_p95", "total_p50", "total_p95")


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's times as ratios of the oracle row's (when there is one)."""
    oracle = next((row for row in rows if row["system"] == "oracle"), None)
    for row in rows:
        row["ratios"] = {
            key: row[key] / oracle[key]
            if oracle is not None and row[key] is not None and oracle[key]
            else None
            for key in TIMES
        }


def fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def timed(row: dict[str, Any], key: str) -> str:
    ratio = row["ratios"][key]
    return f"{fmt(row[key], '.0f')} ({fmt(ratio, '.2f')}x)"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "| system | correct | requests per answer | warm-up TTFT p95 ms | steady TTFT p50 "
            "| steady TTFT p95 | steady total p50 | steady total p95 | requests to dead "
            "| client CPU s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {row['label']} | {row['correct']:.1%} | {fmt(row['requests_per_answer'], '.3f')} | "
        + " | ".join(timed(row, key) for key in TIMES)
        + f" | {row['requests_to_dead']} | {row['cpu_s']:.1f} |"
        for row in rows
    )
    return "\n".join(lines)


def geometric_means(runs: list[list[dict[str, Any]]]) -> str:
    """Per system, the geometric mean over the seeds of each time ratio."""
    by_system: dict[str, list[dict[str, Any]]] = {}
    for rows in runs:
        for row in rows:
            by_system.setdefault(row["label"], []).append(row)
    lines = [
        (
            "| system | seeds | warm-up TTFT p95 | steady TTFT p50 | steady TTFT p95 "
            "| steady total p50 | steady total p95 | requests per answer (worst) "
            "| correct (worst) |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, rows in by_system.items():
        cells = []
        for key in TIMES:
            ratios = [row["ratios"][key] for row in rows if row["ratios"][key]]
            mean = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
            cells.append(f"{fmt(mean, '.2f')}x")
        spent = [row["requests_per_answer"] for row in rows if row["requests_per_answer"]]
        lines.append(
            f"| {label} | {len(rows)} | "
            + " | ".join(cells)
            + f" | {fmt(max(spent, default=None), '.3f')} | {min(r['correct'] for r in rows):.1%} |"
        )
    return "\n".join(lines)


def run_parent(args: argparse.Namespace) -> None:
    wanted = set(args.only.split(",")) if args.only else {s.key for s in SYSTEMS}
    unknown = wanted - {s.key for s in SYSTEMS}
    if unknown:
        known = ", ".join(s.key for s in SYSTEMS)
        sys.exit(f"unknown systems: {', '.join(sorted(unknown))}; known: {known}")
    wanted.add("oracle")  # the yardstick
    seeds = [int(seed) for seed in args.seeds.split(",")] if args.seeds else [args.seed]
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    settings = {
        "calls": args.calls,
        "concurrency": args.concurrency,
        "deadline_s": args.deadline,
        "stall_s": args.stall,
        "words_per_second": args.words_per_second,
        "warm-up calls": WARMUP,
    }
    print("settings: " + ", ".join(f"{k} {v:g}" for k, v in settings.items()))
    if args.drift:
        swap = f"{RELIABLE} and {DRIFTER} swap failure rates"
        print(f"drift: from prompt {drift_at(args)} on, {swap}")
    runs, document = [], []
    for seed in seeds:
        rows, notes = run_seed(args, seed, wanted)
        add_ratios(rows)
        report(seed, rows, notes)
        runs.append(rows)
        document.append({"seed": seed, "rows": rows, "notes": notes})
    if len(runs) > 1:
        print(f"\n## Over seeds {', '.join(map(str, seeds))}: geometric mean of the ratios\n")
        print(geometric_means(runs))
    print(
        "\nCPU seconds are the client process's over the workload; the machine's other load "
        "makes them noisy."
    )
    if args.json:
        text = json.dumps(
            {"machine": machine(), "settings": settings, "drift": args.drift, "runs": document},
            indent=2,
        )
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text)


def run_seed(
    args: argparse.Namespace, seed: int, wanted: set[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    rows, notes = [], []
    pool, url = start_pool(args, seed)
    try:
        for system in (s for s in SYSTEMS if s.key in wanted):
            reason = unavailable(system)
            if reason:
                notes.append(f"{system.label}: skipped, {reason}")
                continue
            print(f"seed {seed}: running {system.label} ...", file=sys.stderr, flush=True)
            rows.append(run_system(system, url, args))
    finally:
        pool.terminate()
        pool.wait()
    return rows, notes


def report(seed: int, rows: list[dict[str, Any]], notes: list[str]) -> None:
    print(f"\n## Seed {seed}\n")
    print(
        "pool: "
        + ", ".join(
            f"{s.name} {s.failure_rate:.0%} failing, TTFB median {s.ttfb_median * 1e3:.0f} ms"
            for s in providers_for(seed)
        )
        + "\n"
    )
    print(table(rows))
    for row in rows:
        errors = ", ".join(f"{name} {n}" for name, n in row["errors"].items()) or "none"
        print(
            f"- {row['label']}: requests by provider {row['requests_by_provider']}, "
            f"continuation requests {row['continuations']}; errors: {errors}"
        )
    for note in notes:
        print(f"- {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="the pool's seed")
    parser.add_argument("--seeds", help="several seeds, comma-separated (overrides --seed)")
    parser.add_argument(
        "--drift", action="store_true", help="swap the 0 %% and 70 %% providers' rates halfway"
    )
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
    parser.add_argument("--drift-at", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
