"""Request budgets: requests per minute and concurrent requests, per provider.

A provider's budget is declared on its chat model
(``ChatG4F(..., requests_per_minute=N, max_concurrent=M)``) and held where the
router's knowledge is held: in the process (:class:`LocalBudgets`, the default)
or, with a :class:`~langchain_g4f.redis_store.RedisStore`, in Redis for the whole
fleet. A holder of budgets implements :class:`BudgetStore`:

- ``acquire(key, limits)`` atomically takes one request from the sliding window
  and one concurrency lease, or takes nothing and says how long to wait;
- ``release(grant)`` gives the lease back (a lease a dead process never gave back
  expires after ``lease_ttl``);
- ``usage(key, limits)`` tells how much of the budget is in use, for operators.

A holder whose ``acquire`` waits for a server also implements
:class:`AsyncBudgetStore` (``await aacquire(key, limits)``): async calls await it, so
a slow server never blocks their event loop.

:class:`Budget` is one provider's budget as a chat model uses it: take without
waiting (the router, which moves on to another provider) or wait within a
timeout (a chat model alone), then raise
:class:`~langchain_g4f.errors.BudgetExhaustedError`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from langchain_g4f.errors import BudgetExhaustedError
from langchain_g4f.store import Store

__all__ = [
    "AsyncBudgetStore",
    "Budget",
    "BudgetStore",
    "Grant",
    "Limits",
    "LocalBudgets",
    "budgets_of",
]

#: Seconds a concurrency lease lives unless renewed (a process that dies frees it then).
LEASE_TTL = 30.0
#: How often to look again when every concurrency lease is taken.
LEASE_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Limits:
    """A provider's declared budget; ``None`` for no limit."""

    per_window: int | None = None
    concurrent: int | None = None
    window: float = 60.0

    def __bool__(self) -> bool:
        return self.per_window is not None or self.concurrent is not None


@dataclass(slots=True)
class Grant:
    """The answer to ``acquire``: taken (with a lease to release), or a wait in seconds."""

    key: str
    granted: bool
    wait: float = 0.0
    lease: str | None = None
    #: Where the lease lives: ``"local"`` or a shared store's name; release goes back there.
    holder: str = "local"
    released: bool = field(default=False, compare=False)


@runtime_checkable
class BudgetStore(Protocol):
    """Holds budgets; every method is atomic."""

    def acquire(self, key: str, limits: Limits) -> Grant:
        """Take one request and one concurrency lease of ``key``'s budget, or nothing."""
        ...

    def release(self, grant: Grant) -> None:
        """Give back the grant's concurrency lease, if it has one."""
        ...

    def usage(self, key: str, limits: Limits) -> dict[str, float]:
        """``{"requests": in the window now, "concurrent": live leases}``."""
        ...


@runtime_checkable
class AsyncBudgetStore(Protocol):
    """A :class:`BudgetStore` that can also be awaited (a server's answer takes a round trip)."""

    async def aacquire(self, key: str, limits: Limits) -> Grant:
        """:meth:`BudgetStore.acquire` without blocking the event loop."""
        ...


def new_lease() -> str:
    return uuid.uuid4().hex


class LocalBudgets:
    """Budgets kept in this process.

    Per key, a sliding window of request times and a set of leases, under one lock.
    ``clock`` is seconds, monotonic.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, lease_ttl: float = LEASE_TTL
    ) -> None:
        self.clock = clock
        self.lease_ttl = lease_ttl
        self._lock = threading.Lock()
        self._sent: dict[str, deque[float]] = {}
        self._leases: dict[str, dict[str, float]] = {}

    def _prune(self, key: str, limits: Limits, now: float) -> tuple[deque[float], dict[str, float]]:
        sent = self._sent.setdefault(key, deque())
        while sent and sent[0] <= now - limits.window:
            sent.popleft()
        leases = self._leases.setdefault(key, {})
        for lease in [lease for lease, until in leases.items() if until <= now]:
            del leases[lease]
        return sent, leases

    def acquire(self, key: str, limits: Limits) -> Grant:
        """Take one request and one concurrency lease of ``key``'s budget, or nothing."""
        with self._lock:
            now = self.clock()
            sent, leases = self._prune(key, limits, now)
            wait = 0.0
            if limits.per_window is not None and len(sent) >= limits.per_window:
                wait = sent[0] + limits.window - now
            if limits.concurrent is not None and len(leases) >= limits.concurrent:
                wait = max(wait, LEASE_POLL)
            if wait > 0:
                return Grant(key, granted=False, wait=wait)
            if limits.per_window is not None:
                sent.append(now)
            lease = None
            if limits.concurrent is not None:
                lease = new_lease()
                leases[lease] = now + self.lease_ttl
            return Grant(key, granted=True, lease=lease)

    def release(self, grant: Grant) -> None:
        """Give back the grant's concurrency lease, if it has one."""
        if grant.lease is None:
            return
        with self._lock:
            self._leases.get(grant.key, {}).pop(grant.lease, None)

    def usage(self, key: str, limits: Limits) -> dict[str, float]:
        """``{"requests": in the window now, "concurrent": live leases}``."""
        with self._lock:
            sent, leases = self._prune(key, limits, self.clock())
            return {"requests": len(sent), "concurrent": len(leases)}


