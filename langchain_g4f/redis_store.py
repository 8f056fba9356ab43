"""A store shared by many processes and hosts: the router's knowledge in Redis.

:class:`RedisStore` implements the :class:`~langchain_g4f.store.Store` protocol
and the :class:`~langchain_g4f.budgets.BudgetStore` protocol on one Redis server,
or on a Redis Cluster.

- **Reads** come from a local read-through cache: a key is fetched again when its
  copy is older than ``refresh`` seconds (one pipelined ``MGET`` for every key of
  the read), so a call makes at most one round trip, and a change made by another
  process is seen within ``refresh``. Every committed state is also published on
  a channel the store listens to, so others' changes arrive within milliseconds,
  and a background thread fetches the keys in use before their copy is stale: the
  hot path rarely waits for Redis at all.
- **Updates** apply the change to the local copy at once and return it; a
  background thread applies the same pure change in Redis inside an optimistic
  transaction (``WATCH``/``GET``/``MULTI``/``SET``/``EXEC``, retried on conflict), so
  concurrent updates from many processes all count, and the hot path never waits
  for Redis.
- **Deadlines** are absolute seconds on the Redis server's clock: :meth:`now` is
  the local monotonic clock plus an offset measured against ``TIME``, so hosts
  whose clocks disagree agree on every deadline.
- **Network failures** (``update(..., hosts=2)``): a change that only counts once
  several hosts have seen it (a connection error, a timeout) stays in this
  process until ``hosts`` distinct hosts reported one for the key within
  ``host_window`` seconds; one host's broken network does not cool a provider
  down for the fleet.
- **Budgets** are a sliding window of request times and a set of expiring leases
  per provider, taken atomically by a Lua script on the server's clock.
- **Async calls never block the event loop**: they await :meth:`aread` and
  :meth:`aacquire` on redis-py's asyncio client (one per event loop), which runs the
  same commands and scripts on the same keys as the sync client. On an event loop's
  thread the sync methods never wait for Redis either: a read takes the cached copy
  (the background thread keeps it fresh) and a claim (``update(..., sync=True)``) is
  shared just after, like any update. Only a sync :meth:`acquire` waits there,
  within ``timeout``: a budget needs Redis's answer. An async call whose answer is
  late goes on locally that once (its timeout also counts the loop's busy time);
  whether Redis is down is the background threads' call.
- **Redis Cluster** (``?cluster=true``, or a cluster client): every key carries the
  prefix as its hash tag (``{prefix}:v2:...``), so a store's keys share one hash
  slot and its transactions and scripts stay atomic; the store talks to the node
  that serves that slot, and finds it again when it stops answering.
- **Every key has a TTL**; keys carry a schema version (``{prefix}:v2:...``) and
  values a ``"v"`` field. A value that makes no sense is ignored with a warning.
- **Redis down or slow**: every command has a ``timeout`` (50 ms by default); on
  the first network failure the store logs one warning and goes on in this process
  (a :class:`~langchain_g4f.store.MemoryStore`-like copy, budgets in
  :class:`~langchain_g4f.budgets.LocalBudgets`); the background thread reconnects
  with backoff, and sharing resumes from Redis's state. A wrong URL is no outage:
  it raises :class:`~langchain_g4f.errors.ConfigurationError` at construction.

redis-py is imported when a store is created: ``pip install "langchain-g4f-router[redis]"``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_g4f._redis_scripts import ACQUIRE, USAGE
from langchain_g4f.budgets import LEASE_POLL, LEASE_TTL, Grant, Limits, LocalBudgets, new_lease
from langchain_g4f.errors import ConfigurationError
from langchain_g4f.store import Change, MemoryStore, State, Store

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis
    from redis.client import Pipeline, PubSub
    from redis.commands.core import AsyncScript, Script

    from langchain_g4f._redis_link import Settings

__all__ = ["SCHEMA", "RedisStore", "open_store"]

logger = logging.getLogger(__name__)

#: Version of the key layout and value format; other versions' keys are never read.
#: (2: the prefix is the keys' hash tag, ``{prefix}:v2:...``.)
SCHEMA = 2
#: Transactions retried on conflict before the changes wait for the next round.
_MAX_CONFLICTS = 20
_MAX_BACKOFF = 10.0
_FIRST_BACKOFF = 0.25
#: An outage is logged as a warning at most this often (seconds); more often, at debug.
_WARN_EVERY = 60.0


def _failures() -> tuple[type[BaseException], ...]:
    """What counts as Redis not answering (never a mistake of ours)."""
    from langchain_g4f._redis_link import FAILURES

    return FAILURES


def _script_failures() -> tuple[type[BaseException], ...]:
    """What a budget script may fail with: Redis not answering, or an answer of no sense."""
    return (*_failures(), TypeError, ValueError)


def _on_loop() -> bool:
    """Whether this thread runs an event loop (where no call may block)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@dataclass(slots=True, eq=False)
