"""Custom events that show a router's work in traces (``astream_events``, LangSmith).

A :class:`Trace` sends LangChain custom events to the handlers of one chat-model
run, attached to that run. ``invoke`` hands the router its run manager
(:meth:`Trace.of`); ``stream``/``astream`` do not, so the router names the run
itself before it starts and keeps a :class:`Trace` built from the call's config
(:meth:`Trace.for_config`, :func:`current`) for the duration of the call.

Event names:

- ``g4f_attempt``: one failed attempt, data ``{"provider", "error", "status",
  "message", "elapsed"}`` (the records of ``response_metadata["attempts"]``).
- ``g4f_continue``: a broken answer goes on with another segment, data
  ``{"provider", "after", "chars"}``: who continues, whose segment broke, and how
  many characters the caller had been given.
"""

from __future__ import annotations

from contextlib import suppress
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    BaseCallbackHandler,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.callbacks.manager import ahandle_event, handle_event
from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig

__all__ = [
    "ATTEMPT_EVENT",
    "CONTINUE_EVENT",
    "Trace",
    "adispatch_attempts",
    "adispatch_continue",
    "current",
    "dispatch_attempts",
    "dispatch_continue",
    "enter",
    "leave",
]

ATTEMPT_EVENT = "g4f_attempt"
CONTINUE_EVENT = "g4f_continue"

_CURRENT: ContextVar[Trace | None] = ContextVar("langchain_g4f_trace", default=None)


@dataclass
class Trace:
    """The handlers of one chat-model run, and the run's id."""

    handlers: list[BaseCallbackHandler]
    run_id: UUID
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun) -> Trace:
        """The trace of the run that ``run_manager`` manages."""
        return cls(run_manager.handlers, run_manager.run_id, run_manager.tags, run_manager.metadata)

    @classmethod
    def for_config(
        cls, model: BaseChatModel, config: RunnableConfig, run_id: UUID, *, is_async: bool
    ) -> Trace:
        """The trace of the run that ``model.stream(input, config)`` starts as ``run_id``.

        The handlers are configured as the model configures its own run's.
        """
        manager_class = AsyncCallbackManager if is_async else CallbackManager
        manager = manager_class.configure(
            config.get("callbacks"),
            model.callbacks,
            model.verbose,
            config.get("tags"),
            model.tags,
            config.get("metadata"),
            model.metadata,
        )
        return cls(manager.handlers, run_id, manager.tags, manager.metadata)

    def dispatch(self, name: str, data: Any) -> None:
        """Send the custom event ``name`` with ``data`` to the run's handlers."""
        handle_event(
            self.handlers,
            "on_custom_event",
            "ignore_custom_event",
            name,
            data,
            run_id=self.run_id,
            tags=self.tags,
            metadata=self.metadata,
        )

    async def adispatch(self, name: str, data: Any) -> None:
        """Send the custom event ``name`` with ``data`` to the run's handlers."""
        await ahandle_event(
            self.handlers,
            "on_custom_event",
            "ignore_custom_event",
            name,
            data,
            run_id=self.run_id,
            tags=self.tags,
            metadata=self.metadata,
        )


def current(
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
) -> Trace | None:
    """The trace of the running call: its run manager's, else the one set for a stream."""
    if run_manager is not None:
        return Trace.of(run_manager)
    return _CURRENT.get()


def enter(trace: Trace) -> Token[Trace | None]:
    """Make ``trace`` the current one; returns the token for :func:`leave`."""
    return _CURRENT.set(trace)


def leave(token: Token[Trace | None]) -> None:
    """Restore the trace :func:`enter` replaced.

    A generator closed from another context cannot: that context never saw the
    trace, and nothing is done.
    """
    with suppress(ValueError):
        _CURRENT.reset(token)


def dispatch_attempts(trace: Trace | None, attempts: list[dict[str, Any]]) -> None:
    """One ``g4f_attempt`` event per failed attempt."""
    if trace is not None:
        for record in attempts:
            trace.dispatch(ATTEMPT_EVENT, record)


async def adispatch_attempts(trace: Trace | None, attempts: list[dict[str, Any]]) -> None:
    """One ``g4f_attempt`` event per failed attempt."""
    if trace is not None:
        for record in attempts:
            await trace.adispatch(ATTEMPT_EVENT, record)


def dispatch_continue(trace: Trace | None, data: dict[str, Any] | None) -> None:
    """The ``g4f_continue`` event, when an answer goes on (``data`` not None)."""
    if trace is not None and data is not None:
        trace.dispatch(CONTINUE_EVENT, data)


async def adispatch_continue(trace: Trace | None, data: dict[str, Any] | None) -> None:
    """The ``g4f_continue`` event, when an answer goes on (``data`` not None)."""
    if trace is not None and data is not None:
        await trace.adispatch(CONTINUE_EVENT, data)