def budgets_of(store: Store) -> BudgetStore:
    """The budget holder that goes with a store.

    The store itself when it holds budgets (a shared store), else budgets in this
    process on the store's clock.
    """
    if isinstance(store, BudgetStore):
        return store
    return LocalBudgets(store.now)


class Budget:
    """One provider's budget, as its chat model takes from it."""

    def __init__(self, key: str, limits: Limits, holder: BudgetStore) -> None:
        self.key = key
        self.limits = limits
        self.holder = holder
        self._free_at = 0.0  # time.monotonic() when the last refusal said room comes back

    def __repr__(self) -> str:
        return f"Budget({self.key!r}, {self.limits})"

    def wait_hint(self) -> float:
        """Seconds until the budget is expected to have room (0.0: room, or nothing known).

        Judged from the last refusal seen here; no I/O.
        """
        return max(0.0, self._free_at - time.monotonic())

    def take(self) -> Grant:
        """Take a request's share now, or raise :class:`BudgetExhaustedError`."""
        grant = self.holder.acquire(self.key, self.limits)
        if grant.granted:
            return grant
        self._free_at = time.monotonic() + grant.wait
        raise self._exhausted(grant.wait)

    def acquire(self, timeout: float | None) -> Grant:
        """Take a request's share, waiting up to ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            grant = self.holder.acquire(self.key, self.limits)
            if grant.granted:
                return grant
            pause = self._pause(grant, deadline)
            time.sleep(pause)

    async def atake(self) -> Grant:
        """:meth:`take` without blocking the event loop."""
        grant = await self._aholder_acquire()
        if grant.granted:
            return grant
        self._free_at = time.monotonic() + grant.wait
        raise self._exhausted(grant.wait)

    async def aacquire(self, timeout: float | None) -> Grant:
        """:meth:`acquire` without blocking the event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            grant = await self._aholder_acquire()
            if grant.granted:
                return grant
            await asyncio.sleep(self._pause(grant, deadline))

    async def _aholder_acquire(self) -> Grant:
        """The holder's acquire, awaited when the holder can be (a shared store)."""
        if isinstance(self.holder, AsyncBudgetStore):
            return await self.holder.aacquire(self.key, self.limits)
        return self.holder.acquire(self.key, self.limits)

    def _pause(self, grant: Grant, deadline: float | None) -> float:
        now = time.monotonic()
        self._free_at = now + grant.wait
        if deadline is not None and now + grant.wait > deadline:
            raise self._exhausted(grant.wait)
        return grant.wait

    def release(self, grant: Grant) -> None:
        """Give the grant back to its holder, once however often it is called."""
        if not grant.released:
            grant.released = True
            self.holder.release(grant)

    def usage(self) -> dict[str, Any]:
        """``{"requests", "requests_left", "concurrent", "concurrent_left"}`` now."""
        used = self.holder.usage(self.key, self.limits)
        limits = self.limits
        return {
            "requests": used["requests"],
            "requests_left": None
            if limits.per_window is None
            else max(0, limits.per_window - int(used["requests"])),
            "concurrent": used["concurrent"],
            "concurrent_left": None
            if limits.concurrent is None
            else max(0, limits.concurrent - int(used["concurrent"])),
        }

    def _exhausted(self, wait: float) -> BudgetExhaustedError:
        parts = []
        if self.limits.per_window is not None:
            parts.append(f"{self.limits.per_window} requests per {self.limits.window:g}s")
        if self.limits.concurrent is not None:
            parts.append(f"{self.limits.concurrent} at a time")
        return BudgetExhaustedError(
            f"the request budget ({', '.join(parts)}) is spent; room again in about "
            f"{wait:.2f}s. Nothing was sent; raise the budget or wait.",
            provider=self.key,
            retry_after=wait,
        )


class Held:
    """A sync iterator that gives its grant back when it ends, fails or is closed."""

    __slots__ = ("_budget", "_grant", "_it")

    def __init__(self, it: Any, budget: Budget, grant: Grant) -> None:
        self._it, self._budget, self._grant = it, budget, grant

    def __iter__(self) -> Held:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._it)
        except BaseException:
            self._budget.release(self._grant)
            raise

    def close(self) -> None:
        try:
            self._it.close()
        finally:
            self._budget.release(self._grant)


class AsyncHeld:
    """:class:`Held` for an async iterator."""

    __slots__ = ("_budget", "_grant", "_it")

    def __init__(self, it: Any, budget: Budget, grant: Grant) -> None:
        self._it, self._budget, self._grant = it, budget, grant

    def __aiter__(self) -> AsyncHeld:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._it.__anext__()
        except BaseException:
            self._budget.release(self._grant)
            raise

    async def aclose(self) -> None:
        try:
            await self._it.aclose()
        finally:
            self._budget.release(self._grant)
