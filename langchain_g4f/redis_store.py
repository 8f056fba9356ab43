"""A store shared by many processes and hosts: the router's knowledge in Redis.

:class:`RedisStore` implements the :class:`~langchain_g4f.store.Store` protocol
and the :class:`~langchain_g4f.budgets.BudgetStore` protocol on one Redis server.

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
- **Every key has a TTL**; keys carry a schema version (``{prefix}:v1:...``) and
  values a ``"v"`` field. A value that makes no sense is ignored with a warning.
- **Redis down or slow**: every command has a ``timeout`` (50 ms by default); on
  the first failure the store logs one warning and goes on in this process (a
  :class:`~langchain_g4f.store.MemoryStore`-like copy, budgets in
  :class:`~langchain_g4f.budgets.LocalBudgets`); the background thread reconnects
  with backoff, and sharing resumes from Redis's state.

redis-py is imported when a store is created: ``pip install "langchain-g4f-router[redis]"``.
"""

from __future__ import annotations

import atexit
import contextlib
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
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from langchain_g4f._redact import redact_url
from langchain_g4f.budgets import LEASE_POLL, LEASE_TTL, Grant, Limits, LocalBudgets, new_lease
from langchain_g4f.errors import ConfigurationError
from langchain_g4f.store import Change, MemoryStore, State, Store

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline, PubSub
    from redis.commands.core import Script

__all__ = ["SCHEMA", "RedisStore", "open_store"]

logger = logging.getLogger(__name__)

#: Version of the key layout and value format; other versions' keys are never read.
SCHEMA = 1
_SCHEMES = ("redis", "rediss", "unix")
#: Transactions retried on conflict before the changes wait for the next round.
_MAX_CONFLICTS = 20
_MAX_BACKOFF = 10.0
_FIRST_BACKOFF = 0.25
#: An outage is logged as a warning at most this often (seconds); more often, at debug.
_WARN_EVERY = 60.0

# KEYS: rate window, leases, limits. ARGV: rate limit (0: none), window ms,
# concurrency limit (0: none), request id, lease ttl ms, limits ttl ms.
# Returns {granted, ms until the window has room, 1 if every lease is taken}.
_ACQUIRE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, window, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local id, ttl = ARGV[4], tonumber(ARGV[5])
redis.call('HSET', KEYS[3], 'rate', rate, 'window', window, 'conc', conc)
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[6]))
local wait, full = 0, 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then full = 1 end
end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rate then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    wait = math.max(1, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 or full == 1 then return {0, wait, full} end
if rate > 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], window)
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, id)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {1, 0, 0}
"""

# KEYS: rate window, leases. ARGV: window ms. Returns {requests in window, live leases}.
_USAGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]), '+inf'),
        redis.call('ZCOUNT', KEYS[2], now, '+inf')}
"""


@dataclass(slots=True, eq=False)
class _Entry:
    """A change not yet in Redis (pending) or kept in this process only (local)."""

    change: Change
    t: float
    hosts: int
    seq: int


def _fold(entries: list[_Entry], state: State) -> State:
    for entry in sorted(entries, key=lambda e: (e.t, e.seq)):
        state = entry.change(state, entry.t)
    return state


