"""Where the Redis store connects: its settings, and clients to the node that holds its keys.

A store's settings come from a URL (checked here, so a typo is a
:class:`~langchain_g4f.errors.ConfigurationError` at construction, never an outage) or
from a redis-py client, sync or asyncio, single server or cluster. Either way the store
opens connections of its own with them: a sync client for the hot path of sync calls and
the background threads, an asyncio client per event loop for async calls.

On a Redis Cluster every key of a store carries the same hash tag (its prefix), so all
of them live in one hash slot, on one node: the store talks to that node alone, through
the same clients and commands as to a single server (its transactions and scripts stay
atomic), and finds the node again from any node it knows when it stops answering for the
slot (killed, failed over, resharded).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from langchain_g4f._redact import redact_url
from langchain_g4f.errors import ConfigurationError

#: What counts as Redis not answering: network failures, and Redis refusing (a cluster
#: down or moved, a server loading); never a mistake of ours.
FAILURES = (redis.RedisError, OSError, asyncio.TimeoutError)
_SCHEMES = ("redis", "rediss", "unix")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
#: TLS options a ``rediss://`` URL may carry, as redis-py names them.
_TLS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS = ("none", "optional", "required")
#: Every query parameter a store URL may carry.
PARAMETERS = ("prefix", "cluster", "db", *_TLS)


@dataclass(frozen=True, slots=True)
class Settings:
    """How to reach Redis: one server (or a cluster's seed node) and the store's options."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    path: str | None = None  # a unix socket
    tls: bool = False
    tls_options: dict[str, str] = field(default_factory=dict)
    cluster: bool = False
    prefix: str | None = None
    #: Other nodes of the cluster known so far, as (host, port).
    seeds: tuple[tuple[str, int], ...] = ()

    def at(self, host: str, port: int) -> Settings:
        """The same settings for another node."""
        return replace(self, host=host, port=port)

    def kwargs(self) -> dict[str, Any]:
        """Connection arguments, the same for ``redis.Redis`` and ``redis.asyncio.Redis``."""
        options: dict[str, Any] = {"db": self.db, "username": self.username}
        options["password"] = self.password
        if self.path is not None:
            return options | {"unix_socket_path": self.path}
        options |= {"host": self.host, "port": self.port}
        if self.tls:
            options |= {"ssl": True, **self.tls_options}
        return options

    def url(self) -> str:
        """A URL naming the server, with the password redacted (for messages)."""
        user = f"{self.username or ''}:***@" if self.password else ""
        if self.path is not None:
            return f"unix://{user}{self.path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        tail = "?cluster=true" if self.cluster else f"/{self.db}"
        return f"{scheme}://{user}{self.host}:{self.port}{tail}"


def _bad(url: str, what: str) -> ConfigurationError:
    return ConfigurationError(f"store URL {redact_url(url)!r}: {what}")


def settings_from_url(url: object) -> Settings:
    """The settings a store URL names.

    Raises:
        ConfigurationError: naming the part that is wrong (scheme, host, port, db, an
            unknown or repeated query parameter, a value out of range).
    """
    if not isinstance(url, str):
        msg = f"a Redis store URL must be a string, not {type(url).__name__}"
        raise ConfigurationError(msg)
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise _bad(url, f"the scheme must be redis://, rediss:// or unix://, not {parts.scheme!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise _bad(url, "the port must be a number from 1 to 65535") from None
    query = _query(url, parts.query)
    settings = Settings(
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "rediss",
        tls_options={name: query[name] for name in _TLS if name in query},
        cluster=_boolean(url, "cluster", query.get("cluster", "false")),
        prefix=query.get("prefix"),
    )
    if settings.tls_options and not settings.tls:
        raise _bad(url, f"{next(iter(settings.tls_options))} needs a rediss:// URL")
    reqs = settings.tls_options.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        raise _bad(url, f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, not {reqs!r}")
    if parts.scheme == "unix":
        if not parts.path:
            raise _bad(url, "a unix:// URL needs the socket's path")
        if settings.cluster:
            raise _bad(url, "cluster=true needs a redis:// or rediss:// URL")
        return replace(settings, path=parts.path, db=_db(url, query.get("db", "0")))
    if not parts.hostname:
        raise _bad(url, "the URL names no host")
    path = parts.path.strip("/")
    if path and "db" in query:
        raise _bad(url, "the db is given twice (in the path and as ?db=)")
    db = _db(url, path or query.get("db", "0"))
    if settings.cluster and db != 0:
        raise _bad(url, f"a Redis Cluster has only db 0, not db {db}")
    return replace(settings, host=parts.hostname, db=db)


def _query(url: str, query: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in PARAMETERS:
            raise _bad(
                url, f"unknown query parameter {name!r}; a store URL takes {', '.join(PARAMETERS)}"
            )
        if name in found:
            raise _bad(url, f"the query parameter {name!r} is given twice")
        found[name] = value
    return found


def _boolean(url: str, name: str, value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise _bad(url, f"{name} must be true or false, not {value!r}") from None


def _db(url: str, value: str) -> int:
    if not value.isdigit():
        raise _bad(url, f"the db must be a number, not {value!r}")
    return int(value)


def settings_from_client(client: object) -> Settings | None:
    """The settings of a redis-py client (sync or asyncio, server or cluster); None if none."""
    options: dict[str, Any]
    if isinstance(client, redis.cluster.RedisCluster):
        manager: Any = client.nodes_manager
        options = manager.connection_kwargs
    elif isinstance(client, redis.asyncio.cluster.RedisCluster):
        manager = client.nodes_manager
        options = client.connection_kwargs
    else:
        manager = None
    if manager is not None:
        nodes = [(node.host, int(node.port)) for node in manager.startup_nodes.values()]
        host, port = nodes[0]
        return replace(
            _from_kwargs(options), host=host, port=port, seeds=tuple(nodes), cluster=True
        )
    if isinstance(client, (redis.Redis, redis.asyncio.Redis)):
        pool = client.connection_pool
        settings = _from_kwargs(pool.connection_kwargs)
        if "SSL" in pool.connection_class.__name__:
            settings = replace(settings, tls=True)
        return settings
    return None


def _from_kwargs(options: dict[str, Any]) -> Settings:
    return Settings(
        host=str(options.get("host", "127.0.0.1")),
        port=int(options.get("port", 6379)),
        db=int(options.get("db", 0) or 0),
        username=options.get("username"),
        password=options.get("password"),
        path=options.get("path") or options.get("unix_socket_path"),
        tls=bool(options.get("ssl")),
        tls_options={name: options[name] for name in _TLS if options.get(name) is not None},
    )


# --- clients ---------------------------------------------------------------------------


def sync_client(settings: Settings, timeout: float) -> redis.Redis:
    """A sync client: every command bounded by ``timeout`` seconds, never retried."""
    return redis.Redis(
        **settings.kwargs(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def async_client(settings: Settings, timeout: float) -> redis.asyncio.Redis:
    """:func:`sync_client` for asyncio (bound to the event loop that first uses it)."""
    return redis.asyncio.Redis(
        **settings.kwargs(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=AsyncRetry(NoBackoff(), 0),
        health_check_interval=0,
    )


def owner(settings: Settings, key: str, timeout: float) -> Settings:
    """The settings of the cluster node that serves ``key``'s hash slot.

    Asks the seed node, then every node known, for the cluster's slots (``CLUSTER
    SLOTS``); the answer also adds the cluster's other nodes to the seeds.

    Raises:
        redis.RedisError: when no node known answers, or none serves the slot.
    """
    slot = key_slot(key.encode())
    failure: Exception = redis.ConnectionError("no node of the cluster is known")
    for host, port in dict.fromkeys([(settings.host, settings.port), *settings.seeds]):
        client = sync_client(settings.at(host, port), timeout)
        try:
            ranges = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]  # unannotated in redis-py
        except FAILURES as exc:
            failure = exc
            continue
        finally:
            client.close()
        nodes = [(_text(r[2][0]) or host, int(r[2][1])) for r in ranges]
        seeds = tuple(dict.fromkeys([*settings.seeds, *nodes]))
        for (first, last, *_), node in zip(ranges, nodes, strict=True):
            if first <= slot <= last:
                return replace(settings.at(*node), seeds=seeds)
        failure = redis.exceptions.ClusterDownError(f"no node of the cluster serves slot {slot}")
    raise failure


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
