"""Worker processes for the fleet tests: each runs functions of this module on request.

``Fleet(n)`` spawns ``n`` processes (the ``spawn`` start method: nothing of the test
process is inherited). ``fleet.run(fn, *args, **kwargs)`` runs ``fn(ctx, *args, **kwargs)``
in every worker at once and returns their results in order; ``fleet.one(i, fn, ...)``
runs it in worker ``i``. ``ctx`` is a dict that lives as long as the worker (routers, stores).
An exception in a worker is raised in the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import time
import traceback
from collections import Counter
from functools import partial
from typing import Any

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.errors import BudgetExhaustedError, G4FError
from langchain_g4f.redis_store import RedisStore


class WorkerError(RuntimeError):
    pass


def _serve(conn: Any) -> None:
    ctx: dict[str, Any] = {}
    while True:
        message = conn.recv()
        if message is None:
            break
        fn, args, kwargs = message
        try:
            conn.send((True, fn(ctx, *args, **kwargs)))
        except BaseException:  # reported to the test process
            conn.send((False, traceback.format_exc()))
    for store in ctx.get("stores", []):
        store.close()


class Fleet:
    def __init__(self, n: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.processes = []
        for _ in range(n):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child,), daemon=True)
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)

    def __len__(self) -> int:
        return len(self.pipes)

    def run(self, fn: Any, *args: Any, **kwargs: Any) -> list[Any]:
        """``fn(ctx, *args, **kwargs)`` in every worker at once; their results."""
        for pipe in self.pipes:
            pipe.send((fn, args, kwargs))
        return [self._result(pipe) for pipe in self.pipes]

    def one(self, i: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(ctx, *args, **kwargs)`` in worker ``i``; its result."""
        self.pipes[i].send((fn, args, kwargs))
        return self._result(self.pipes[i])

    def _result(self, pipe: Any) -> Any:
        if not pipe.poll(120):
            msg = "a worker gave no answer in 120 s"
            raise WorkerError(msg)
        ok, value = pipe.recv()
        if not ok:
            raise WorkerError(value)
        return value

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


# --- functions run in the workers ---------------------------------------------------


def _skewed(offset: float) -> float:
    return time.monotonic() + offset


def store_of(ctx: dict[str, Any], url: str, clock_offset: float = 0.0, **kwargs: Any) -> RedisStore:
    """A Redis store in this worker; ``clock_offset`` moves its local clock."""
    if clock_offset:
        kwargs["clock"] = partial(_skewed, clock_offset)
    # A busy CI host sometimes answers after the default 50 ms: the fleet tests are
    # about sharing, so they allow a second (a test of the bound sets its own).
    kwargs.setdefault("timeout", 1.0)
    store = RedisStore(url, **kwargs)
    ctx.setdefault("stores", []).append(store)
    return store


def budgeted_calls(ctx: dict[str, Any], url: str, base_url: str, per_minute: int, calls: int):
    """A ChatG4F alone with a fleet-wide budget tries ``calls`` calls; (answers, refusals)."""
    chat = ChatG4F(
        provider="Lockchat",
        base_url=base_url,
        requests_per_minute=per_minute,
        store=store_of(ctx, url),
        timeout=2.0,  # refusals come at once; a slow answer is not retried (spending twice)
    )
    answers = refusals = 0
    for i in range(calls):
        try:
            chat.invoke(f"call {i}")
            answers += 1
        except BudgetExhaustedError:
            refusals += 1
    return answers, refusals


def make_router(ctx: dict[str, Any], name: str, url: str | None, specs: list[dict], **kwargs: Any):
    """A router in this worker, its providers ``ChatG4F(**spec)``; store at ``url``."""
    store = store_of(ctx, url, **kwargs.pop("store_options", {})) if url else None
    ctx[name] = ChatG4FRouter(providers=[ChatG4F(**spec) for spec in specs], store=store, **kwargs)
    return ctx[name].provider_names


def invoke(ctx: dict[str, Any], name: str, prompt: str) -> dict[str, Any]:
    """One call; its answering provider and failed attempts, or the error."""
    return _outcome(lambda: ctx[name].invoke(prompt))


def _outcome(call: Any) -> dict[str, Any]:
    """What a call returned, as the tests compare it: provider, failed attempts, text."""
    try:
        message = call()
    except G4FError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    metadata = message.response_metadata
    return {
        "provider": metadata["provider"],
        "attempts": [(a["provider"], a["error"]) for a in metadata["attempts"]],
        "text": message.content,
    }


def invoke_many(ctx: dict[str, Any], name: str, prompts: list[str]) -> list[dict[str, Any]]:
    return [invoke(ctx, name, prompt) for prompt in prompts]


def ainvoke_many(ctx: dict[str, Any], name: str, n: int, concurrency: int) -> dict[str, Any]:
    """``n`` async calls, ``concurrency`` at a time; what this process observed."""
    router = ctx[name]

    async def main() -> Counter:
        seen: Counter = Counter()
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                try:
                    message = await router.ainvoke(f"async call {i}")
                except G4FError as exc:
                    seen["errors"] += 1
                    for attempt in getattr(exc, "attempts", []):
                        seen[f"failed:{attempt['provider']}"] += 1
                    return
                metadata = message.response_metadata
                seen[f"ok:{metadata['provider']}"] += 1
                for attempt in metadata["attempts"]:
                    seen[f"failed:{attempt['provider']}"] += 1

        await asyncio.gather(*(one(i) for i in range(n)))
        return seen

    seen = asyncio.run(main())
    router._store.flush()
    return dict(seen)


def stats(ctx: dict[str, Any], name: str) -> dict[str, Any]:
    return ctx[name].stats()


def flush(ctx: dict[str, Any], name: str) -> bool:
    return ctx[name]._store.flush()


def read(ctx: dict[str, Any], name: str) -> dict[str, Any]:
    """The router's store: its clock, the raw states, whether Redis answers."""
    router = ctx[name]
    store = router._store
    return {
        "now": store.now(),
        "states": store.read(router.provider_names),
        "shared": getattr(store, "shared", False),
    }


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def store_warnings(ctx: dict[str, Any]) -> list[str]:
    """The Redis store's warnings logged in this worker since its first call here."""
    if "warnings" not in ctx:
        ctx["warnings"] = _Warnings()
        logging.getLogger("langchain_g4f.redis_store").addHandler(ctx["warnings"])
    return list(ctx["warnings"].messages)


def ainvoke(ctx: dict[str, Any], name: str, prompt: str) -> dict[str, Any]:
    """:func:`invoke` through ``ainvoke``, on an event loop of its own."""

    async def call() -> Any:
        return await ctx[name].ainvoke(prompt)

    return _outcome(lambda: asyncio.run(call()))


def call_many(ctx: dict[str, Any], name: str, prompts: list[str], *, use_async: bool) -> list:
    """Calls one after the other, through ``invoke`` or ``ainvoke``."""
    one = ainvoke if use_async else invoke
    return [one(ctx, name, prompt) for prompt in prompts]