def _split_prefix(url: str) -> tuple[str, str | None]:
    """The URL without a ``prefix`` query parameter, and that parameter."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "prefix"), None)
    rest = [(name, value) for name, value in query if name != "prefix"]
    return urlunsplit(parts._replace(query=urlencode(rest))), prefix


class RedisStore:
    """The router's knowledge in Redis, shared by every process that opens it.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
            ``unix:///path/to/socket``; a ``?prefix=`` query parameter sets ``prefix``.
        prefix: Start of every key, so several routers or apps share one Redis
            (``"langchain-g4f"`` by default).
        ttl: Seconds a provider's state lives after its last change.
        refresh: Oldest a cached copy may be, in seconds, before a read fetches it again.
        timeout: Socket timeout for every command, in seconds.
        host_window: Seconds a host's report of a network failure counts.
        lease_ttl: Seconds a concurrency lease lives unless renewed.
        host_id: This process's name among the hosts (default: hostname, pid and a
            random tag).
        clock: The local monotonic clock (seconds); :meth:`now` adds the server's offset.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
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
        if not isinstance(url, str) or urlsplit(url).scheme not in _SCHEMES:
            msg = (
                "a Redis store needs a redis://, rediss:// or unix:// URL, "
                f"not {redact_url(str(url))!r}"
            )
            raise ConfigurationError(msg)
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
        url, url_prefix = _split_prefix(url)
        self.prefix = prefix or url_prefix or "langchain-g4f"
        self.ttl = ttl
        self.refresh = refresh
        self.timeout = timeout
        self.host_window = host_window
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.host_id = host_id or f"{socket.gethostname()}:{os.getpid()}:{new_lease()[:6]}"
        self._url = url
        self._redis = _client(url, timeout)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._usage = self._redis.register_script(_USAGE)
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
        if hasattr(os, "register_at_fork"):  # a pre-forking server's workers start afresh
            forget = weakref.WeakMethod(self._forget_parent)
            os.register_at_fork(after_in_child=lambda: (method := forget()) and method())
        self._connect()
        self._start()

    def __repr__(self) -> str:
        state = "shared" if self._up else "local (Redis unreachable)"
        return f"RedisStore({redact_url(self._url)!r}, prefix={self.prefix!r}, {state})"

    @property
    def shared(self) -> bool:
        """Whether Redis answers (False: the store runs on this process's copy)."""
        return self._up

    # -- keys -----------------------------------------------------------------

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}:v{SCHEMA}:{kind}:{key}"

    @property
    def _channel(self) -> str:
        """Where committed states are published."""
        return f"{self.prefix}:v{SCHEMA}:changes"

    # -- Store ----------------------------------------------------------------

    def now(self) -> float:
        """Seconds on the Redis server's clock (Unix time), read locally."""
        return self.clock() + self._offset

    def read(self, keys: Sequence[str]) -> dict[str, State]:
        """Each key's state, fetched from Redis first if its copy is older than ``refresh``."""
        self._start()
        if self._up:
            now = self.clock()
            since = now - self.refresh
            for key in keys:
                self._wanted[key] = now
            if any(self._fetched.get(key, -math.inf) <= since for key in keys):
                self._fetch(keys)
        with self._lock:
            return {key: self._view(key) for key in keys}

    def update(self, key: str, change: Change, *, hosts: int = 1, sync: bool = False) -> State:
        """Apply ``change`` here at once and in Redis soon after; return the new state.

        ``hosts`` > 1: the change is shared only once that many distinct hosts have
        made such a change to ``key`` within ``host_window`` seconds; until then it
        counts in this process only. ``sync``: apply it in Redis first and return
        Redis's result (one transaction on this thread, given up after ``timeout``;
        then, or if Redis fails, as without ``sync``).
        """
        self._start()
        t = self.now()
        if sync and self._up and hosts <= 1:
            try:
                entry = _Entry(change, t, hosts, next(self._seq))
                states = self._commit({key: [entry]}, deadline=time.monotonic() + self.timeout)
            except Exception as exc:  # noqa: BLE001 - any failure of Redis: carry on locally
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
            with self._lock:
                generations = {key: self._generation.get(key, 0) for key in keys}
            fetched_at = self.clock()
            try:
                raws = self._redis.mget([self._key("state", key) for key in keys])
            except Exception as exc:  # noqa: BLE001 - any failure of Redis: carry on locally
                self._went_down(exc)
                return
            if not isinstance(raws, list) or len(raws) != len(keys):
                self._warn_once(
                    ("MGET", "shape"),
                    "Redis store %s answered MGET with something else than one value per "
                    "key; ignored",
                    redact_url(self._url),
                )
                return
            states = {key: self._decode(key, raw) for key, raw in zip(keys, raws, strict=True)}
            with self._lock:
                for key, state in states.items():
                    if self._up and self._generation.get(key, 0) == generations[key]:
                        self._base[key] = state
                        self._fetched[key] = fetched_at
        finally:
            self._fetch_lock.release()

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
            redact_url(self._url),
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
            try:
                granted, wait_ms, full = self._answer(self._acquire, names, args)
            except Exception as exc:  # noqa: BLE001 - any failure of Redis: carry on locally
                self._went_down(exc)
            else:
                if int(granted) == 1:
                    if limits.concurrent is None:
                        return Grant(key, granted=True, holder="redis")
                    with self._lock:
                        self._held.setdefault(key, set()).add(lease)
                    return Grant(key, granted=True, lease=lease, holder="redis")
                wait = max(int(wait_ms) / 1000, LEASE_POLL if int(full) else 0.0)
                return Grant(key, granted=False, wait=wait)
        return self._budgets.acquire(key, limits)

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
        import redis

        try:
            return [int(value) for value in script(keys=names, args=args)]
        except (redis.ResponseError, TypeError, ValueError) as exc:
            if isinstance(exc, redis.ResponseError) and "WRONGTYPE" not in str(exc):
                raise
            for name in names:
                self._nonsense(name, "a value of the wrong type")
            self._redis.delete(*names)
            return [int(value) for value in script(keys=names, args=args)]

    def usage(self, key: str, limits: Limits) -> dict[str, float]:
        """``{"requests": in the window now, "concurrent": live leases}``, for the fleet."""
        if self._up:
            names = [self._key("rate", key), self._key("lease", key)]
            try:
                requests, leases = self._answer(self._usage, names, [int(limits.window * 1000)])
            except Exception as exc:  # noqa: BLE001 - any failure of Redis: carry on locally
                self._went_down(exc)
            else:
                return {"requests": requests, "concurrent": leases}
        return self._budgets.usage(key, limits)

    # -- for operators ------------------------------------------------------------

    def keys(self) -> list[str]:
        """Every provider key with a shared state or budget under this prefix (a SCAN)."""
        found: set[str] = set()
        for kind in ("state", "limits"):
            start = f"{self.prefix}:v{SCHEMA}:{kind}:"
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
        """Measure the server clock's offset; True when Redis answered."""
        try:
            before = self.clock()
            seconds, micros = self._redis.time()
            after = self.clock()
        except Exception as exc:  # noqa: BLE001 - any failure of Redis: carry on locally
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
            logger.info("Redis store %s answers again; sharing resumed", redact_url(self._url))
        return True

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
            redact_url(self._url),
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
        _STORES.add(self)

    def _forget_parent(self) -> None:
        """In a forked child: fresh locks, none of the parent's changes in flight.

        The threads start again on first use.
        """
        self._lock = threading.Lock()
        self._fetch_lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending.clear()
        self._releases.clear()
        self._held.clear()
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
            except Exception:  # noqa: BLE001 - the writer and reads notice an outage
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
            if self._up and key in self._fetched:  # a key this process reads
                self._base[key] = state
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
            except Exception as exc:  # noqa: BLE001 - any failure of Redis: carry on locally
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
                    pipe.execute()
                except redis.WatchError:
                    continue
                self._committed(batch, states)
                return states
        return None

    def _get_all(self, pipe: Pipeline, keys: list[str], names: list[str]) -> list[Any]:
        """The watched values.

        A key of the wrong type reads as nothing (and is overwritten by the commit).
        """
        import redis

        try:
            return pipe.mget(names)
        except redis.ResponseError:
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


def _client(url: str, timeout: float) -> Redis:
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:
        msg = 'a Redis store needs redis-py: pip install "langchain-g4f-router[redis]"'
        raise ConfigurationError(msg) from exc
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


#: Open stores, so pending changes are written before the interpreter exits.
_STORES: weakref.WeakSet[RedisStore] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for store in list(_STORES):
        store.close()


def open_store(spec: object) -> Store:
    """A store from a router's ``store=`` argument.

    ``None`` for a new :class:`~langchain_g4f.store.MemoryStore`, a ``redis://`` /
    ``rediss://`` / ``unix://`` URL for a :class:`RedisStore`, or a store object as it is.

    Raises:
        ConfigurationError: for anything else.
    """
    if spec is None:
        return MemoryStore()
    if isinstance(spec, str):
        return RedisStore(spec)
    if isinstance(spec, Store):
        return spec
    msg = (
        "store must be None, a redis:// URL or an object with now(), read(keys) and "
        f"update(key, change), not {type(spec).__name__}"
    )
    raise ConfigurationError(msg)
