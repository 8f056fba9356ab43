"""One router call, up to its first text: the schedule, the attempts, the race.

- :class:`Schedule` (no I/O) says which attempt to start and when, and records
  what happened: after a failure the next provider at once, a retry of the same
  provider (backoff, ``Retry-After``) only when no other can start sooner; also
  the next provider when the latest attempt is late without text (``hedge_after``:
  past its provider's learnt time-to-first-token quantile, when the next one is
  expected to answer sooner and the router's budget of extra requests allows; or
  after a fixed number of seconds); hedge losers' time without text. One
  deadline bounds it all.
- :func:`race` / :func:`arace` run it: each attempt reads its model's stream
  ahead to the first text, on a worker thread (sync) or a task (async), so the
  deadline and the hedge cut in even while a read blocks. The first attempt with
  text wins; the others are closed at once: an async loser is cancelled, a sync
  loser's connection is shut down under its blocked read (see
  :class:`~langchain_g4f._abort.AbortScope`), and its thread ends.
- :class:`Won` carries the winner's stream on to the relay (the router), which
  passes its chunks on, and continues the answer elsewhere if it breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk as Chunk

from langchain_g4f._abort import AbortScope, abort_scope
from langchain_g4f.chat_models import ChatG4F
from langchain_g4f.errors import (
    AllProvidersFailedError,
    BudgetExhaustedError,
    ConfigurationError,
    EmptyResponseError,
    G4FError,
    ProviderTimeoutError,
)
from langchain_g4f.health import Health
from langchain_g4f.providers.base import Provider
from langchain_g4f.retry import backoff_delay
from langchain_g4f.strategies import ExtraRequests

__all__ = [
    "Attempt",
    "Entry",
    "Request",
    "Schedule",
    "Won",
    "aclose",
    "arace",
    "attempt_record",
    "clock",
    "race",
]

clock = time.monotonic
_NEVER = float("inf")
#: An attempt without text this many times past its provider's late limit has
#: most likely stalled: the next provider starts beside it whatever the budget,
#: as after a failure.
_STALLED = 2.0


@dataclass(frozen=True, eq=False)
class Entry:
    """One provider of a router: its health key, and its model with retries off."""

    key: str
    chat: ChatG4F
    provider: Provider

    def serves(self, model: str) -> bool:
        return self.provider.accepts_any_model or model in self.provider.model


@dataclass(eq=False)
class Attempt:
    entry: Entry
    number: int  # 0 for the first try on this provider, 1 for its first retry...
    started: float = 0.0
    late_at: float = _NEVER  # when, still without text, the next provider may start too
    token: float = 0.0  # names its claim on the provider (a half-open circuit's probe)


#: A queued attempt: when it may start, a tie-breaker keeping the order, the attempt.
_Queued = tuple[float, int, Attempt]


@dataclass(eq=False)
class Request:
    """What every attempt of one call sends, and the call's deadline."""

    messages: list[BaseMessage]
    stop: list[str] | None
    kwargs: dict[str, Any]
    model: str | None
    timeout: float | None
    deadline: float
    #: Providers not to try (those that broke this answer and may not continue it).
    exclude: frozenset[str] = frozenset()


def attempt_record(attempt: Attempt, error: BaseException, at: float) -> dict[str, Any]:
    """``{"provider", "error", "status", "message", "elapsed"}`` for a failed attempt."""
    return {
        "provider": attempt.entry.key,
        "error": type(error).__name__,
        "status": getattr(error, "status", None),
        "message": getattr(error, "message", None) or str(error) or type(error).__name__,
        "elapsed": round(max(0.0, at - attempt.started), 3),
    }


def _summary(record: dict[str, Any]) -> str:
    status = f" (HTTP {record['status']})" if record["status"] else ""
    return (
        f"- {record['provider']}: {record['error']}{status} after "
        f"{record['elapsed']:.2f}s: {record['message']}"
    )


