"""``ChatG4FRouter``: several providers behind one chat model.

How one call runs:

1. The candidates are the providers that serve the requested model. Those cooling
   down (circuit open, for a ``Retry-After`` at least) go last, tried only if their cooldown
   ends within the deadline; the strategy (:mod:`langchain_g4f.strategies`) orders
   the rest by what the health model (:mod:`langchain_g4f.health`) has learnt.
2. The attempts race to the first text (:mod:`langchain_g4f._race`): fallback to
   the next provider at once, retries of the same provider only when no other can
   start sooner, hedging, one deadline for it all.
3. The winner's chunks pass through (the relay, :class:`_Relay`); the final chunk
   gets the failed attempts in ``response_metadata["attempts"]``. A stream that
   breaks after text is continued: another race, over the providers that have not
   broken this answer, asks for the rest (:mod:`langchain_g4f.continuation`), whose
   repeat of the text already given is spliced out. A stream that goes quiet after
   text for longer than its stall limit (:mod:`langchain_g4f._stall`) is broken.
   With ``on_interrupt="raise"``, or when nobody can continue,
   :class:`~langchain_g4f.errors.StreamInterruptedError`
   is raised with the text given so far.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import replace
from functools import partial
from itertools import chain
from typing import Annotated, Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import (
    BaseChatModel,
    LangSmithParams,
    LanguageModelInput,
    ModelProfile,
)
from langchain_core.messages import AIMessageChunk, BaseMessage, message_chunk_to_message
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig, ensure_config
from langchain_core.utils.uuid import uuid7
from pydantic import ConfigDict, Field, PrivateAttr

from langchain_g4f import profiles, traces
from langchain_g4f import providers as registry
from langchain_g4f._config import MAX_SECONDS, init_model
from langchain_g4f._messages import ls_params, stop_list
from langchain_g4f._race import (
    Attempt,
    Entry,
    Request,
    Schedule,
    Won,
    aclose,
    arace,
    attempt_record,
    clock,
    race,
)
from langchain_g4f._stall import AWatched, StallLimit, Watched
from langchain_g4f.budgets import Budget, budgets_of
from langchain_g4f.chat_models import ChatG4F
from langchain_g4f.content import check_blocks
from langchain_g4f.continuation import Splicer, continuation_messages
from langchain_g4f.errors import (
    AllProvidersFailedError,
    ConfigurationError,
    NoProviderAvailableError,
    StreamInterruptedError,
)
from langchain_g4f.health import Health, HealthPolicy
from langchain_g4f.providers.base import Provider
from langchain_g4f.redis_store import open_store
from langchain_g4f.store import Store, prefetch
from langchain_g4f.strategies import ExtraRequests, Strategy, resolve_strategy
from langchain_g4f.tools import ToolCallingMixin

__all__ = ["ChatG4FRouter"]

logger = logging.getLogger(__name__)


# --- the chat model ----------------------------------------------------------


class ChatG4FRouter(ToolCallingMixin, BaseChatModel):
    """Several gpt4free-style providers as one chat model, with fallback and health.

    Setup:
        Install ``langchain-g4f-router``; the seed providers need no key.

    Key init args:
        providers: list[ChatG4F | str] | str | None
            Chat models or registered provider names (a name becomes
            ``ChatG4F(provider=name)``, ``"g4f:<Name>"`` included); ``None``: every
            registered provider, those that can stream first; ``"g4f:*"``: every
            provider of the installed g4f that g4f marks working and that serves
            ``model`` without a key; ``"catalog"``: every catalog entry whose key is
            set, and the keyless ones (see :func:`langchain_g4f.providers.discover`).
        strategy: str | Strategy
            ``"fastest"`` (default: lowest expected time to a complete answer,
            failures and fallbacks included), ``"priority"`` (the given order, with
            failing providers moved behind the healthy ones), ``"round_robin"``,
            ``"random"`` or an object with ``order(candidates, health)`` (see
            :mod:`langchain_g4f.strategies`).
        model: str | None
            Route only to providers serving this model, and ask them for it; ``None``
            lets each use its own. A per-call ``model=`` wins.
        timeout: float | None
            Deadline in seconds for a call to reach its first text: attempts,
            retries, backoff, waits for a cooldown. Once text flows, each read is
            bounded by ``stall_after`` and the answering model's own ``timeout``.
            ``None``: no deadline.
        max_retries: int
            Retries per provider of errors that can heal. A failure moves on to the
            next provider at once; the retry comes after ``backoff`` (doubling,
            jittered; a 429 waits its ``Retry-After``), and only when no other
            provider can start sooner. A 401, a 404 or an unserved model is not
            retried.
        hedge_after: "auto" | float | None
            When an attempt is late without text, the next provider starts beside
            it; the first with text wins, and the loser's time without text is
            recorded as a lower bound on its provider's time to first token.
            ``"auto"`` (default): late means past the provider's learnt 99th
            percentile of time to first token (never sooner than 0.3 s; 0.5 s for
            a provider not yet measured), so a stall before the first byte costs
            about one slow first token, not the deadline, and few calls pay for a
            second request. A number: late after that many seconds. ``None``: no
            hedging. With ``"auto"`` a hedge also needs the next provider to be
            expected to answer sooner than the late one still takes, and a request
            to spare in the ``extra_requests`` budget.
        extra_requests: float
            Extra requests per call the router may spend, hedges (``"auto"``) and
            exploration together (default 0.03: at most about three calls in a
            hundred send a second request beyond what failures need; 20 are saved
            up for the first calls, which start knowing nothing).
        half_life: float
            Seconds after which an observation counts half as much in a provider's
            recent success rate.
        failure_threshold, min_calls, cooldown_after:
            A provider's circuit opens (it cools down) when at least
            ``failure_threshold`` of its recent calls failed (a decayed share) once
            ``min_calls`` calls have ended since it last closed, or after
            ``cooldown_after`` failures in a row.
        cooldown, max_cooldown:
            The first cooldown in seconds, doubling with each consecutive opening; its
            cap. A ``Retry-After`` is the least it lasts. Then one call probes the
            provider: a success closes the circuit, a failure opens it for longer.
        on_interrupt: "continue" | "raise"
            A stream that breaks after text: ``"continue"`` (default) asks the
            next provider (or the same one, if it is the only one and
            ``max_retries`` allows) for the rest of the answer; ``"raise"`` raises
            :class:`~langchain_g4f.errors.StreamInterruptedError`.
        stall_after: float | "auto" | None
            Once text flows, how long the router waits for each next chunk before
            it counts the stream as broken (a
            :class:`~langchain_g4f.errors.ProviderTimeoutError`, after text) and
            closes its connection, so that ``on_interrupt`` applies at once rather
            than at the answering model's own read timeout. ``"auto"`` (default):
            the larger of 2.5 s and four times the longest wait for a chunk seen
            so far in that stream, so slow but steady providers are not cut; a
            number: that many seconds; ``None``: no limit but the model's own.
        temperature, max_tokens, stop:
            Passed to every provider when set.
        store: Store | str | None
            Where health and budgets are kept: ``None`` (this router), a
            ``redis://`` URL or a store object, shared by every router and process
            that uses it (:mod:`langchain_g4f.redis_store`). A provider's budget
            (``ChatG4F(requests_per_minute=..., max_concurrent=...)``) is held there;
            a provider whose budget is spent waits its turn like one cooling down.

    Instantiate:
        .. code-block:: python

            from langchain_g4f import ChatG4F, ChatG4FRouter

            llm = ChatG4FRouter(
                providers=[ChatG4F(provider="Lockchat", timeout=20), "Aichat"],
                strategy="fastest",
                hedge_after=2.0,
            )
            # a strategy object instead of a name:
            from langchain_g4f.strategies import RandomStrategy

            llm = ChatG4FRouter(strategy=RandomStrategy(weights={"Lockchat": 3}))

    Invoke / stream / async:
        .. code-block:: python

            llm.invoke("Hello!").content
            for chunk in llm.stream("Tell me a story"):
                print(chunk.content, end="")
            await llm.ainvoke("Hello!")

    Response metadata:
        ``response_metadata["provider"]`` names the provider that answered (that
        finished the answer, when it was continued);
        ``response_metadata["attempts"]`` lists the failed attempts before it,
        each ``{"provider", "error", "status", "message", "elapsed"}``, broken
        streams included; ``response_metadata["segments"]``, when the answer was
        continued, lists ``{"provider", "chars"}`` of each part in order.

    Errors:
        :class:`~langchain_g4f.errors.NoProviderAvailableError` when no provider
        serves the model (before any request);
        :class:`~langchain_g4f.errors.AllProvidersFailedError` (with ``attempts``)
        when every attempt failed or the deadline passed;
        :class:`~langchain_g4f.errors.StreamInterruptedError` (with
        ``partial_text``) when a stream breaks after text was yielded and is not
        continued (``on_interrupt="raise"``, or nobody can continue it in time).

    Profile and routing by capability:
        ``llm.profile`` describes what the router can serve: a capability
        (``image_inputs``, ``reasoning_output``, ...) is present when at least one
        candidate has it; ``max_input_tokens`` is the largest candidate window.
        Each call goes only to candidates that can serve it: image blocks only to
        providers with ``image_inputs``; an input whose estimated size
        (:func:`langchain_g4f.profiles.estimate_tokens`) exceeds a provider's
        ``max_input_tokens`` only to providers whose window fits. When none can,
        :class:`~langchain_g4f.errors.NoProviderAvailableError` names the missing
        capability, before any request.

    Traces:
        Each failed attempt is a LangChain custom event ``g4f_attempt`` (data: the
        attempt record above) on the router's run, in ``astream_events`` and
        LangSmith, for ``invoke``, ``stream`` and their async forms; a continued
        answer is a ``g4f_continue`` event (``{"provider", "after", "chars"}``).

    Health:
        The router learns per provider a decayed success rate, the time to first
        token (hedge losers count as "at least this long"), the throughput, and how
        long a failure takes to show; caller cancellations count as nothing.
        ``llm.stats()`` -> ``{provider: {"successes", "failures",
        "consecutive_failures", "cooldown_left", "ttft", "last_error",
        "success_rate", "recent_calls", "throughput", "failure_cost", "circuit"}}``,
        and ``"budget"`` for a provider with one; with a shared store, the fleet's.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    providers: list[ChatG4F | str] | str | None = None
    """Chat models or registered provider names; ``None``: every registered one;
    ``"g4f:*"`` or ``"catalog"``: the ones discovered there."""
    strategy: str | Strategy = "fastest"
    """A strategy name or object; see :mod:`langchain_g4f.strategies`."""
    model_name: str | None = Field(default=None, alias="model")
    """Route to providers serving this model; ``None``: each uses its own."""
    timeout: float | None = Field(default=120.0, gt=0, le=MAX_SECONDS)
    """Deadline in seconds for a call to reach its first text; ``None``: none."""
    max_retries: int = Field(default=1, ge=0)
    """Retries per provider of healable errors (timeouts, 429, 5xx)."""
    backoff: float = Field(default=0.5, ge=0, le=MAX_SECONDS)
    """First backoff between retries, seconds (doubling, jittered; 429 waits Retry-After)."""
    hedge_after: (
        Annotated[float, Field(ge=0, le=MAX_SECONDS, strict=True)] | Literal["auto"] | None
    ) = "auto"
    """When an attempt without text is late and the next provider starts too:
    ``"auto"`` (past its provider's learnt TTFT p99), seconds, or ``None`` (off)."""
    extra_requests: float = Field(default=0.03, ge=0, le=1)
    """Extra requests per call for auto hedges and exploration together."""
    half_life: float = Field(default=60.0, gt=0, le=MAX_SECONDS)
    """Seconds after which an observation counts half as much in the health model."""
    failure_threshold: float = Field(default=0.2, gt=0, le=1)
    """Share of a provider's recent calls failing that opens its circuit."""
    min_calls: int = Field(default=10, ge=1)
    """Calls since a provider's circuit last closed before ``failure_threshold`` applies."""
    cooldown_after: int = Field(default=2, ge=1)
    """Failures in a row that open a provider's circuit whatever the rate."""
    cooldown: float = Field(default=5.0, ge=0, le=MAX_SECONDS)
    """First cooldown, seconds; doubles with each consecutive opening."""
    max_cooldown: float = Field(default=300.0, ge=0, le=MAX_SECONDS)
    """Longest cooldown, seconds."""
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | str | None = Field(default=None, alias="stop_sequences")
    on_interrupt: Literal["continue", "raise"] = "continue"
    """A stream that breaks after text: ``"continue"`` it on another provider, or
    ``"raise"`` :class:`~langchain_g4f.errors.StreamInterruptedError`."""
    store: Any = Field(default=None, exclude=True, repr=False)
    """Where health and budgets are kept: ``None`` (this router), a ``redis://`` /
    ``rediss://`` URL (``?prefix=`` optional) or a store object, shared by every
    router and process that uses it; see :mod:`langchain_g4f.redis_store`."""
    stall_after: (
        Annotated[float, Field(gt=0, le=MAX_SECONDS, strict=True)] | Literal["auto"] | None
    ) = "auto"
    """Once text flows, seconds without a chunk after which the stream counts as
    broken: ``"auto"`` adapts to the stream, a number is fixed, ``None``: off."""

    _entries: list[Entry] = PrivateAttr(default_factory=list)
    _strategy: Strategy = PrivateAttr()
    _extra: ExtraRequests = PrivateAttr()
    _health: Health = PrivateAttr()
    _store: Store = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        init_model(super().__init__, type(self), kwargs)
        # Resolved here rather than in validators, so typed errors reach the caller.
        self._entries = self._build_entries()
        if self.profile is None:
            self.profile = self._union_profile()
        self._extra = ExtraRequests(self.extra_requests)
        self._strategy = resolve_strategy(self.strategy, self._extra)
        self._store = open_store(self.store)
        # Budgets are held in the router's store, and never waited for inside an
        # attempt: a provider whose budget is spent waits its turn in the schedule.
        budgets = budgets_of(self._store)
        for entry in self._entries:
            if entry.chat.limits:
                entry.chat.hold_budget(Budget(entry.key, entry.chat.limits, budgets), wait=False)
        self._health = Health(
            [entry.key for entry in self._entries],
            HealthPolicy(
                half_life=self.half_life,
                failure_threshold=self.failure_threshold,
                min_calls=self.min_calls,
                cooldown_after=self.cooldown_after,
                cooldown=self.cooldown,
                max_cooldown=self.max_cooldown,
            ),
            store=self._store,
        )

    def _build_entries(self) -> list[Entry]:
        if self.providers is None:
            # every registered provider, those that stream first
            names = sorted(
                registry.names(), key=lambda name: not registry.get(name).supports_stream
            )
            chats = [chat for chat in map(self._registered_chat, names) if chat is not None]
        elif isinstance(self.providers, str):
            found = registry.discover(self.providers, self.model_name)
            chats = [chat for chat in map(self._registered_chat, found) if chat is not None]
        else:
            chats = [self._chat_for(spec) for spec in self.providers]
        if not chats:
            msg = "the router has no providers; pass providers=[...]"
            raise ConfigurationError(msg)
        names = [chat.provider_name for chat in chats]
        entries, seen = [], dict.fromkeys(names, 0)
        for chat, name in zip(chats, names, strict=True):
            seen[name] += 1
            key = name if names.count(name) == 1 else f"{name}#{seen[name]}"
            entries.append(Entry(key, chat, _provider_of(chat)))
        return entries

    def _union_profile(self) -> ModelProfile:
        """What the router can serve: any candidate's capability, the largest window."""
        model = self.model_name
        entries = [e for e in self._entries if model is None or e.serves(model)]
        return profiles.union([_profile_of(e, model) for e in entries or self._entries])

    def _registered_chat(self, spec: str | Provider) -> ChatG4F | None:
        """The chat model of a provider; ``None`` when it cannot serve here.

        A provider that needs a model nobody gave, for example, is left out, said once.
        """
        try:
            return self._chat_for(spec)
        except ConfigurationError as exc:
            name = spec if isinstance(spec, str) else spec.name
            logger.warning("router leaves out provider %s: %s", name, exc)
            return None

    def _chat_for(self, spec: ChatG4F | str | Provider) -> ChatG4F:
        if isinstance(spec, ChatG4F):
            return spec.model_copy(update={"max_retries": 0})
        provider = spec if isinstance(spec, Provider) else registry.get(spec)
        model = self.model_name
        serves = model is not None and (provider.accepts_any_model or model in provider.model)
        options: dict[str, Any] = {"model": model} if serves else {}
        if self.timeout is not None:  # a read never outlives the router's deadline
            default = ChatG4F.model_fields["timeout"].default
            options["timeout"] = min(default, self.timeout)
        return ChatG4F(provider=spec, max_retries=0, **options)

    # -- LangChain metadata ---------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "g4f-router"

    @property
    def provider_names(self) -> list[str]:
        """The router's providers (health keys), in the order given."""
        return [entry.key for entry in self._entries]

    @property
    def _identifying_params(self) -> dict[str, Any]:
        strategy = self.strategy if isinstance(self.strategy, str) else type(self.strategy).__name__
        return {
            "providers": self.provider_names,
            "strategy": strategy,
            "model_name": self.model_name,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "hedge_after": self.hedge_after,
            "extra_requests": self.extra_requests,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = ls_params(self, stop, kwargs)
        if "ls_model_name" not in params:
            # no model named for the call: the candidates' own, when they all ask the same
            asked = {entry.chat.model_name for entry in self._entries}
            name = asked.pop() if len(asked) == 1 else None
            if name is not None:
                params["ls_model_name"] = name
        return params

    def stats(self) -> dict[str, dict[str, Any]]:
        """Health per provider (with a shared store, the fleet's figures).

        ``{"successes", "failures" (observed counts), "consecutive_failures",
        "cooldown_left" (s), "ttft" (average s or None), "last_error",
        "success_rate" (the observed share of recent calls, each weighed by its
        age; None before any), "recent_calls" (their weight), "throughput" (chars/s or
        None), "failure_cost" (s or None), "circuit" ("closed", "open" or
        "half_open")}``, and for a provider with a budget ``"budget":
        {"requests", "requests_left", "concurrent", "concurrent_left"}``.
        """
        stats = self._health.stats()
        for entry in self._entries:
            budget = entry.chat.budget
            if budget is not None:
                stats[entry.key]["budget"] = budget.usage()
        return stats

    # -- planning a call ------------------------------------------------------

    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Request:
        kwargs = dict(kwargs)
        model = kwargs.pop("model", None) or self.model_name
        if self.temperature is not None:
            kwargs.setdefault("temperature", self.temperature)
        if self.max_tokens is not None:
            kwargs.setdefault("max_tokens", self.max_tokens)
        if model is not None:
            kwargs["model"] = model
        timeout = self.timeout
        deadline = clock() + timeout if timeout is not None else float("inf")
        self._extra.earn()
        return Request(messages, stop_list(stop, self.stop), kwargs, model, timeout, deadline)

    def _serving(self, model: str | None) -> list[Entry]:
        if model is None:
            return list(self._entries)
        entries = [entry for entry in self._entries if entry.serves(model)]
        if entries:
            return entries
        served: dict[str, list[str]] = {}
        for entry in self._entries:
            for name in ["any model"] if entry.provider.accepts_any_model else entry.provider.model:
                served.setdefault(name, []).append(entry.key)
        available = "; ".join(f"{name} ({', '.join(keys)})" for name, keys in served.items())
        msg = f"no provider of this router serves model {model!r}; available: {available}"
        raise NoProviderAvailableError(msg)

    def _capable(self, entries: list[Entry], request: Request) -> list[Entry]:
        """The entries whose profile fits what the request needs (images, size).

        Raises :class:`NoProviderAvailableError` naming the missing capability
        when none fits, and a :class:`ConfigurationError` for a malformed block.
        """
        check_blocks(request.messages)
        need = profiles.needs(request.messages)
        lacking: dict[str, str] = {}
        able = []
        for entry in entries:
            missing = need.missing(_profile_of(entry, request.model))
            if missing is None:
                able.append(entry)
            else:
                lacking[entry.key] = missing
        if able:
            return able
        wanted = sorted(set(lacking.values()))
        raise NoProviderAvailableError(
            f"no provider of this router can serve this request: it needs "
            f"{' and '.join(wanted)} (estimated input: {need.tokens} tokens); "
            + "; ".join(f"{key} lacks {what}" for key, what in lacking.items())
        )

    def _schedule(self, request: Request) -> Schedule:
        serving = self._serving(request.model)
        entries = self._capable([e for e in serving if e.key not in request.exclude], request)
        views = self._health.views()
        now = clock()
        left = {
            entry.key: max(views[entry.key].cooldown_left, _budget_wait(entry)) for entry in entries
        }
        ready = [entry for entry in entries if left[entry.key] <= 0]
        waiting = [(now + left[entry.key], entry) for entry in entries if left[entry.key] > 0]
        order = self._strategy.order([entry.key for entry in ready], views)
        return Schedule(
            _in_order(ready, order),
            waiting,
            request=request,
            health=self._health,
            max_retries=self.max_retries,
            backoff=self.backoff,
            hedge_after=self.hedge_after,
            extra=self._extra,
            rerank=self._rerank(),
        )

    def _rerank(self) -> Callable[[list[str]], list[str]] | None:
        """How a hedge picks among the providers a call has not tried.

        The strategy's ``rank`` (if it has one: expected cost, no exploration) by
        what is known at the moment of the hedge.
        """
        rank = getattr(self._strategy, "rank", None)
        if not callable(rank):
            return None
        health = self._health
        return lambda keys: list(rank(keys, health.views()))

    # -- traces ------------------------------------------------------------------------

    def _win(self, request: Request, trace: traces.Trace | None) -> Won:
        """Race to the first text; each failed attempt becomes a ``g4f_attempt`` event."""
        try:
            won = race(self._schedule(request), partial(_open_stream, request))
        except AllProvidersFailedError as exc:
            traces.dispatch_attempts(trace, exc.attempts)
            raise
        traces.dispatch_attempts(trace, won.attempts)
        return won

    async def _awin(self, request: Request, trace: traces.Trace | None) -> Won:
        # The store's copy is brought up to date here, awaited: the race's reads then
        # never wait for a shared store on the event loop.
        await prefetch(self._store, self.provider_names)
        try:
            won = await arace(self._schedule(request), partial(_open_astream, request))
        except AllProvidersFailedError as exc:
            await traces.adispatch_attempts(trace, exc.attempts)
            raise
        await traces.adispatch_attempts(trace, won.attempts)
        return won

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """Stream the answer; the router's events attach to the run it names."""
        # The base class does not hand _stream its run manager: name the run here so
        # that the router's custom events attach to it.
        config, trace = self._traced(config, is_async=False)
        token = traces.enter(trace)
        try:
            yield from super().stream(input, config, stop=stop, **kwargs)
        finally:
            traces.leave(token)

    async def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Stream the answer, async; the router's events attach to the run it names."""
        config, trace = self._traced(config, is_async=True)
        token = traces.enter(trace)
        chunks = super().astream(input, config, stop=stop, **kwargs)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            # a caller that stops early closes the stream now, not at garbage
            # collection, so the provider is told of the cancellation at once
            try:
                if isinstance(chunks, AsyncGenerator):
                    await chunks.aclose()
            finally:
                traces.leave(token)

    def _traced(
        self, config: RunnableConfig | None, *, is_async: bool
    ) -> tuple[RunnableConfig, traces.Trace]:
        config = ensure_config(config)
        run_id = config.get("run_id") or uuid7()
        config["run_id"] = run_id
        return config, traces.Trace.for_config(self, config, run_id, is_async=is_async)

    def _relay(self, request: Request) -> _Relay:
        return _Relay(
            request,
            self._health,
            self._candidate_keys,
            continues=self.on_interrupt == "continue",
            max_retries=self.max_retries,
        )

    def _candidate_keys(self, request: Request) -> list[str]:
        """The providers that could serve ``request`` at all."""
        return [entry.key for entry in self._capable(self._serving(request.model), request)]

    # -- the stall watch -----------------------------------------------------------

    def _stall_limit(self) -> StallLimit | None:
        after = self.stall_after
        if after is None:
            return None
        return StallLimit(None if after == "auto" else float(after))

    def _watched(self, won: Won) -> Any:
        """The winner's stream, under the stall limit."""
        limit = self._stall_limit()
        return won.stream if limit is None else Watched(won.stream, won.key, limit, won.scope)

    def _awatched(self, won: Won) -> Any:
        limit = self._stall_limit()
        return won.stream if limit is None else AWatched(won.stream, won.key, limit)

    # -- BaseChatModel ---------------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        trace = traces.current(run_manager)
        relay = self._relay(request)
        won = self._win(request, trace)
        while True:
            relay.begin(won)
            stream = self._watched(won)
            try:
                for chunk in chain(won.head, stream):
                    out = relay.feed(chunk)
                    if out is not None:
                        if run_manager is not None:
                            run_manager.on_llm_new_token(out.text, chunk=out)
                        yield out
                for out in relay.end():
                    if run_manager is not None:
                        run_manager.on_llm_new_token(out.text, chunk=out)
                    yield out
            except Exception as exc:
                traces.dispatch_attempts(trace, [relay.broke(exc)])
                resumed = relay.resume()
                if resumed is None:  # the answer cannot go on
                    raise relay.interrupted() from exc
                request = resumed
            except BaseException:
                relay.cancelled()
                raise
            else:
                return
            finally:
                stream.close()
            try:
                won = self._win(request, trace)
            except Exception as exc:
                raise relay.interrupted(exc) from exc
            traces.dispatch_continue(trace, relay.continued_by(won))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        trace = traces.current(run_manager)
        relay = self._relay(request)
        won = await self._awin(request, trace)
        while True:
            relay.begin(won)
            stream = self._awatched(won)
            try:
                for chunk in won.head:
                    out = relay.feed(chunk)
                    if out is not None:
                        if run_manager is not None:
                            await run_manager.on_llm_new_token(out.text, chunk=out)
                        yield out
                async for chunk in stream:
                    out = relay.feed(chunk)
                    if out is not None:
                        if run_manager is not None:
                            await run_manager.on_llm_new_token(out.text, chunk=out)
                        yield out
                for out in relay.end():
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(out.text, chunk=out)
                    yield out
            except Exception as exc:
                await traces.adispatch_attempts(trace, [relay.broke(exc)])
                resumed = relay.resume()
                if resumed is None:  # the answer cannot go on
                    raise relay.interrupted() from exc
                request = resumed
            except BaseException:
                relay.cancelled()
                raise
            else:
                return
            finally:
                await aclose(stream)
            try:
                won = await self._awin(request, trace)
            except Exception as exc:
                raise relay.interrupted(exc) from exc
            await traces.adispatch_continue(trace, relay.continued_by(won))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        token = traces.enter(traces.Trace.of(run_manager)) if run_manager else None
        try:
            return _result(list(self._stream(messages, stop, **kwargs)))
        finally:
            if token is not None:
                traces.leave(token)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        token = traces.enter(traces.Trace.of(run_manager)) if run_manager else None
        try:
            return _result([chunk async for chunk in self._astream(messages, stop, **kwargs)])
        finally:
            if token is not None:
                traces.leave(token)


# --- the relay: one answer across providers ----------------------------------------


class _Relay:
    """One call's answer, passed on from the winner of each race (it sends no requests).

    Text passes through as it comes. With ``on_interrupt="continue"``, native
    tool-call fragments are held back until their answer completes, so that a
    reply that breaks before any text restarts cleanly; a reply that breaks after
    text is continued by another provider (see :mod:`langchain_g4f.continuation`),
    whose repeat of the text already given is spliced out. Health hears of each
    segment: a success, a failure after text, or a cancellation by the caller.
    """

    #: The current segment's winner (set by :meth:`begin`, which comes first).
    won: Won
    #: The latest break (set by :meth:`broke`, which comes before any use of it).
    error: BaseException

    def __init__(
        self,
        request: Request,
        health: Health,
        candidates: Callable[[Request], list[str]],
        *,
        continues: bool,
        max_retries: int,
    ) -> None:
        self.request = request
        self.health = health
        self.candidates = candidates  # the keys of the providers that could serve a request
        self.continues = continues
        self.max_retries = max_retries
        self.texts: list[str] = []  # all text given to the caller
        self.segments: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []
        self.breaks: Counter[str] = Counter()
        self.splicer: Splicer | None = None
        self.tools: list[ChatGenerationChunk] = []
        self.chars = 0  # of the current segment
        self.done = False
        self.closing: list[ChatGenerationChunk] = []  # the held tool calls and the last chunk

    # -- a segment --

    def begin(self, won: Won) -> None:
        self.won, self.chars, self.tools, self.closing = won, 0, [], []
        self.attempts.extend(won.attempts)
        self.splicer = Splicer("".join(self.texts)) if self.texts else None

    def feed(self, chunk: ChatGenerationChunk) -> ChatGenerationChunk | None:
        """What to yield now for a chunk of the current segment (the last one: at the end)."""
        message = chunk.message
        if isinstance(message, AIMessageChunk):  # as every chunk of a ChatG4F is
            if message.chunk_position == "last":
                self.closing = self._last(chunk)
                return None
            if self.continues and message.tool_call_chunks:
                self.tools.append(chunk)
                return None
        text = chunk.text
        if self.splicer is not None and text and isinstance(message.content, str):
            new = self.splicer.push(text)
            if new != text:
                if not new:
                    return None
                chunk = ChatGenerationChunk(message=message.model_copy(update={"content": new}))
                text = new
        if text:
            self.texts.append(text)
            self.chars += len(text)
        return chunk

    def end(self) -> list[ChatGenerationChunk]:
        """After the segment's stream: its last chunks (a closing one if none was marked)."""
        if not self.done:
            last = AIMessageChunk(content="", chunk_position="last")
            self.closing = self._last(ChatGenerationChunk(message=last))
        closing, self.closing = self.closing, []
        return closing

    def _last(self, chunk: ChatGenerationChunk) -> list[ChatGenerationChunk]:
        message = chunk.message
        update: dict[str, Any] = {}
        if self.splicer is not None and isinstance(message.content, str):
            content = self.splicer.push(message.content) + self.splicer.flush()
            if content != message.content:
                update["content"] = content
        self._given(update.get("content", chunk.text))
        won = self.won
        metadata = dict(message.response_metadata)
        metadata["provider"] = won.key  # as in attempts and stats()
        metadata["attempts"] = self.attempts
        self.segments.append({"provider": won.key, "chars": self.chars})
        if len(self.segments) > 1:
            metadata["segments"] = self.segments
        update["response_metadata"] = metadata
        self.done = True
        self.health.record_success(won.key, chars=self.chars, seconds=clock() - won.at)
        return [*self.tools, ChatGenerationChunk(message=message.model_copy(update=update))]

    def _given(self, text: str) -> None:
        if text:
            self.texts.append(text)
            self.chars += len(text)

    # -- the end of a segment --

    def cancelled(self) -> None:
        """The caller abandoned the answer."""
        if not self.done:
            self.done = True
            self.health.record_cancelled(self.won.key, self.won.attempt.token)

    def broke(self, error: BaseException) -> dict[str, Any]:
        """The current segment broke: health hears of it; returns its attempt record."""
        won = self.won
        self.health.record_failure(won.key, error, after_text=True)
        record = attempt_record(won.attempt, error, clock())
        self.attempts.append(record)
        self.breaks[won.key] += 1
        self.error = error
        if self.texts:
            self.segments.append({"provider": won.key, "chars": self.chars})
        return record

    def resume(self) -> Request | None:
        """After a break: the request that continues the answer.

        The request restarts it when no text was given; ``None`` when the answer
        cannot go on (see :meth:`interrupted`).
        """
        keys = self.candidates(self.request)
        exclude = self._exclude(keys)
        if not self.continues or len(exclude) == len(keys):
            return None
        partial = "".join(self.texts)
        messages = self.request.messages
        if partial:
            messages = continuation_messages(messages, partial)
        timeout = self.request.timeout
        deadline = clock() + timeout if timeout is not None else float("inf")
        return replace(self.request, messages=messages, deadline=deadline, exclude=exclude)

    def _exclude(self, keys: list[str]) -> frozenset[str]:
        """Who may not continue: those that broke this answer.

        When nobody else is left: those that broke it more often than their retries.
        """
        if any(key not in self.breaks for key in keys):
            return frozenset(self.breaks)
        return frozenset(key for key, n in self.breaks.items() if n > self.max_retries)

    def continued_by(self, won: Won) -> dict[str, Any] | None:
        """The ``g4f_continue`` event's data when ``won`` continues given text."""
        if not self.texts:
            return None  # a restart: nothing had reached the caller
        return {"provider": won.key, "after": self.won.key, "chars": sum(map(len, self.texts))}

    def interrupted(self, failed: BaseException | None = None) -> StreamInterruptedError:
        """The error for an answer that broke and is not continued.

        ``failed``: why no provider could continue it (``None``: none was asked).
        """
        error = self.error
        partial = "".join(self.texts)
        if failed is not None:
            why = f"no provider could continue it: {failed}"
        elif self.continues:
            why = "no provider is left to continue it"
        else:
            why = "not continued elsewhere (on_interrupt='raise')"
        return StreamInterruptedError(
            f"the stream broke after {len(partial)} characters of text "
            f"({type(error).__name__}: {error}); {why}",
            provider=self.won.key,
            partial_text=partial,
            cause=error,
        )


def _open_stream(request: Request, attempt: Attempt) -> Iterator[ChatGenerationChunk]:
    chat = attempt.entry.chat
    return chat._stream(request.messages, request.stop, **request.kwargs)


def _open_astream(request: Request, attempt: Attempt) -> AsyncIterator[ChatGenerationChunk]:
    chat = attempt.entry.chat
    return chat._astream(request.messages, request.stop, **request.kwargs)


def _budget_wait(entry: Entry) -> float:
    """Seconds until the provider's budget is expected to have room (0.0: now)."""
    budget = entry.chat.budget
    return budget.wait_hint() if budget is not None else 0.0


def _in_order(entries: list[Entry], keys: list[str]) -> list[Entry]:
    """``entries`` in the strategy's order; any it left out follow in the given order."""
    by_key = {entry.key: entry for entry in entries}
    ordered = [by_key.pop(key) for key in dict.fromkeys(keys) if key in by_key]
    return ordered + list(by_key.values())


def _provider_of(chat: ChatG4F) -> Provider:
    provider = chat.provider
    return provider if isinstance(provider, Provider) else registry.get(provider)


def _profile_of(entry: Entry, model: str | None) -> ModelProfile:
    return entry.chat.profile_for(model)


def _result(chunks: list[ChatGenerationChunk]) -> ChatResult:
    """Streamed chunks as one result: text, tool calls and metadata merged in one pass."""
    first, *rest = (chunk.message for chunk in chunks)
    merged = first + rest if rest else first  # one merge of all chunks, not one per chunk
    return ChatResult(generations=[ChatGeneration(message=message_chunk_to_message(merged))])
