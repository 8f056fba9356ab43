"""Where the router's knowledge lives: a store of numbers, changed atomically.

The health model (:mod:`langchain_g4f.health`) decides what an observation
means; a store only keeps each provider's state, a flat ``{field: number}``
dict, and applies a change to it atomically. The default, :class:`MemoryStore`,
keeps it in the process; a shared store keeps it where several processes see it.

A change is a pure function ``change(state, now) -> new_state``: the store calls
it with the key's current state and the store's clock, and stores what it
returns, as one atomic step (a shared store may call it more than once when
another process changed the key at the same moment; it must have no side
effects).

A store that reads from a server also implements :class:`AsyncStore` (``await
aread(keys)``): before an async call the router awaits it (:func:`prefetch`), so the
call's reads find a fresh copy and never wait for the server on the event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["AsyncStore", "Change", "MemoryStore", "State", "Store", "prefetch"]

#: One provider's state: field name -> number.
State = dict[str, float]
#: ``change(state, now) -> new state``, pure.
Change = Callable[[State, float], State]


@runtime_checkable
class Store(Protocol):
    """Keeps each key's :data:`State`; applies changes atomically."""

    def now(self) -> float:
        """Seconds on the store's clock; absolute deadlines in states use it."""
        ...

    def read(self, keys: Sequence[str]) -> dict[str, State]:
        """Each key's state (an empty dict for a key never changed); a copy."""
        ...

    def update(self, key: str, change: Change, *, hosts: int = 1, sync: bool = False) -> State:
        """Replace the key's state by ``change(state, now)`` atomically; return it.

        For a shared store: ``hosts`` > 1 keeps the change in this process until that
        many distinct hosts made such a change to the key recently (an observation
        that may be this host's own fault, like a broken network); ``sync`` waits
        for the shared result (a claim only one process may win) where a shared store
        would otherwise return this process's view and share the change just after.
        A store in one process ignores both.
        """
        ...


class MemoryStore:
    """States kept in this process, safe across threads and asyncio tasks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, State] = {}

    def now(self) -> float:
        """Seconds on ``clock``."""
        return self.clock()

    def read(self, keys: Sequence[str]) -> dict[str, State]:
        """Each key's state (an empty dict for a key never changed); a copy."""
        with self._lock:
            return {key: dict(self._states.get(key, {})) for key in keys}

    def update(self, key: str, change: Change, *, hosts: int = 1, sync: bool = False) -> State:
        """Replace the key's state by ``change(state, now)``; return a copy of it."""
        with self._lock:
            state = change(dict(self._states.get(key, {})), self.clock())
            self._states[key] = state
            return dict(state)


@runtime_checkable
class AsyncStore(Protocol):
    """A :class:`Store` whose reads can be awaited (they may fetch from a server)."""

    async def aread(self, keys: Sequence[str]) -> dict[str, State]:
        """:meth:`Store.read` without blocking the event loop."""
        ...


async def prefetch(store: Store, keys: Sequence[str]) -> None:
    """Bring ``keys`` up to date before an async call, without blocking the event loop.

    A store that reads from a server (an :class:`AsyncStore`) awaits the fetch it
    needs; a store in this process needs nothing.
    """
    if isinstance(store, AsyncStore):
        await store.aread(keys)
