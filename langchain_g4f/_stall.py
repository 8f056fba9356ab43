"""Noticing a stream that stalls after its first text.

Once an answer's text flows, the router waits for each next chunk at most a
*stall limit* (:class:`StallLimit`): a fixed number of seconds, or, with
``"auto"``, the larger of :data:`FLOOR` and :data:`FACTOR` times the longest
wait for a chunk seen so far in this stream, so a slow but steady stream is not
cut. A stream past its limit is broken like any other, at once, rather than at
the answering model's own read timeout.

- Sync (:class:`Watched`): the read blocks in the caller's thread, so one shared
  timer thread (:class:`_Watchdog`, running only while a watched stream is
  open) shuts the connection down under the blocked read (through the
  attempt's :class:`~langchain_g4f._abort.AbortScope`), and the read returns
  at once. Arming costs two attribute stores per chunk: the timer re-checks a
  stream's deadline when its own comes due, and polls idle streams.
- Async (:class:`AWatched`): one timer handle per stream, re-armed lazily in
  the same way, cancels the reading task when the limit passes; the
  cancellation is turned into the stall error, as ``asyncio.timeout`` does.
  On Python 3.11+ a cancellation of the caller's own that comes with it stands
  (``Task.cancelling``); Python 3.10 keeps no such count, so there a
  cancellation that comes during a stalled read is taken to be the stall's.

Once a stream's limit has passed, nothing more is taken from it: a chunk that
came at that very moment is dropped with the rest, and the answer is continued
from the text already given.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
import threading
import time
from collections.abc import AsyncGenerator, Generator
from typing import Any

from langchain_core.outputs import ChatGenerationChunk as Chunk

from langchain_g4f._abort import AbortScope
from langchain_g4f.errors import ProviderTimeoutError

__all__ = ["FACTOR", "FLOOR", "AWatched", "StallLimit", "Watched"]

if sys.version_info >= (3, 11):

    def _cancelling(task: asyncio.Task[Any]) -> int:
        """The cancellations pending on ``task``."""
        return task.cancelling()

    def _uncancel(task: asyncio.Task[Any]) -> int:
        """Take back one cancellation of ``task``; the ones still pending."""
        return task.uncancel()

else:  # Python 3.10 counts no cancellations: each is taken to be the stall's own

    def _cancelling(_task: asyncio.Task[Any]) -> int:
        """No count on 3.10."""
        return 0

    def _uncancel(_task: asyncio.Task[Any]) -> int:
        """Nothing to take back on 3.10."""
        return 0


clock = time.monotonic

#: The shortest stall limit of ``stall_after="auto"``, seconds.
FLOOR = 2.5
#: With ``"auto"``: the limit is at least this many times the longest wait seen.
FACTOR = 4.0


class StallLimit:
    """How long a stream's next chunk may take: fixed, or adapting to its waits.

    ``current`` is the limit now (read once per chunk); ``longest`` the longest wait
    seen, so a chunk that came sooner costs no update.
    """

    __slots__ = ("current", "fixed", "longest")

    def __init__(self, fixed: float | None) -> None:
        self.fixed = fixed  # None: "auto"
        self.longest = 0.0
        self.current = FLOOR if fixed is None else fixed

    def seconds(self) -> float:
        """The limit now."""
        return self.current

    def waited(self, seconds: float) -> None:
        """The latest chunk came after ``seconds``."""
        if seconds > self.longest:
            self.longest = seconds
            if self.fixed is None:
                self.current = max(FLOOR, FACTOR * seconds)


def _stalled(key: str, limit: float, waited: float) -> ProviderTimeoutError:
    return ProviderTimeoutError(
        f"the stream stalled: no data for {waited:.2f}s after its text had started "
        f"(stall limit {limit:.2f}s)",
        provider=key,
    )


# --- sync ------------------------------------------------------------------------


class Watched:
    """A sync stream read under a stall limit.

    Raises :class:`ProviderTimeoutError` (naming ``key``) when a chunk does not
    come in time. :meth:`close` closes the stream.
    """

    __slots__ = ("_key", "_scope", "_stream", "closed", "deadline", "fired", "limit", "reading")

    def __init__(
        self,
        stream: Generator[Chunk, None, None],
        key: str,
        limit: StallLimit,
        scope: AbortScope | None,
    ) -> None:
        self._stream = stream
        self._key = key
        self.limit = limit
        self._scope = scope
        self.deadline = clock() + limit.seconds()
        self.reading = self.fired = self.closed = False
        _watchdog.watch(self)

    def __iter__(self) -> Watched:
        return self

    def __next__(self) -> Chunk:
        limit = self.limit
        started = clock()
        # deadline first: the watchdog reads `reading`, then `deadline`
        self.deadline = started + limit.current
        self.reading = True
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._check(started)
            raise
        except Exception as exc:
            self._check(started, exc)
            raise
        finally:
            self.reading = False
        if self.fired:
            self._check(started)
        waited = clock() - started
        if waited > limit.longest:
            limit.waited(waited)
        return chunk

    def _check(self, started: float, cause: BaseException | None = None) -> None:
        if self.fired:
            error = _stalled(self._key, self.limit.seconds(), clock() - started)
            raise error from cause

    def expire(self) -> None:
        """Called by the watchdog: the limit passed during a read."""
        self.fired = True
        if self._scope is not None:
            self._scope.abort()

    def close(self) -> None:
        """No longer watched; the stream is closed."""
        _watchdog.unwatch(self)
        self._stream.close()


class _Watchdog:
    """One timer thread for every open :class:`Watched` stream of the process.

    Its queue holds, per stream, a time at or before the stream's deadline
    (deadlines only move later); when that time comes the stream's deadline is
    read again: passed during a read, the stream is expired; otherwise it is
    queued again at its deadline, or, between reads, one limit later. The thread
    ends when no stream is watched.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self._queue: list[tuple[float, int, Watched]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, stream: Watched) -> None:
        with self._lock:
            heapq.heappush(self._queue, (stream.deadline, next(self._order), stream))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="g4f-router-stall-watchdog", daemon=True
                )
                self._thread.start()
            else:
                self._lock.notify()

    def unwatch(self, stream: Watched) -> None:
        with self._lock:
            if stream.closed:
                return
            stream.closed = True
            self._queue[:] = [item for item in self._queue if item[2] is not stream]
            heapq.heapify(self._queue)
            self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                due = self._due()
                if due is None:  # nothing watched: the thread ends
                    self._thread = None
                    return
            for stream in due:
                stream.expire()

    def _due(self) -> list[Watched] | None:
        """Streams whose limit passed, once there are any (None: none is watched)."""
        queue = self._queue
        while queue:
            now = clock()
            at = queue[0][0]
            if at > now:
                self._lock.wait(at - now)
                continue
            due = []
            while queue and queue[0][0] <= now:
                stream = heapq.heappop(queue)[2]
                if stream.reading and stream.deadline <= now:
                    due.append(stream)  # expired: no longer watched
                    continue
                later = stream.deadline if stream.reading else now + stream.limit.seconds()
                heapq.heappush(queue, (later, next(self._order), stream))
            if due:
                return due
        return None


