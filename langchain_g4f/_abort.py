"""Cutting a sync request short from another thread.

A generator cannot be closed from another thread while it runs, and a ``requests``
read blocked on a socket only returns when bytes come or its timeout passes. So
the sync transport registers the connections it uses in the thread's
:class:`AbortScope` (see :data:`abort_scope`), and another thread (the router's
race, once an attempt has lost) calls :meth:`AbortScope.abort`: the sockets are
shut down, the blocked read returns with an error at once, and the server sees
the client leave.
"""

from __future__ import annotations

import functools
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3._base_connection import BaseHTTPConnection
    from urllib3.connectionpool import HTTPConnectionPool

__all__ = ["AbortScope", "abort_scope", "abortable", "watched"]


class AbortScope:
    """Connections of sync requests that another thread may cut short.

    A thread that sets :data:`abort_scope` to a scope registers there each
    connection its requests use (from the moment it is taken from the pool, so
    also while waiting for the response headers; with a session of your own,
    once the headers have come). :meth:`abort`, from any thread, shuts those
    connections down, and any registered later, so a read blocked on them
    returns at once with an error.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[object] = set()
        self.aborted = False

    def opened(self, connection: object) -> None:
        with self._lock:
            if not self.aborted:
                self._open.add(connection)
                return
        _shut_down(connection)

    def closed(self, connection: object) -> None:
        with self._lock:
            self._open.discard(connection)

    def abort(self) -> None:
        # Under the lock: once closed() has returned, the connection may go back to
        # the pool and serve another request, and must not be touched.
        with self._lock:
            self.aborted = True
            for connection in self._open:
                _shut_down(connection)
            self._open.clear()


#: The :class:`AbortScope` of this thread's sync requests, if any.
abort_scope: ContextVar[AbortScope | None] = ContextVar("g4f_abort_scope", default=None)


@contextmanager
def watched(response: requests.Response) -> Iterator[None]:
    """The response's connection registered in the thread's scope while it is read."""
    scope = abort_scope.get()
    connection = getattr(response.raw, "connection", None)
    if scope is None or connection is None:
        yield
        return
    scope.opened(connection)
    try:
        yield
    finally:
        scope.closed(connection)


def _shut_down(connection: object) -> None:
    """Shut down a connection's socket: a read blocked on it returns."""
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with suppress(OSError):  # closed meanwhile by its reader
            sock.shutdown(socket.SHUT_RDWR)


def abortable(adapter: HTTPAdapter) -> HTTPAdapter:
    """``adapter``, its pools registering each connection they lend in the thread's scope."""
    adapter.poolmanager.pool_classes_by_scheme = _abortable_pools()
    return adapter


@functools.cache
def _abortable_pools() -> dict[str, type[HTTPConnectionPool]]:
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class AbortableHTTPConnectionPool(HTTPConnectionPool):
        def _get_conn(self, timeout: float | None = None) -> BaseHTTPConnection:
            connection = super()._get_conn(timeout)
            scope = abort_scope.get()
            if scope is not None:
                scope.opened(connection)
            return connection

        def _put_conn(self, conn: BaseHTTPConnection | None) -> None:
            scope = abort_scope.get()
            if scope is not None and conn is not None:
                scope.closed(conn)
            super()._put_conn(conn)

    class AbortableHTTPSConnectionPool(AbortableHTTPConnectionPool, HTTPSConnectionPool):
        pass

    return {"http": AbortableHTTPConnectionPool, "https": AbortableHTTPSConnectionPool}