class Schedule:
    """Which attempt of one call to start next, and when; what failed so far. No I/O.

    The ``ready`` providers go first, in the given (strategy) order, then the
    ``waiting`` ones (cooling down), each when
    it may start. A failure moves on to the next candidate at once; a retryable one
    also queues a retry of the same provider after its backoff or ``Retry-After``
    (unless its circuit has opened), which starts only when no other provider can
    start sooner: the call never idles while another provider could run. Each
    start asks the health model first (:meth:`~langchain_g4f.health.Health.claim`):
    a provider whose circuit has opened meanwhile waits for its cooldown, a
    half-open one admits one probe at a time. One deadline bounds it all.

    The next candidate also starts (a hedge) when the latest attempt is late
    without text: with ``hedge_after="auto"``, past its provider's
    :meth:`~langchain_g4f.health.Health.late_after` (a high quantile of its time
    to first token), and then only if the next candidate's expected time to
    first token (optimistically none, for a provider never measured) is shorter
    than the time already waited (past a high quantile, about what is still to
    wait) and the ``extra`` budget has a request to spare; otherwise the hedge is
    asked again once the wait has doubled (an attempt twice past its limit has
    most likely stalled: the next one starts whatever the budget, as after a
    failure). The hedge goes to the candidate ``rerank`` puts first among those
    not started, by what is known at that moment (the order was set when the
    call began, and the first calls begin knowing nothing). With a number, after
    that many seconds; with ``None``, never.

    When an attempt wins, the others still running lost the race: each records how
    long it went without text, a lower bound on its time to first token.
    """

    def __init__(
        self,
        ready: list[Entry],
        waiting: list[tuple[float, Entry]],
        *,
        request: Request,
        health: Health,
        max_retries: int,
        backoff: float,
        hedge_after: float | Literal["auto"] | None,
        extra: ExtraRequests | None = None,
        rerank: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.request = request
        self.extra = extra
        self.rerank = rerank
        self.health = health
        self.max_retries = max_retries
        self.backoff = backoff
        self.hedge_after = hedge_after
        self._order = itertools.count()  # ties in the queues keep their order
        self._fresh = deque(Attempt(entry, 0) for entry in ready)
        self._waiting: list[_Queued] = []  # other providers, by time
        self._retries: list[_Queued] = []
        for at, entry in waiting:
            self._queue(self._waiting, at, Attempt(entry, 0))
        self.running: list[Attempt] = []
        self.attempts: list[dict[str, Any]] = []  # the failed ones, in order
        self._errors: list[BaseException] = []
        self._late_after: dict[str, float] = {}  # per provider, read once per call

    # -- what to do now --

    def next_action(self, now: float) -> Attempt | float | None:
        """An attempt to start now, or how long to wait for news (``None``: no limit).

        Raises when the call is over. The wait is never ``None`` while no attempt runs.
        """
        deadline = self.request.deadline
        if now >= deadline:
            for attempt in list(self.running):
                self.failed(attempt, self._deadline_error(attempt), now)
            raise self.error(now)
        latest = self.running[-1] if self.running else None
        hedge_at = latest.late_at if latest is not None else now
        if latest is not None and hedge_at <= now and not self._may_hedge(latest, now):
            hedge_at = latest.late_at = now + max(now - latest.started, self._floor())
        if hedge_at <= now:
            start = self._due(now)
            if start is not None:
                self._start(start, now)
                return start
        due = self._next_due()
        if latest is None:  # nothing running: wait for the next candidate or retry
            if due is None or due >= deadline:
                raise self.error(now, cooling_until=due)
            return due - now
        wake = min(deadline, hedge_at if hedge_at > now else due if due is not None else deadline)
        return max(0.0, wake - now) if wake != _NEVER else None

    def _start(self, attempt: Attempt, now: float) -> None:
        attempt.started = now
        if self.hedge_after == "auto":
            attempt.late_at = now + self._late(attempt)
        elif self.hedge_after is not None:
            attempt.late_at = now + self.hedge_after
        self.running.append(attempt)

    def _may_hedge(self, latest: Attempt, now: float) -> bool:
        """Whether the next candidate may start beside ``latest``, late at ``now``.

        Always with a fixed ``hedge_after``; with ``"auto"``, when the next one is
        expected to answer sooner than ``latest`` still takes and the budget has an
        extra request to spare.
        """
        if self.hedge_after != "auto":
            return True
        self._rerank()
        following = self._following()
        due = self._next_due()
        if following is None or (not self._fresh and due is not None and due > now):
            return True  # nothing to start yet: asked again when there is
        waited = now - latest.started
        if waited >= _STALLED * self._late(latest):
            return True
        expected = self.health.view(following.entry.key).ttft or 0.0
        if expected >= waited:
            return False
        return self.extra is None or self.extra.spend()

    def _rerank(self) -> None:
        """The candidates not started yet, in ``rerank``'s order of what is known now."""
        if self.rerank is None or not self._fresh:
            return
        by_key = {attempt.entry.key: attempt for attempt in self._fresh}
        ordered = [by_key.pop(key) for key in self.rerank(list(by_key)) if key in by_key]
        self._fresh = deque([*ordered, *by_key.values()])

    def _floor(self) -> float:
        return self.health.policy.late_floor

    def _late(self, attempt: Attempt) -> float:
        key = attempt.entry.key
        if key not in self._late_after:
            self._late_after[key] = self.health.late_after(key)
        return self._late_after[key]

    def _following(self) -> Attempt | None:
        """The candidate that would start next (another provider before a retry)."""
        if self._fresh:
            return self._fresh[0]
        queued = [queue[0] for queue in (self._waiting, self._retries) if queue]
        return min(queued)[2] if queued else None

    def _due(self, now: float) -> Attempt | None:
        """The next attempt that may start now.

        Another provider if one can, else a retry that is due.
        """
        while self._fresh:
            attempt = self._fresh.popleft()
            if self._admitted(attempt, now, self._waiting):
                return attempt
        while self._waiting and self._waiting[0][0] <= now:
            attempt = heapq.heappop(self._waiting)[2]
            if self._admitted(attempt, now, self._waiting):
                return attempt
        while self._retries and self._retries[0][0] <= now:
            attempt = heapq.heappop(self._retries)[2]
            if self._admitted(attempt, now, self._retries):
                return attempt
        return None

    def _admitted(self, attempt: Attempt, now: float, queue: list[_Queued]) -> bool:
        """Whether the health model lets the attempt start now.

        If not, it is queued for when it may.
        """
        attempt.token = self.health.token()
        wait = self.health.claim(attempt.entry.key, attempt.token)
        if wait <= 0:
            return True
        self._queue(queue, now + wait, attempt)
        return False

    def _queue(self, queue: list[_Queued], at: float, attempt: Attempt) -> None:
        heapq.heappush(queue, (at, next(self._order), attempt))

    def _next_due(self) -> float | None:
        return min((queue[0][0] for queue in (self._waiting, self._retries) if queue), default=None)

    # -- outcomes --

    def won(self, attempt: Attempt, at: float) -> None:
        """``attempt`` had text first, at ``at``; the others still running lost."""
        losers = [other for other in self.running if other is not attempt]
        self.running.clear()
        self.health.record_ttft(attempt.entry.key, at - attempt.started)
        for loser in losers:
            waited = max(0.0, at - loser.started)
            self.health.record_censored_ttft(loser.entry.key, waited, loser.token)

    def abandon(self) -> None:
        """The caller gave up on the call.

        The attempts still running end with no outcome (each frees its probe slot,
        if it held one).
        """
        for attempt in self.running:
            self.health.record_cancelled(attempt.entry.key, attempt.token)
        self.running.clear()

    def failed(self, attempt: Attempt, error: BaseException, at: float) -> None:
        """``attempt`` failed with ``error`` at ``at``: health hears of it; a retry may queue."""
        if attempt in self.running:
            self.running.remove(attempt)
        self.attempts.append(attempt_record(attempt, error, at))
        self._errors.append(error)
        key = attempt.entry.key
        if isinstance(error, ConfigurationError):
            # the request's fault, not the provider's: no health change, no retry
            self.health.record_cancelled(key, attempt.token)
            return
        if isinstance(error, BudgetExhaustedError):
            # nothing was sent: no health change, no retry spent; the provider waits
            # for its budget like any provider that may not start yet
            self.health.record_cancelled(key, attempt.token)
            if error.retry_after is not None and at + error.retry_after < self.request.deadline:
                self._queue(self._waiting, at + error.retry_after, Attempt(attempt.entry, 0))
            return
        self.health.record_failure(key, error, seconds=max(0.0, at - attempt.started))
        if (
            getattr(error, "retryable", False)
            and attempt.number < self.max_retries
            and self.health.view(key).circuit == "closed"
        ):
            at += backoff_delay(attempt.number, error, base=self.backoff)
            if at < self.request.deadline:
                self._queue(self._retries, at, Attempt(attempt.entry, attempt.number + 1))

    def _deadline_error(self, attempt: Attempt) -> ProviderTimeoutError:
        return ProviderTimeoutError(
            f"gave no text within the router's {self.request.timeout:g}s deadline",
            provider=attempt.entry.key,
        )

    def error(self, now: float, cooling_until: float | None = None) -> BaseException:
        """What ends the call: :class:`AllProvidersFailedError` with the attempts so far.

        When every attempt failed on the caller's side (a configuration error, or a
        bug rather than a provider error), that error itself.
        """
        errors, request = self._errors, self.request
        if errors and not any(_provider_side(e) for e in errors):
            return errors[0]
        left = request.deadline - now
        if left <= 0:
            head = f"the router's {request.timeout:g}s deadline passed"
        elif cooling_until is not None:
            head = (
                f"the {'' if self.attempts else 'only '}providers left are cooling down; "
                f"the first recovers in {cooling_until - now:.2f}s but only {left:.2f}s "
                f"remain of the {request.timeout:g}s deadline"
            )
        else:
            head = "every provider failed"
        lines = [_summary(record) for record in self.attempts]
        noun = "attempt" if len(lines) == 1 else "attempts"
        message = f"{head}; {len(lines)} {noun}" + "".join("\n" + line for line in lines)
        error = AllProvidersFailedError(message, attempts=list(self.attempts))
        error.__cause__ = errors[-1] if errors else None
        return error


def _provider_side(error: BaseException) -> bool:
    return isinstance(error, G4FError) and not isinstance(error, ConfigurationError)


# --- reading ahead to the first text ---------------------------------------------


def _has_content(chunk: Chunk) -> bool:
    message = chunk.message
    return bool(
        chunk.text
        or message.additional_kwargs.get("reasoning_content")
        or getattr(message, "chunk_position", None) == "last"
        or getattr(message, "tool_call_chunks", None)
    )


def _read_ahead(stream: Iterator[Chunk], key: str) -> list[Chunk]:
    """Chunks up to and including the first with text (or the final one)."""
    head = []
    for chunk in stream:
        head.append(chunk)
        if _has_content(chunk):
            return head
    msg = "the stream ended without an answer"
    raise EmptyResponseError(msg, provider=key)


async def _aread_ahead(stream: AsyncIterator[Chunk], key: str) -> tuple[list[Chunk], float]:
    """:func:`_read_ahead` for an async stream; also returns when the text came."""
    head = []
    async for chunk in stream:
        head.append(chunk)
        if _has_content(chunk):
            return head, clock()
    msg = "the stream ended without an answer"
    raise EmptyResponseError(msg, provider=key)


class Won:
    """The attempt that produced text first: its stream, read up to that text.

    ``at`` is when that text came; ``attempts`` are the attempts that failed before;
    ``scope`` (sync) holds the stream's connection, to cut it short from another
    thread.
    """

    __slots__ = ("at", "attempt", "attempts", "head", "key", "scope", "stream")

    def __init__(
        self,
        attempt: Attempt,
        head: list[Chunk],
        stream: Any,
        attempts: list[dict[str, Any]],
        at: float,
        scope: AbortScope | None = None,
    ) -> None:
        self.attempt = attempt
        self.key = attempt.entry.key
        self.head = head
        self.stream = stream
        self.attempts = attempts
        self.at = at
        self.scope = scope


#: An attempt's read-ahead, run as a task: the head and when its text came.
_ReadAhead = asyncio.Task[tuple[list[Chunk], float]]


# --- sync: a worker thread per attempt ---------------------------------------------


class _Worker:
    """One attempt's read-ahead on its own thread.

    The result goes to the inbox. A worker no longer wanted is abandoned: if its
    thread is still reading, the connection under the read is shut down, so the
    read returns at once and the thread closes the stream (a generator can only be
    closed by the thread running it); if it has finished, the stream is idle and
    is closed right away.
    """

    def __init__(
        self,
        attempt: Attempt,
        open_stream: Callable[[Attempt], Iterator[Chunk]],
        inbox: queue.SimpleQueue[_Worker],
    ) -> None:
        self.attempt = attempt
        self.stream: Iterator[Chunk] | None = None
        self.head: list[Chunk] = []
        self.error: BaseException | None = None
        self.finished = 0.0
        self.scope = AbortScope()  # the attempt's connections, the winner's too
        self._lock = threading.Lock()
        self._done = self._abandoned = False
        threading.Thread(
            target=self._run,
            args=(open_stream, inbox),
            name=f"g4f-router-{attempt.entry.key}",
            daemon=True,
        ).start()

    def _run(
        self, open_stream: Callable[[Attempt], Iterator[Chunk]], inbox: queue.SimpleQueue[_Worker]
    ) -> None:
        abort_scope.set(self.scope)  # this thread's own context
        try:
            self.stream = open_stream(self.attempt)
            self.head = _read_ahead(self.stream, self.attempt.entry.key)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller's thread
            self.error = exc
        self.finished = clock()
        with self._lock:
            self._done = True
            abandoned = self._abandoned
        if abandoned:
            self.close()
        else:
            inbox.put(self)

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            done = self._done
        if done:
            self.close()
        else:
            self.scope.abort()

    def close(self) -> None:
        close = getattr(self.stream, "close", None)  # None: not started, or nothing to close
        if close is not None:
            # closing a loser must not hide the winner
            with contextlib.suppress(Exception):
                close()


def race(schedule: Schedule, open_stream: Callable[[Attempt], Iterator[Chunk]]) -> Won:
    """Run the schedule's attempts on worker threads until one has text."""
    inbox: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
    workers: list[_Worker] = []
    try:
        while True:
            action = schedule.next_action(clock())
            if isinstance(action, Attempt):
                workers.append(_Worker(action, open_stream, inbox))
                continue
            try:
                worker = inbox.get(timeout=action)
            except queue.Empty:
                continue
            workers.remove(worker)
            if worker.error is not None:
                schedule.failed(worker.attempt, worker.error, worker.finished)
                continue
            schedule.won(worker.attempt, worker.finished)
            attempts = list(schedule.attempts)
            return Won(
                worker.attempt, worker.head, worker.stream, attempts, worker.finished, worker.scope
            )
    except BaseException as exc:
        if not isinstance(exc, Exception):  # the caller gave up on the call
            schedule.abandon()
        raise
    finally:
        for worker in workers:
            worker.abandon()


# --- async: a task per attempt -------------------------------------------------------


async def arace(schedule: Schedule, open_stream: Callable[[Attempt], AsyncIterator[Chunk]]) -> Won:
    """Run the schedule's attempts as tasks until one has text."""
    tasks: dict[_ReadAhead, tuple[Attempt, Any]] = {}
    try:
        while True:
            action = schedule.next_action(clock())
            if isinstance(action, Attempt):
                stream = open_stream(action)
                task = asyncio.ensure_future(_aread_ahead(stream, action.entry.key))
                tasks[task] = (action, stream)
                continue
            if not tasks:  # nothing runs: the schedule named a wait (never None then)
                await asyncio.sleep(action or 0.0)
                continue
            done, _ = await asyncio.wait(tasks, timeout=action, return_when=asyncio.FIRST_COMPLETED)
            # Failures first, so the attempts are complete; then the earliest started wins.
            finished = sorted(done, key=lambda task: tasks[task][0].started)
            for task in finished:
                error = _task_error(task)
                if error is not None:
                    attempt, stream = tasks.pop(task)
                    schedule.failed(attempt, error, clock())
                    await aclose(stream)
            for task in finished:
                if task in tasks:
                    attempt, stream = tasks.pop(task)
                    head, at = task.result()
                    schedule.won(attempt, at)
                    return Won(attempt, head, stream, list(schedule.attempts), at)
    except BaseException as exc:
        if not isinstance(exc, Exception):  # cancelled: the caller gave up on the call
            schedule.abandon()
        raise
    finally:
        if tasks:
            await _abandon(tasks)


def _task_error(task: _ReadAhead) -> BaseException | None:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


async def aclose(stream: Any) -> None:
    """Close an async stream; an error in closing (a loser's) must not hide the outcome."""
    with contextlib.suppress(Exception):
        await stream.aclose()


async def _abandon(tasks: dict[_ReadAhead, tuple[Attempt, Any]]) -> None:
    """Cancel the attempts still reading ahead, wait for them, close their streams."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    for task, (_, stream) in tasks.items():
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it
        await aclose(stream)