_watchdog = _Watchdog()


# --- async ------------------------------------------------------------------------


class AWatched:
    """An async stream read under a stall limit, in the current task.

    Raises :class:`ProviderTimeoutError` (naming ``key``) when a chunk does not
    come in time. :meth:`aclose` closes the stream.
    """

    __slots__ = (
        "_cancelling",
        "_handle",
        "_key",
        "_loop",
        "_stream",
        "_task",
        "deadline",
        "fired",
        "limit",
        "reading",
    )  # fmt: skip

    #: The task of the current read (set by each read, before anything uses it).
    _task: asyncio.Task[Any]

    def __init__(self, stream: AsyncGenerator[Chunk, None], key: str, limit: StallLimit) -> None:
        self._stream = stream
        self._key = key
        self.limit = limit
        self._loop = asyncio.get_running_loop()
        self._cancelling = 0  # its cancellations pending before the read
        self._handle: asyncio.TimerHandle | None = None
        self.deadline = 0.0
        self.reading = self.fired = False

    def __aiter__(self) -> AWatched:
        return self

    async def __anext__(self) -> Chunk:
        limit, loop = self.limit, self._loop
        task = asyncio.current_task()
        if task is None:
            msg = "a watched stream is read outside an asyncio task"
            raise RuntimeError(msg)
        self._task = task
        self._cancelling = _cancelling(task)
        started = loop.time()
        self.deadline = started + limit.current
        self.reading = True
        if self._handle is None:
            self._handle = loop.call_at(self.deadline, self._due)
        try:
            chunk = await self._stream.__anext__()
        except (Exception, asyncio.CancelledError) as exc:
            self._check(started, exc)
            raise
        finally:
            self.reading = False
        if self.fired:
            self._check(started)
        waited = loop.time() - started
        if waited > limit.longest:
            limit.waited(waited)
        return chunk

    def _check(self, started: float, cause: BaseException | None = None) -> None:
        """After a read: the stall error, if the limit passed during it."""
        if not self.fired:
            return
        # The cancellation was this watch's own: taken back, unless the caller's
        # own came too (then the caller's stands).
        if _uncancel(self._task) > self._cancelling and isinstance(cause, asyncio.CancelledError):
            return
        raise _stalled(self._key, self.limit.seconds(), self._loop.time() - started) from cause

    def _due(self) -> None:
        """The timer: cancel the read if its deadline passed, else wait again."""
        if not self.reading:
            self._handle = None  # re-armed by the next read
            return
        if self._loop.time() < self.deadline:
            self._handle = self._loop.call_at(self.deadline, self._due)
            return
        self._handle = None
        self.fired = True
        self._task.cancel()

    async def aclose(self) -> None:
        """No longer watched; the stream is closed."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._stream.aclose()