class _Entry:
    """A change not yet in Redis (pending) or kept in this process only (local)."""

    change: Change
    t: float
    hosts: int
    seq: int


@dataclass(slots=True)
class _AsyncLink:
    """An event loop's asyncio client of the node in use, and the scripts on it."""

    loop: weakref.ref[asyncio.AbstractEventLoop]
    node: Settings
    client: AsyncRedis
    acquire: AsyncScript
    usage: AsyncScript

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, node: Settings, timeout: float) -> _AsyncLink:
        from langchain_g4f._redis_link import async_client

        client = async_client(node, timeout)
        acquire, usage = client.register_script(ACQUIRE), client.register_script(USAGE)
        return cls(weakref.ref(loop), node, client, acquire, usage)


def _numbers(answer: Any) -> list[int]:
    return [int(value) for value in answer]


def _fold(entries: list[_Entry], state: State) -> State:
    for entry in sorted(entries, key=lambda e: (e.t, e.seq)):
        state = entry.change(state, entry.t)
    return state


class RedisStore:
    """The router's knowledge in Redis, shared by every process that opens it.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
            ``unix:///path/to/socket``, with optional query parameters: ``prefix``
            (sets ``prefix``), ``cluster=true`` (a Redis Cluster: the URL names one
            of its nodes), ``db`` (instead of the path), and for ``rediss://``
            ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``. Or a
            redis-py client (``redis.Redis``, ``redis.cluster.RedisCluster``, or their
            ``redis.asyncio`` twins): the store opens connections of its own with the
            client's address, credentials and TLS settings.
        prefix: Start of every key, so several routers or apps share one Redis
            (``"langchain-g4f"`` by default); on a cluster, the keys' hash tag.
        ttl: Seconds a provider's state lives after its last change.
        refresh: Oldest a cached copy may be, in seconds, before a read fetches it again.
        timeout: Socket timeout for every command, in seconds.
        host_window: Seconds a host's report of a network failure counts.
        lease_ttl: Seconds a concurrency lease lives unless renewed.
        host_id: This process's name among the hosts (default: hostname, pid and a
            random tag).
        clock: The local monotonic clock (seconds); :meth:`now` adds the server's offset.

    Raises:
        ConfigurationError: for a URL that is not one (its scheme, port or db, an unknown
            query parameter), a prefix with ``{`` or ``}``, or a setting out of range;
            at construction, before any call.
    """

    def __init__(
        self,
        url: str | Any = "redis://127.0.0.1:6379/0",
        *,
        prefix: str | None = None,
        ttl: float = 86400.0,
        refresh: float = 1.0,
        timeout: float = 0.05,
        host_window: float = 60.0,
        lease_ttl: float = LEASE_TTL,
        host_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = _settings(url)
        for name, value in (
            ("ttl", ttl),
            ("timeout", timeout),
            ("host_window", host_window),
            ("lease_ttl", lease_ttl),
        ):
            if not value > 0:
                msg = f"RedisStore {name} must be > 0, not {value!r}"
                raise ConfigurationError(msg)
        if not refresh >= 0:
            msg = f"RedisStore refresh must be >= 0, not {refresh!r}"
            raise ConfigurationError(msg)
        self.prefix = prefix or settings.prefix or "langchain-g4f"
        if "{" in self.prefix or "}" in self.prefix:
            msg = f"RedisStore prefix may not hold {{ or }} (the keys' hash tag): {self.prefix!r}"
            raise ConfigurationError(msg)
        self.ttl = ttl
        self.refresh = refresh
        self.timeout = timeout
        self.host_window = host_window
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.host_id = host_id or f"{socket.gethostname()}:{os.getpid()}:{new_lease()[:6]}"
        self._url = settings.url()  # the password redacted
        self._cluster = settings.cluster
        # The node in use (on a cluster, the one serving the keys' slot) and its clients.
        self._node = settings
        from langchain_g4f._redis_link import sync_client

        self._redis: Redis = sync_client(settings, timeout)
        self._acquire: Script = self._redis.register_script(ACQUIRE)
        self._usage: Script = self._redis.register_script(USAGE)
        self._async: dict[int, _AsyncLink] = {}  # per event loop, by id
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._seq = itertools.count()
        # Redis's state as last seen, changes on their way there, and changes kept here.
        self._base: dict[str, State] = {}
        self._pending: dict[str, list[_Entry]] = {}
        self._local: dict[str, list[_Entry]] = {}
        self._fetched: dict[str, float] = {}
        self._wanted: dict[str, float] = {}  # when each key was last read here
        self._generation: dict[str, int] = {}
        # Keys whose commit is on its way: Redis may hold the new state before this
        # process drops the changes it includes, so reads of them wait for the commit.
        self._committing: dict[str, int] = {}
        self._releases: list[tuple[str, str]] = []
        self._held: dict[str, set[str]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._budgets = LocalBudgets(self.now, lease_ttl=lease_ttl)
        self._offset = time.time() - clock()
        self._up = False
        self._down_logged = False
        self._last_warning = -math.inf
        self._retry_at = 0.0
        self._backoff = _FIRST_BACKOFF
        self._pid = 0
        self._closed = False
        self._writer: threading.Thread | None = None
        _STORES.add(self)  # written at exit; reset in a forked child (after_fork)
        self._connect()
        self._start()

    def __repr__(self) -> str:
        state = "shared" if self._up else "local (Redis unreachable)"
        return f"RedisStore({self._url!r}, prefix={self.prefix!r}, {state})"

    @property
    def shared(self) -> bool:
        """Whether Redis answers (False: the store runs on this process's copy)."""
        return self._up

    # -- keys -----------------------------------------------------------------

    def _key(self, kind: str, key: str) -> str:
        """A key of this store: the prefix is its hash tag (one slot on a cluster)."""
        return f"{{{self.prefix}}}:v{SCHEMA}:{kind}:{key}"

    @property
    def _channel(self) -> str:
        """Where committed states are published."""
        return f"{{{self.prefix}}}:v{SCHEMA}:changes"

    # -- Store ----------------------------------------------------------------

    def now(self) -> float:
        """Seconds on the Redis server's clock (Unix time), read locally."""
        return self.clock() + self._offset

    def read(self, keys: Sequence[str]) -> dict[str, State]:
        """Each key's state, fetched from Redis first if its copy is older than ``refresh``.

        On an event loop's thread, the cached copy as it is (see :meth:`aread`).
        """
        if self._stale(keys) and not _on_loop():
            self._fetch(keys)
        with self._lock:
            return {key: self._view(key) for key in keys}

    async def aread(self, keys: Sequence[str]) -> dict[str, State]:
        """:meth:`read` for async calls: a fetch is awaited, never blocking the loop."""
        if self._stale(keys):
            await self._afetch(keys)
        with self._lock:
            return {key: self._view(key) for key in keys}

    def _stale(self, keys: Sequence[str]) -> bool:
        """Note the keys as in use; whether a read should fetch them from Redis first."""
        self._start()
        if not self._up:
            return False
        now = self.clock()
        for key in keys:
            self._wanted[key] = now
        since = now - self.refresh
        return any(self._fetched.get(key, -math.inf) <= since for key in keys)

    def update(self, key: str, change: Change, *, hosts: int = 1, sync: bool = False) -> State:
        """Apply ``change`` here at once and in Redis soon after; return the new state.

        ``hosts`` > 1: the change is shared only once that many distinct hosts have
        made such a change to ``key`` within ``host_window`` seconds; until then it
        counts in this process only. ``sync``: apply it in Redis first and return
        Redis's result (one transaction on this thread, given up after ``timeout``;
        then, if Redis fails, or on an event loop's thread, as without ``sync``).
        """
        self._start()
        t = self.now()
        if sync and self._up and hosts <= 1 and not _on_loop():
            try:
                entry = _Entry(change, t, hosts, next(self._seq))
                states = self._commit({key: [entry]}, deadline=time.monotonic() + self.timeout)
            except _failures() as exc:
                self._went_down(exc)
            else:
                if states is not None:
                    with self._lock:
                        return self._view(key)
        with self._lock:
            state = change(self._view(key), t)
            if self._up:
                self._pending.setdefault(key, []).append(_Entry(change, t, hosts, next(self._seq)))
                self._wake.notify()
            else:
                self._base[key] = state
            return dict(state)

    def _view(self, key: str) -> State:
        """This process's view of a key (under the lock).

        Redis's state as last seen, plus the changes on their way there and those kept here.
        """
        base = dict(self._base.get(key, {}))
        local = self._local.get(key)
        if local:
            horizon = self.now() - self.host_window
            local[:] = [entry for entry in local if entry.t > horizon]
        entries = [*self._pending.get(key, ()), *(local or ())]
        return _fold(entries, base) if entries else base

    def _fetch(self, keys: Sequence[str]) -> None:
        """One ``MGET`` of ``keys`` into the cache.

        Skipped while another thread fetches, unless a key was never fetched.
        """
        first = any(key not in self._fetched for key in keys)
        if not self._fetch_lock.acquire(timeout=self.timeout if first else 0):
            return
        try:
            generations, fetched_at = self._generations(keys), self.clock()
            try:
                raws = self._redis.mget([self._key("state", key) for key in keys])
            except _failures() as exc:
                self._went_down(exc)
                return
            self._fetched_states(keys, raws, generations, fetched_at)
        finally:
            self._fetch_lock.release()

    async def _afetch(self, keys: Sequence[str]) -> None:
        """:meth:`_fetch` on this event loop's client."""
        generations, fetched_at = self._generations(keys), self.clock()
        try:
            raws = await self._async_link().client.mget([self._key("state", key) for key in keys])
        except _failures() as exc:
            self._missed(exc)
            return
        self._fetched_states(keys, raws, generations, fetched_at)

    def _missed(self, exc: BaseException) -> None:
        """An async call went on without Redis's answer (this once, locally).

        No proof of an outage: an asyncio timeout also counts the time the event loop
        was busy elsewhere. The background threads, on the sync client, judge that.
        """
        logger.debug(
            "Redis store %s: an async call went on without Redis's answer (%s: %s)",
            self._url,
            type(exc).__name__,
            exc,
        )

    def _generations(self, keys: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {key: self._generation.get(key, 0) for key in keys}

    def _fetched_states(
        self, keys: Sequence[str], raws: Any, generations: dict[str, int], fetched_at: float
    ) -> None:
        """Take an ``MGET``'s answer into the cache, unless a key changed meanwhile."""
        if not isinstance(raws, list) or len(raws) != len(keys):
            self._warn_once(
                ("MGET", "shape"),
                "Redis store %s answered MGET with something else than one value per key; ignored",
                self._url,
            )
            return
        states = {key: self._decode(key, raw) for key, raw in zip(keys, raws, strict=True)}
        with self._lock:
            for key, state in states.items():
                if (
                    self._up
                    and self._generation.get(key, 0) == generations[key]
                    and key not in self._committing
                ):
                    self._base[key] = state
                    self._fetched[key] = fetched_at

    def _async_link(self) -> _AsyncLink:
        """This event loop's client of the node in use (made on first use)."""
        loop = asyncio.get_running_loop()
        link = self._async.get(id(loop))
        if link is None or link.loop() is not loop or link.node is not self._node:
            for tag, other in list(self._async.items()):  # clients of loops now closed
                other_loop = other.loop()
                if other_loop is None or other_loop.is_closed():
                    self._async.pop(tag, None)
            link = _AsyncLink.open(loop, self._node, self.timeout)
            self._async[id(loop)] = link
        return link

    # -- values -----------------------------------------------------------------

    def _encode(self, state: State) -> str:
        return json.dumps({"v": SCHEMA, "s": state}, separators=(",", ":"))

    def _decode(self, key: str, raw: Any) -> State:
        """A stored value as a state; ``{}`` (and one warning) for one that makes no sense."""
        if raw is None:
            return {}
        try:
            doc = json.loads(raw)
        except (TypeError, ValueError):
            return self._nonsense(self._key("state", key), "a value that is not JSON")
        if not isinstance(doc, dict) or doc.get("v") != SCHEMA:
            return self._nonsense(
                self._key("state", key), f"a value of another format (not version {SCHEMA})"
            )
        state = doc.get("s")
        if not isinstance(state, dict) or not all(
            isinstance(name, str)
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and not math.isnan(value)
            for name, value in state.items()
        ):
            return self._nonsense(
                self._key("state", key), "a state that is not a map of names to numbers"
            )
        return state

    def _nonsense(self, name: str, what: str) -> State:
        """Warn, once per Redis key and kind, of a value that makes no sense."""
        self._warn_once(
            (name, what),
            "Redis store %s: %s holds %s; ignored (it is replaced on the next change)",
            self._url,
            name,
            what,
        )
        return {}

    def _warn_once(self, tag: tuple[str, str], message: str, *args: object) -> None:
        if tag not in self._warned:
            self._warned.add(tag)
            logger.warning(message, *args)

    # -- budgets -----------------------------------------------------------------

    def acquire(self, key: str, limits: Limits) -> Grant:
        """Take one request and one lease of ``key``'s budget, atomically for the fleet."""
        self._start()
        if self._up:
            names, args, lease = self._acquiring(key, limits)
            try:
                answer = self._answer(self._acquire, names, args)
            except _failures() as exc:
                self._went_down(exc)
            else:
                return self._granted(key, limits, lease, answer)
        return self._budgets.acquire(key, limits)

    async def aacquire(self, key: str, limits: Limits) -> Grant:
        """:meth:`acquire` for async calls: Redis's answer is awaited, never blocking the loop."""
        self._start()
        if self._up:
            names, args, lease = self._acquiring(key, limits)
            try:
                answer = await self._aanswer(self._async_link().acquire, names, args)
            except _failures() as exc:
                self._missed(exc)
            else:
                return self._granted(key, limits, lease, answer)
        return self._budgets.acquire(key, limits)

    def _acquiring(self, key: str, limits: Limits) -> tuple[list[str], list[int | str], str]:
        """The acquire script's keys and arguments, and the lease it would take."""
        lease = new_lease()
        names = [self._key(kind, key) for kind in ("rate", "lease", "limits")]
        args: list[int | str] = [
            limits.per_window or 0,
            int(limits.window * 1000),
            limits.concurrent or 0,
            lease,
            int(self.lease_ttl * 1000),
            int(self.ttl * 1000),
        ]
        return names, args, lease

    def _granted(self, key: str, limits: Limits, lease: str, answer: list[int]) -> Grant:
        granted, wait_ms, full = answer
        if granted == 1:
            if limits.concurrent is None:
                return Grant(key, granted=True, holder="redis")
            with self._lock:
                self._held.setdefault(key, set()).add(lease)
            return Grant(key, granted=True, lease=lease, holder="redis")
        wait = max(wait_ms / 1000, LEASE_POLL if full else 0.0)
        return Grant(key, granted=False, wait=wait)

    def release(self, grant: Grant) -> None:
        """Give back the grant's concurrency lease (to Redis soon after, if it is Redis's)."""
        if grant.holder != "redis":
            self._budgets.release(grant)
            return
        if grant.lease is None:
            return
        with self._lock:
            self._held.get(grant.key, set()).discard(grant.lease)
            self._releases.append((grant.key, grant.lease))
            self._wake.notify()

    def _answer(self, script: Script, names: list[str], args: list[int | str]) -> list[int]:
        """Run a budget script; return its answer as numbers.

        Keys of ours that hold something else (another version's, a stray write) are
        nonsense: replaced, with one warning.
        """
        try:
            return _numbers(script(keys=names, args=args))
        except _script_failures() as exc:
            if not self._wrong_type(exc, names):
                raise
        self._redis.delete(*names)
        return _numbers(script(keys=names, args=args))

    async def _aanswer(
        self, script: AsyncScript, names: list[str], args: list[int | str]
    ) -> list[int]:
        """:meth:`_answer` on this event loop's client."""
        try:
            return _numbers(await script(keys=names, args=args))
        except _script_failures() as exc:
            if not self._wrong_type(exc, names):
                raise
        await self._async_link().client.delete(*names)
        return _numbers(await script(keys=names, args=args))

    def _wrong_type(self, error: BaseException, names: list[str]) -> bool:
        """Whether a script failed on keys of the wrong type (then warned of, once)."""
        import redis

        wrong = isinstance(error, (TypeError, ValueError)) or (
            isinstance(error, redis.ResponseError) and "WRONGTYPE" in str(error)
        )
        if not wrong:
            return False
        for name in names:
            self._nonsense(name, "a value of the wrong type")
        return True

    def usage(self, key: str, limits: Limits) -> dict[str, float]:
        """``{"requests": in the window now, "concurrent": live leases}``, for the fleet."""
        if self._up:
            names = [self._key("rate", key), self._key("lease", key)]
            try:
                requests, leases = self._answer(self._usage, names, [int(limits.window * 1000)])
            except _failures() as exc:
                self._went_down(exc)
            else:
                return {"requests": requests, "concurrent": leases}
        return self._budgets.usage(key, limits)

    # -- for operators ------------------------------------------------------------

    def keys(self) -> list[str]:
        """Every provider key with a shared state or budget under this prefix (a SCAN)."""
        found: set[str] = set()
        for kind in ("state", "limits"):
            start = self._key(kind, "")
            for raw in self._redis.scan_iter(match=start + "*", count=500):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                found.add(name[len(start) :])
        return sorted(found)

    def limits(self, key: str) -> Limits | None:
        """The budget last declared for ``key`` by any process, if any."""
        raw = self._redis.hgetall(self._key("limits", key))
        try:
            rate, window, conc = (int(raw[name]) for name in (b"rate", b"window", b"conc"))
        except (KeyError, TypeError, ValueError):
            return None
        return Limits(rate or None, conc or None, window / 1000)

    # -- connection -------------------------------------------------------------

    def _connect(self) -> bool:
        """Find the node serving the keys, measure its clock's offset; True when it answered.

        The node must serve the keys' slot (on a cluster that is up), not only answer.
        """
        from langchain_g4f._redis_link import owner

        try:
            if self._cluster:
                self._use(owner(self._node, self._key("state", ""), self.timeout))
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.exists(self._key("state", ""))
                before = self.clock()
                (seconds, micros), _ = pipe.execute()
                after = self.clock()
        except _failures() as exc:
            self._went_down(exc)
            return False
        self._offset = seconds + micros / 1e6 - (before + after) / 2
        with self._lock:
            if self._up:
                return True
            # Sharing starts from Redis's state; what was learnt alone is dropped.
            self._base.clear()
            self._fetched.clear()
            self._local.clear()
            self._pending.clear()
            self._up = True
            resumed, self._down_logged = self._down_logged, False
        if resumed:
            logger.info("Redis store %s answers again; sharing resumed", self._url)
        return True

    def _use(self, node: Settings) -> None:
        """Talk to ``node`` from now on (the cluster node serving the keys' slot)."""
        from langchain_g4f._redis_link import sync_client

        moved = (node.host, node.port) != (self._node.host, self._node.port)
        self._node = node  # its list of the cluster's nodes may have grown
        if moved:
            self._redis = sync_client(node, self.timeout)
            self._acquire = self._redis.register_script(ACQUIRE)
            self._usage = self._redis.register_script(USAGE)

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            if self._closed or (not self._up and self._down_logged):
                return
            self._up = False
            self._down_logged = True
            # Keep what this process knows, as its own copy.
            for key in {*self._base, *self._pending, *self._local}:
                self._base[key] = self._view(key)
            self._pending.clear()
            self._local.clear()
            self._releases.clear()
            self._held.clear()
            self._retry_at = self.clock() + self._backoff
            self._wake.notify()
        now = time.monotonic()
        quiet, self._last_warning = now - self._last_warning < _WARN_EVERY, now
        logger.log(
            logging.DEBUG if quiet else logging.WARNING,
            "Redis store %s is unreachable (%s: %s); keeping the router's state in this "
            "process and reconnecting in the background",
            self._url,
            type(exc).__name__,
            exc,
        )

    # -- background thread ---------------------------------------------------------

    def _start(self) -> None:
        """Start the writer thread (again, in a forked child)."""
        pid = os.getpid()
        if self._pid == pid or self._closed:
            return
        with self._lock:
            if self._pid == pid:
                return
            if self._pid:  # a fork: the parent's connections and host id are not ours
                self.host_id = f"{socket.gethostname()}:{pid}:{new_lease()[:6]}"
                self._redis.connection_pool.reset()
            self._pid = pid
            self._writer = threading.Thread(target=self._run, name="g4f-redis-writer", daemon=True)
            self._writer.start()
            threading.Thread(target=self._listen, name="g4f-redis-listener", daemon=True).start()

    def after_fork(self) -> None:
        """In a forked child: fresh locks, none of the parent's changes in flight.

        The threads start again on first use. Called for every store of the process
        from :func:`os.register_at_fork`.
        """
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending.clear()
        self._committing.clear()
        self._releases.clear()
        self._held.clear()
        self._async.clear()
        self._writer = None

    def _listen(self) -> None:
        """Keep the cache current in the background.

        Takes the states other processes commit as they publish them, so a change is
        seen at once; and fetches, ahead of the reads, the keys read lately whose copy
        is half its ``refresh`` old, so reads rarely wait for Redis.
        """
        subscription = None
        pause = max(0.05, self.refresh / 2)
        while not self._closed:
            if not self._up:
                subscription = self._unsubscribe(subscription)
                time.sleep(0.1)
                continue
            try:
                if subscription is None:
                    subscription = self._redis.pubsub(ignore_subscribe_messages=True)
                    subscription.subscribe(self._channel)
                message = subscription.get_message(timeout=pause)
            except _failures():  # the writer and the reads notice an outage
                subscription = self._unsubscribe(subscription)
                time.sleep(0.1)
                continue
            if message is not None:
                self._published(message.get("data"))
            self._refresh_ahead()
        self._unsubscribe(subscription)

    def _refresh_ahead(self) -> None:
        now = self.clock()
        stale = [
            key
            for key, at in list(self._wanted.items())
            if at > now - 60 * max(self.refresh, 1.0)
            and self._fetched.get(key, -math.inf) <= now - self.refresh / 2
        ]
        if stale:
            self._fetch(stale)

    @staticmethod
    def _unsubscribe(subscription: PubSub | None) -> None:
        if subscription is not None:
            with contextlib.suppress(Exception):  # a connection already gone
                subscription.close()

    def _published(self, data: Any) -> None:
        try:
            key, value = json.loads(data)
        except (TypeError, ValueError):
            return
        if not isinstance(key, str):
            return
        state = self._decode(key, value)
        fetched_at = self.clock()
        with self._lock:
            if self._up and key in self._fetched and key not in self._committing:
                self._base[key] = state  # a key this process reads, not on its way there
                self._fetched[key] = fetched_at
                self._generation[key] = self._generation.get(key, 0) + 1

    def _run(self) -> None:
        renew_at = self.clock() + self.lease_ttl / 3
        while True:
            with self._lock:
                if not self._closed and (not (self._pending or self._releases) or not self._up):
                    now = self.clock()
                    wake = renew_at if self._up else self._retry_at
                    self._wake.wait(timeout=max(0.0, min(wake - now, 1.0)))
                if self._closed:
                    return
            try:
                if not self._up:
                    if self.clock() >= self._retry_at:
                        self._reconnect()
                    continue
                self._write()
                if self.clock() >= renew_at:
                    self._renew()
                    renew_at = self.clock() + self.lease_ttl / 3
            except _failures() as exc:
                self._went_down(exc)
            except Exception as exc:
                logger.exception("Redis store %s: the background writer failed", self._url)
                self._went_down(exc)

    def _reconnect(self) -> None:
        if not self._connect():
            with self._lock:
                self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
                self._retry_at = self.clock() + self._backoff

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every change made here is in Redis (or Redis is down); True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._up or not (self._pending or self._releases):
                    return self._up
                self._wake.notify()
            time.sleep(0.005)
        return False

    def close(self) -> None:
        """Write what is pending (briefly), stop the thread and close the connections."""
        if self._closed:
            return
        self.flush(timeout=1.0)
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._writer is not None and self._writer is not threading.current_thread():
            self._writer.join(timeout=1.0)
        self._redis.close()
        self._async.clear()  # an event loop's connections close with it

    # -- writing --------------------------------------------------------------------

    def _write(self) -> None:
        with self._lock:
            batch = {key: list(entries) for key, entries in self._pending.items() if entries}
            releases, self._releases = self._releases, []
        if releases:
            with self._redis.pipeline(transaction=False) as pipe:
                for key, lease in releases:
                    pipe.zrem(self._key("lease", key), lease)
                pipe.execute()
        if not batch:
            return
        batch = self._keep_local(batch)
        if batch:
            self._commit(batch)

    def _keep_local(self, batch: dict[str, list[_Entry]]) -> dict[str, list[_Entry]]:
        """Report this host's network failures; return the entries to share.

        Those fewer than ``hosts`` hosts have seen stay in this process.
        """
        quorum = {key: max(e.hosts for e in entries) for key, entries in batch.items()}
        reported = [key for key, hosts in quorum.items() if hosts > 1]
        if not reported:
            return batch
        now = self.now()
        window_ms = int(self.host_window * 1000)
        with self._redis.pipeline(transaction=False) as pipe:
            for key in reported:
                hosts_key = self._key("hosts", key)
                pipe.zadd(hosts_key, {self.host_id: now})
                pipe.zremrangebyscore(hosts_key, "-inf", now - self.host_window)
                pipe.zcard(hosts_key)
                pipe.pexpire(hosts_key, window_ms)
            replies = pipe.execute(raise_on_error=False)
        seen = {}
        for key, count in zip(reported, replies[2::4], strict=True):
            if isinstance(count, int):
                seen[key] = count
            else:  # not a set of hosts: replaced; this report counts as one host's
                self._nonsense(self._key("hosts", key), "a value of the wrong type")
                self._redis.delete(self._key("hosts", key))
        shared: dict[str, list[_Entry]] = {}
        kept: dict[str, list[_Entry]] = {}
        for key, entries in batch.items():
            for entry in entries:
                alone = entry.hosts > 1 and int(seen.get(key, 0)) < entry.hosts
                (kept if alone else shared).setdefault(key, []).append(entry)
        with self._lock:
            for key, entries in kept.items():
                self._drop_pending(key, entries)
                self._local.setdefault(key, []).extend(entries)
        return shared

    def _drop_pending(self, key: str, done: list[_Entry]) -> None:
        """Remove entries from a key's pending changes (under the lock)."""
        left = [entry for entry in self._pending.get(key, ()) if entry not in done]
        if left:
            self._pending[key] = left
        else:
            self._pending.pop(key, None)

    def _commit(
        self, batch: dict[str, list[_Entry]], deadline: float | None = None
    ) -> dict[str, State] | None:
        """Apply the batch's changes in Redis in one optimistic transaction.

        Returns the new states; None, with nothing written, after too many conflicts
        or once past ``deadline`` (``time.monotonic()``) before the commit.
        """
        import redis

        keys = list(batch)
        names = [self._key("state", key) for key in keys]
        ttl_ms = int(self.ttl * 1000)
        with self._redis.pipeline() as pipe:
            for _ in range(_MAX_CONFLICTS):
                try:
                    pipe.watch(*names)  # type: ignore[no-untyped-call]  # unannotated in redis-py
                    raws = self._get_all(pipe, keys, names)
                    if deadline is not None and time.monotonic() > deadline:
                        return None  # Redis is slow: the caller goes on locally
                    states = {
                        key: _fold(batch[key], self._decode(key, raw))
                        for key, raw in zip(keys, raws, strict=True)
                    }
                    pipe.multi()
                    for key, name in zip(keys, names, strict=True):
                        value = self._encode(states[key])
                        pipe.set(name, value, px=ttl_ms)
                        pipe.publish(self._channel, json.dumps([key, value]))
                    self._execute_commit(pipe, batch, states)
                except redis.WatchError:
                    continue
                return states
        return None

    def _execute_commit(
        self, pipe: Pipeline, batch: dict[str, list[_Entry]], states: dict[str, State]
    ) -> None:
        """Send the transaction; take its states in as it lands.

        Until then its keys are marked as committing: a fetch or a published state that
        already holds the batch's changes is not taken in while they are still pending here
        (the view would count them twice).
        """
        with self._lock:
            for key in batch:
                self._committing[key] = self._committing.get(key, 0) + 1
        try:
            pipe.execute()
            self._committed(batch, states)
        finally:
            with self._lock:
                for key in batch:
                    left = self._committing.pop(key) - 1
                    if left:
                        self._committing[key] = left

    def _get_all(self, pipe: Pipeline, keys: list[str], names: list[str]) -> list[Any]:
        """The watched values.

        A key of the wrong type reads as nothing (and is overwritten by the commit).
        """
        import redis

        try:
            return pipe.mget(names)
        except redis.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            return [None] * len(names)

    def _committed(self, batch: dict[str, list[_Entry]], states: dict[str, State]) -> None:
        fetched_at = self.clock()
        with self._lock:
            if not self._up:
                return
            self._backoff = _FIRST_BACKOFF  # Redis takes writes: a next outage starts afresh
            for key, state in states.items():
                self._drop_pending(key, batch[key])
                self._base[key] = state
                self._fetched[key] = fetched_at
                self._generation[key] = self._generation.get(key, 0) + 1

    def _renew(self) -> None:
        """Extend this process's concurrency leases (a dead process's expire)."""
        with self._lock:
            held = {key: list(leases) for key, leases in self._held.items() if leases}
        if not held:
            return
        until = self.now() * 1000 + self.lease_ttl * 1000
        with self._redis.pipeline(transaction=False) as pipe:
            for key, leases in held.items():
                name = self._key("lease", key)
                pipe.zadd(name, dict.fromkeys(leases, until), xx=True)
                pipe.pexpire(name, int(self.lease_ttl * 1000))
            pipe.execute()


def _require_redis() -> None:
    """Raise :class:`ConfigurationError` without redis-py."""
    if importlib.util.find_spec("redis") is None:
        msg = 'a Redis store needs redis-py: pip install "langchain-g4f-router[redis]"'
        raise ConfigurationError(msg)


def _settings(spec: object) -> Settings:
    """A store's settings from a URL or a redis-py client."""
    _require_redis()
    from langchain_g4f._redis_link import settings_from_client, settings_from_url

    if isinstance(spec, str):
        return settings_from_url(spec)
    settings = settings_from_client(spec) if _is_redis_client(spec) else None
    if settings is None:
        msg = (
            "a Redis store needs a redis://, rediss:// or unix:// URL or a redis-py client, "
            f"not {type(spec).__name__}"
        )
        raise ConfigurationError(msg)
    return settings


def _is_redis_client(spec: object) -> bool:
    """Whether ``spec`` comes from redis-py (checked without importing it)."""
    return type(spec).__module__.split(".")[0] == "redis"


#: The stores of this process: pending changes are written before the interpreter
#: exits, and a forked child resets them all.
_STORES: weakref.WeakSet[RedisStore] = weakref.WeakSet()


def _after_fork() -> None:
    for store in list(_STORES):
        store.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


@atexit.register
def _flush_all() -> None:
    for store in list(_STORES):
        store.close()


def open_store(spec: object) -> Store:
    """A store from a router's ``store=`` argument.

    ``None`` for a new :class:`~langchain_g4f.store.MemoryStore`; a ``redis://`` /
    ``rediss://`` / ``unix://`` URL or a redis-py client (sync or asyncio, a server or
    a cluster) for a :class:`RedisStore`; a store object as it is.

    Raises:
        ConfigurationError: for anything else, or a URL that is not one.
    """
    if spec is None:
        return MemoryStore()
    if isinstance(spec, str) or _is_redis_client(spec):
        return RedisStore(spec)
    if isinstance(spec, Store):
        return spec
    msg = (
        "store must be None, a redis:// URL, a redis-py client or an object with now(), "
        f"read(keys) and update(key, change), not {type(spec).__name__}"
    )
    raise ConfigurationError(msg)
