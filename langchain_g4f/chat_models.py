"""``ChatG4F``: one provider as a LangChain chat model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Generator, Iterator
from itertools import chain
from typing import Any, Protocol

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import (
    BaseChatModel,
    LangSmithParams,
    ModelProfile,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, SecretStr, field_serializer, field_validator

from langchain_g4f import profiles
from langchain_g4f import providers as registry
from langchain_g4f import reasoning as thinking
from langchain_g4f import tools as tool_calling
from langchain_g4f._config import (
    MAX_SECONDS,
    check_call_values,
    check_env_key_destination,
    check_proxy_url,
    env_api_key,
    init_model,
)
from langchain_g4f._messages import StopScanner, convert_messages, ls_params, stop_list
from langchain_g4f._redact import redact_url
from langchain_g4f.budgets import AsyncHeld, Budget, Grant, Held, Limits, budgets_of
from langchain_g4f.errors import ConfigurationError, MalformedResponseError, ProviderError
from langchain_g4f.providers.base import Delta, HTTPRequest, Provider, check_http_url
from langchain_g4f.redis_store import open_store
from langchain_g4f.retry import backoff_delay
from langchain_g4f.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AsyncTransport,
    SyncTransport,
)

__all__ = ["ChatG4F"]

#: Per-call keyword arguments ``ChatG4F`` understands (besides ``stop``).
_CALL_OPTIONS = frozenset(
    {
        "model",
        "temperature",
        "max_tokens",
        "tools",
        "tool_choice",
        "response_format",
        "parallel_tool_calls",
    }
)


# --- answers ---------------------------------------------------------------


class _Answer:
    """Collects one answer's deltas: reasoning, text after ``stop``, tool calls, metadata.

    Reasoning (a ``reasoning_content`` field, or a leading ``<think>`` section,
    see :mod:`langchain_g4f.reasoning`) goes to
    ``additional_kwargs["reasoning_content"]``, never into the answer text; stop
    sequences apply to the answer only.
    Finish reason, model name and usage go on the final chunk only, once.
    With emulated tools, text that may be a tool call is held back until the
    end (see :class:`~langchain_g4f.tool_calling.ToolReplyStream`); native tool-call
    fragments stream out as ``tool_call_chunks`` as they arrive.
    """

    __slots__ = (
        "calls",
        "finish_reason",
        "held",
        "model",
        "native",
        "parts",
        "provider",
        "scanner",
        "splitter",
        "thoughts",
        "tool_names",
        "usage",
    )

    def __init__(self, provider: str, call: _Call, *, stream: bool) -> None:
        self.provider = provider
        self.model = call.model
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.scanner = StopScanner(call.stop) if call.stop else None
        self.parts: list[str] = []
        self.tool_names = call.tool_names
        self.held = (
            tool_calling.ToolReplyStream(call.tool_names) if call.tool_names and stream else None
        )
        self.native: list[dict[str, Any]] = []
        self.calls = False
        self.splitter = thinking.ThinkSplitter()
        self.thoughts: list[str] = []

    def text(self, delta: Delta) -> tuple[str, str]:
        """Record the delta's metadata; return the reasoning and the text to emit."""
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
        if delta.usage is not None:
            self.usage = delta.usage
        if delta.model:
            self.model = delta.model
        reasoning, text = self.splitter.push(delta.text) if delta.text else ("", "")
        return delta.reasoning + reasoning, self._answer_text(text)

    def _answer_text(self, text: str) -> str:
        if self.scanner is not None and text:
            text = self.scanner.push(text)
        if self.held is not None and text:
            text = self.held.push(text)
        return text

    def chunks(self, batch: list[Delta]) -> list[ChatGenerationChunk]:
        """The chunks of one streamed batch (metadata is kept for the final chunk)."""
        out = []
        for delta in batch:
            reasoning, text = self.text(delta)
            if reasoning:
                out.append(_reasoning_chunk(reasoning))
            if text:
                out.append(ChatGenerationChunk(message=AIMessageChunk(content=text)))
            if delta.tool_calls:
                self.calls = True
                fragments = _checked_fragments(self.provider, delta.tool_calls)
                self.native.extend(fragments)
                out.append(
                    ChatGenerationChunk(
                        message=AIMessageChunk(
                            content="",
                            tool_call_chunks=tool_calling.native_chunks(fragments),
                        )
                    )
                )
        return out

    def collect(self, batch: list[Delta]) -> None:
        """Keep one batch, for a non-streaming answer."""
        for delta in batch:
            reasoning, text = self.text(delta)
            self.thoughts.append(reasoning)
            self.parts.append(text)
            if delta.tool_calls:
                self.native.extend(_checked_fragments(self.provider, delta.tool_calls))

    def stopped(self) -> bool:
        """Whether a stop sequence has ended the answer (a call: it changes as text comes)."""
        return self.scanner is not None and self.scanner.stopped

    def _tail(self) -> tuple[str, str]:
        """The reasoning and text held back until the end."""
        reasoning, text = self.splitter.flush()
        text = self._answer_text(text) if text else ""
        tail = self.scanner.flush() if self.scanner else ""
        if self.held is not None and tail:
            tail = self.held.push(tail)
        return reasoning, text + tail

    def metadata(self) -> dict[str, Any]:
        if self.calls:
            finish = "tool_calls"
        elif self.stopped():
            finish = "stop"
        else:
            finish = self.finish_reason or "stop"
        return {
            "model_provider": "g4f",
            "provider": self.provider,
            "model_name": self.model,
            "finish_reason": finish,
        }

    def final_chunk(self) -> ChatGenerationChunk:
        """The last chunk: held-back text and tool calls, and all the metadata.

        Raises :class:`MalformedResponseError` when the streamed tool-call
        fragments, merged, make a call without a name.
        """
        _merge_fragments(self.provider, self.native)
        reasoning, text = self._tail()
        call_chunks = []
        if self.held is not None:
            rest, calls = self.held.finish()
            text += rest
            if calls:
                self.calls = True
                call_chunks = tool_calling.call_chunks(calls)
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=text,
                additional_kwargs=_reasoning_kwargs(reasoning),
                tool_call_chunks=call_chunks,
                response_metadata=self.metadata(),
                usage_metadata=self.usage,  # type: ignore[arg-type]
                chunk_position="last",
            )
        )

    def message(self) -> AIMessage:
        """The whole answer of a non-streaming call."""
        reasoning, tail = self._tail()
        self.thoughts.append(reasoning)
        self.parts.append(tail)
        text = "".join(self.parts)
        calls: list[Any] = []
        invalid: list[Any] = []
        if self.native:
            merged = _merge_fragments(self.provider, self.native)
            calls, invalid = tool_calling.native_message_calls(merged)
        elif self.tool_names:
            found = tool_calling.parse_tool_calls(text, self.tool_names)
            if found is not None:
                text, calls = found
        self.calls = bool(calls or invalid)
        return AIMessage(
            content=text,
            additional_kwargs=_reasoning_kwargs("".join(self.thoughts)),
            tool_calls=calls,
            invalid_tool_calls=invalid,
            response_metadata=self.metadata(),
            usage_metadata=self.usage,
        )


def _reasoning_kwargs(reasoning: str) -> dict[str, Any]:
    return {"reasoning_content": reasoning} if reasoning else {}


def _reasoning_chunk(reasoning: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(
        message=AIMessageChunk(content="", additional_kwargs=_reasoning_kwargs(reasoning))
    )


def _checked_fragments(provider: str, fragments: list[Any]) -> list[dict[str, Any]]:
    """Native tool-call fragments, each checked by :func:`_checked_fragment`."""
    return [_checked_fragment(provider, f, position) for position, f in enumerate(fragments)]


def _checked_fragment(provider: str, fragment: Any, position: int) -> dict[str, Any]:
    """An OpenAI tool-call fragment whose fields have their declared types.

    The result has an ``index`` (``position`` when it had none) and its
    ``arguments`` as text (the object of a whole call is written as JSON).
    Raises :class:`MalformedResponseError` for a fragment of another shape.
    """
    function = fragment.get("function") if isinstance(fragment, dict) else None
    if not isinstance(fragment, dict) or not _is_optional(function, dict):
        raise _malformed_call(provider, fragment)
    function = function or {}
    index, arguments = fragment.get("index"), function.get("arguments")
    if not (
        _is_optional(index, int)
        and _is_optional(fragment.get("id"), str)
        and _is_optional(function.get("name"), str)
        and _is_optional(arguments, (str, dict))
    ):
        raise _malformed_call(provider, fragment)
    if index is not None and not isinstance(arguments, dict):
        return fragment
    if isinstance(arguments, dict):
        function = {**function, "arguments": json.dumps(arguments, ensure_ascii=False)}
    return {**fragment, "index": position if index is None else index, "function": function}


def _is_optional(value: Any, kind: type | tuple[type, ...]) -> bool:
    """Whether ``value`` is ``None`` or of ``kind`` (a bool is no number here)."""
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _malformed_call(provider: str, fragment: Any) -> MalformedResponseError:
    msg = f"sent a tool call of the wrong shape: {fragment!r:.120}"
    return MalformedResponseError(msg, provider=provider)


def _merge_fragments(provider: str, fragments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Checked tool-call fragments (see :func:`_checked_fragments`) merged by index.

    Raises :class:`MalformedResponseError` for a call left without a name.
    """
    merged: dict[int, dict[str, Any]] = {}
    for fragment in fragments:
        function = fragment.get("function") or {}
        call = merged.setdefault(
            fragment["index"], {"id": None, "function": {"name": None, "arguments": ""}}
        )
        call["id"] = call["id"] or fragment.get("id")
        call["function"]["name"] = call["function"]["name"] or function.get("name")
        call["function"]["arguments"] += function.get("arguments") or ""
    calls = [merged[i] for i in sorted(merged)]
    for call in calls:
        if not call["function"]["name"]:
            msg = f"sent a tool call without a name: {call!r:.120}"
            raise MalformedResponseError(msg, provider=provider)
    return calls


def _has_content(batch: list[Delta]) -> bool:
    return any(d.text or d.tool_calls or d.reasoning for d in batch)


class _Batches(Protocol):
    """The rest of an answer: its batches of deltas, and a way to stop reading them."""

    def __iter__(self) -> Iterator[list[Delta]]: ...

    def close(self) -> None:
        """Stop reading: free the connection (and the budget's share, if held)."""


class _ABatches(Protocol):
    """:class:`_Batches`, async."""

    def __aiter__(self) -> AsyncIterator[list[Delta]]: ...

    def aclose(self) -> Awaitable[None]:
        """Stop reading: free the connection (and the budget's share, if held)."""


def _closable(batches: Iterator[list[Delta]]) -> Generator[list[Delta], None, None]:
    """A transport's batches as a generator; closing it closes them if they can be.

    A transport may return any iterator: a provider doing its own I/O, a list's.
    """
    if isinstance(batches, Generator):
        return batches
    return _delegate(batches)


def _delegate(batches: Iterator[list[Delta]]) -> Generator[list[Delta], None, None]:
    yield from batches  # closing the generator calls batches.close(), if it has one


def _aclosable(batches: AsyncIterator[list[Delta]]) -> AsyncGenerator[list[Delta], None]:
    """:func:`_closable` for an async transport."""
    if isinstance(batches, AsyncGenerator):
        return batches
    return _adelegate(batches)


async def _adelegate(batches: AsyncIterator[list[Delta]]) -> AsyncGenerator[list[Delta], None]:
    try:
        async for batch in batches:
            yield batch
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


class _Call:
    """One prepared call: the request to send and how to read its answer."""

    __slots__ = ("model", "request", "stop", "tool_names")

    def __init__(
        self,
        request: HTTPRequest,
        model: str,
        stop: list[str] | None,
        tool_names: set[str] | None = None,
    ) -> None:
        self.request = request
        self.model = model
        self.stop = stop
        #: Names of the tools an emulated reply may call.
        self.tool_names = tool_names


def _give_back(taken: tuple[Budget, Grant] | None) -> None:
    if taken is not None:
        budget, grant = taken
        budget.release(grant)


# --- the chat model --------------------------------------------------------


class ChatG4F(tool_calling.ToolCallingMixin, BaseChatModel):
    """A gpt4free-style provider as a LangChain chat model.

    Setup:
        Install ``langchain-g4f-router``. The seed providers need no key; an endpoint
        that does takes ``api_key``, or reads it from the environment:
        ``G4F_<PROVIDER>_API_KEY`` (or the provider's own ``api_key_env``) for
        that provider, ``G4F_API_KEY`` for every provider that needs a key. A key
        from the environment never goes over plain ``http://`` to another host;
        one passed as ``api_key`` goes where you send it.

        .. code-block:: bash

            pip install langchain-g4f-router

    Key init args — completion params:
        provider: str | Provider
            A registered provider name (``"Mishalsgpt"``, ``"Gravityengine"``,
            ``"Lockchat"``, ``"Aichat"`` or one you registered) or a provider object.
        model: str
            Model name; defaults to the provider's first model.
        temperature: float | None
            Sampling temperature; ``None`` keeps the provider's default.
        max_tokens: int | None
            Most tokens to generate.
        stop: list[str] | None
            Stop sequences (alias ``stop_sequences``); honoured on every provider.

    Key init args — client params:
        base_url: str | None
            Replaces the provider's URL: any server that speaks its protocol.
            A query string in it stays after the path. Credentials in it
            (``user:pass@``, ``?key=...``) never show in reprs, dumps or traces.
        api_key: SecretStr | None
            Sent as ``Authorization: Bearer``; never logged or recorded.
        timeout: float | None
            Seconds to connect and to wait for each read.
        max_retries: int
            Retries of errors that can heal, before any text arrives.
        proxy: str | None
            One proxy URL for every request.
        requests_per_minute, max_concurrent: int | None
            The provider's budget. A request that does not fit waits within
            ``timeout``, then :class:`~langchain_g4f.errors.BudgetExhaustedError`
            (nothing sent). ``store="redis://..."`` holds it for every process; in a
            router, the router's store holds it and a spent budget is skipped.

    Instantiate:
        .. code-block:: python

            from langchain_g4f import ChatG4F

            llm = ChatG4F(provider="Lockchat", model="gpt-4", temperature=0)
            # any deployment that speaks Lockchat's protocol:
            llm = ChatG4F(provider="Lockchat", base_url="http://127.0.0.1:8080")

    Invoke:
        .. code-block:: python

            llm.invoke([("system", "Be brief."), ("human", "Hello!")]).content

    Stream:
        .. code-block:: python

            for chunk in llm.stream("Tell me a story"):
                print(chunk.content, end="", flush=True)

    Async:
        .. code-block:: python

            await llm.ainvoke("Hello!")
            async for chunk in llm.astream("Hello!"):
                print(chunk.content, end="")

    Tool calling:
        Native (the OpenAI ``tools`` field) on endpoints that declare it,
        emulated by instruction and parser everywhere else; the same
        ``tool_calls`` either way, with deterministic ids.

        .. code-block:: python

            def get_weather(location: str) -> str:
                "Get the current weather at a location."
                ...


            llm.bind_tools([get_weather]).invoke("Weather in Paris?").tool_calls
            # [{'name': 'get_weather', 'args': {'location': 'Paris'},
            #   'id': 'call_...', 'type': 'tool_call'}]

    Structured output:
        .. code-block:: python

            from pydantic import BaseModel


            class Joke(BaseModel):
                setup: str
                punchline: str


            llm.with_structured_output(Joke).invoke("Tell me a joke about cats")
            # method="json_mode" / "json_schema"; include_raw=True keeps the raw reply

    Token usage:
        ``usage_metadata`` is set only when the server sent real token counts.

    Profile:
        ``llm.profile`` is the provider's LangChain model profile (context window,
        ``image_inputs``, ``reasoning_output``...) plus what the package adds on
        every provider: ``tool_calling`` and ``structured_output`` (emulated where
        the endpoint has no native support). Pass ``profile=`` to replace it.

    Image input:
        On providers whose profile has ``image_inputs`` (for instance
        ``OpenAICompatible(..., profile={"image_inputs": True})``), ``image``
        blocks (URL or base64) and OpenAI ``image_url`` parts in human messages go
        out as OpenAI ``image_url`` parts; elsewhere they are a
        ``ConfigurationError`` before any request.

        .. code-block:: python

            llm.invoke(
                [
                    HumanMessage(
                        content=[
                            {"type": "text", "text": "What is in this picture?"},
                            {"type": "image", "base64": data, "mime_type": "image/png"},
                        ]
                    )
                ]
            )

    Reasoning:
        A ``reasoning_content`` (or ``reasoning``) field, and a ``<think>...</think>``
        section that opens the text, are reasoning, never answer text: in
        ``additional_kwargs["reasoning_content"]``, or as ``reasoning`` content
        blocks with ``output_version="v1"``; streamed as they arrive. Stop
        sequences apply to the answer only. Reasoning blocks in the history are
        not sent back.

        .. code-block:: python

            msg = llm.invoke("Why is the sky blue?")
            msg.additional_kwargs["reasoning_content"], msg.content

    Response metadata:
        .. code-block:: python

            llm.invoke("Hi").response_metadata
            # {'model_provider': 'g4f', 'provider': 'Lockchat',
            #  'model_name': 'gpt-4', 'finish_reason': 'stop'}

    Errors:
        Bad input raises a :class:`~langchain_g4f.errors.ConfigurationError`
        before any request; a failing provider raises a
        :class:`~langchain_g4f.errors.ProviderError` subclass naming it.
    """

    model_config = ConfigDict(populate_by_name=True)

    provider: str | Provider
    """A registered provider name or a provider object."""
    model_name: str | None = Field(default=None, alias="model")
    """Model name; defaults to the provider's first model."""
    base_url: str | None = None
    """Replaces the provider's URL (an absolute ``http(s)://`` URL)."""
    api_key: SecretStr | None = None
    """Bearer token; when not passed, read from the environment (see Setup)."""
    timeout: float | None = Field(default=60.0, gt=0, le=MAX_SECONDS)
    """Seconds to connect and to wait for each read; ``None`` waits forever."""
    max_retries: int = Field(default=2, ge=0)
    """Retries of errors that can heal (timeouts, 429, 5xx), before any text."""
    temperature: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | str | None = Field(default=None, alias="stop_sequences")
    streaming: bool = False
    """Whether ``invoke`` streams under the hood (callbacks see tokens)."""
    proxy: str | None = None
    verify: bool = True
    """Verify TLS certificates."""
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1)
    """A larger answer is cut off with ``ResponseTooLargeError``."""
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra fields merged into every request body."""
    requests_per_minute: int | None = Field(default=None, ge=1)
    """The provider's budget: requests sent in any 60 s (retries count); ``None``: no limit."""
    max_concurrent: int | None = Field(default=None, ge=1)
    """The provider's budget: requests in flight at once; ``None``: no limit."""
    store: Any = Field(default=None, exclude=True, repr=False)
    """Where the budget is held: ``None`` (this model), a ``redis://`` URL or a store
    (shared by every process using it). In a router, the router's store."""

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, url: str | None) -> str | None:
        return None if url is None else check_http_url(url)

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, url: str | None) -> str | None:
        return None if url is None else check_proxy_url(url)

    @field_serializer("base_url", "proxy")
    def _redacted_url(self, url: str | None) -> str | None:
        return None if url is None else redact_url(url)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            secret = name in ("base_url", "proxy") and isinstance(value, str)
            yield name, redact_url(value) if secret else value

    def __init__(self, **kwargs: Any) -> None:
        init_model(super().__init__, type(self), kwargs)
        # Resolved here rather than in a validator, so the typed errors reach
        # the caller as they are (pydantic would wrap them).
        provider = self.provider
        self._provider = registry.get(provider) if isinstance(provider, str) else provider
        if self.model_name is None:
            if not self._provider.model:
                msg = "serves any model; pass model=..."
                raise ConfigurationError(msg, provider=self._provider.name)
            self.model_name = self._provider.model[0]
        self._provider.check_model(self.model_name)
        #: The environment variable the key came from; ``None``: passed or none.
        self._key_env: str | None = None
        if "api_key" not in kwargs and (found := env_api_key(self._provider)):
            self._key_env, key = found
            self.api_key = SecretStr(key)
        self._check_key_destination()
        self._sync: SyncTransport | None = None
        self._async: AsyncTransport | None = None
        self._budget: Budget | None = None
        #: Whether a spent budget is waited for (within ``timeout``) or raised at once.
        self._budget_waits = True
        if self.limits:
            holder = budgets_of(open_store(self.store))
            self._budget = Budget(self._provider.name, self.limits, holder)

    @property
    def limits(self) -> Limits:
        """The declared budget (falsy when there is none)."""
        return Limits(self.requests_per_minute, self.max_concurrent)

    @property
    def budget(self) -> Budget | None:
        """Where each request takes its share of the budget (``None``: no budget)."""
        return self._budget

    def hold_budget(self, budget: Budget, *, wait: bool) -> None:
        """Take each request's share from ``budget`` from now on.

        With ``wait=False`` a spent budget raises
        :class:`~langchain_g4f.errors.BudgetExhaustedError` at once instead of
        waiting within ``timeout``: a router does the waiting in its schedule.
        """
        self._budget = budget
        self._budget_waits = wait

    # -- LangChain metadata -------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "g4f"

    @property
    def lc_secrets(self) -> dict[str, str]:
        """The key's environment variable, named in serialized models instead of the key."""
        return {"api_key": self._key_env or "G4F_API_KEY"}

    @property
    def provider_name(self) -> str:
        """The provider's registry name."""
        return self._provider.name

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "provider": self._provider.name,
            "model_name": self.model_name,
            "base_url": redact_url(self.base_url or self._provider.url),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return ls_params(self, stop, kwargs)

    def _resolve_model_profile(self) -> ModelProfile | None:
        """The provider's profile for the model, with what the package adds."""
        provider = registry.get(self.provider) if isinstance(self.provider, str) else self.provider
        return profiles.chat_profile(provider, self.model_name or provider.model[0])

    def profile_for(self, model: str | None = None) -> ModelProfile:
        """The profile for a call that asks for ``model`` (``None``: the model's own)."""
        if model is None or model == self.model_name:
            return self.profile or {}
        return profiles.chat_profile(self._provider, model)

    # -- preparing a call ---------------------------------------------------

    def _check_key_destination(self) -> None:
        """A key from the environment goes over plain HTTP to loopback only."""
        if self._key_env and self.api_key:
            check_env_key_destination(
                self._key_env, self._provider.endpoint(self.base_url), self._provider.name
            )

    def _prepare(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        *,
        stream: bool,
        kwargs: dict[str, Any],
    ) -> _Call:
        unknown = {k for k in kwargs if k not in _CALL_OPTIONS and not k.startswith("ls_")}
        if unknown:
            msg = (
                f"unknown call option(s) {', '.join(sorted(unknown))}; "
                f"accepted: {', '.join(sorted(_CALL_OPTIONS))}, stop"
            )
            raise ConfigurationError(
                msg,
                provider=self._provider.name,
            )
        check_call_values(kwargs, self._provider.name)
        self._check_key_destination()
        model = kwargs.get("model") or self.model_name
        if model is None:  # model_name was set to None after construction
            msg = "no model to ask for; pass model=..."
            raise ConfigurationError(msg, provider=self._provider.name)
        stops = stop_list(stop, self.stop)
        native = self._provider.native_tools
        images = bool(self.profile_for(model).get("image_inputs"))
        wire = convert_messages(messages, self._provider.name, native_tools=native, images=images)
        extra = dict(self.model_kwargs)
        instructions = []
        tool_names = None
        bound = kwargs.get("tools") or []
        if bound:
            choice = tool_calling.normalize_tool_choice(kwargs.get("tool_choice"), bound)
            if native:
                extra["tools"] = bound
                if choice is not None:
                    extra["tool_choice"] = tool_calling.native_tool_choice(choice)
                if kwargs.get("parallel_tool_calls") is not None:
                    extra["parallel_tool_calls"] = kwargs["parallel_tool_calls"]
            elif choice != "none":
                instructions.append(tool_calling.tool_instruction(bound, choice))
                tool_names = {t["function"]["name"] for t in bound}
        response_format = kwargs.get("response_format")
        if response_format:
            if native:
                extra["response_format"] = tool_calling.native_response_format(response_format)
            else:
                schema = tool_calling.response_schema(response_format)
                instructions.append(tool_calling.json_instruction(schema))
        if instructions:
            wire.insert(0, {"role": "system", "content": "\n\n".join(instructions)})
        request = self._provider.build_request(
            model,
            wire,
            stream=stream,
            base_url=self.base_url,
            api_key=self.api_key.get_secret_value() if self.api_key else None,
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            stop=stops,
            extra=extra,
        )
        return _Call(request, model, stops, tool_names)

    @property
    def sync_transport(self) -> SyncTransport:
        """The HTTP transport of sync calls, made on first use."""
        if self._sync is None:
            self._sync = SyncTransport(
                timeout=self.timeout,
                proxy=self.proxy,
                verify=self.verify,
                max_response_bytes=self.max_response_bytes,
            )
        return self._sync

    @property
    def async_transport(self) -> AsyncTransport:
        """The HTTP transport of async calls, made on first use."""
        if self._async is None:
            self._async = AsyncTransport(
                timeout=self.timeout,
                proxy=self.proxy,
                verify=self.verify,
                max_response_bytes=self.max_response_bytes,
            )
        return self._async

    # -- sending, with retries before the first delta -------------------------

    def _open(self, call: _Call) -> tuple[list[list[Delta]], _Batches]:
        """Send the call and read up to its first text, retrying what can heal.

        Returns the batches read so far and the rest of the answer. Nothing has
        reached the caller before the first text, so a retry cannot duplicate.
        Each request first takes its share of the budget, given back when the
        rest of the answer is read or closed.
        """
        attempt = 0
        while True:
            taken = self._take_budget()
            batches = _closable(
                (self._provider.transport or self.sync_transport).batches(
                    self._provider, call.request
                )
            )
            head: list[list[Delta]] = []
            try:
                for batch in batches:
                    head.append(batch)
                    if _has_content(batch):
                        break
            except ProviderError as exc:
                _give_back(taken)
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                time.sleep(backoff_delay(attempt, exc))
                attempt += 1
                continue
            except BaseException:
                _give_back(taken)
                raise
            return head, batches if taken is None else Held(batches, *taken)

    async def _aopen(self, call: _Call) -> tuple[list[list[Delta]], _ABatches]:
        attempt = 0
        while True:
            taken = await self._atake_budget()
            batches = _aclosable(
                (self._provider.transport or self.async_transport).abatches(
                    self._provider, call.request
                )
            )
            head: list[list[Delta]] = []
            try:
                async for batch in batches:
                    head.append(batch)
                    if _has_content(batch):
                        break
            except ProviderError as exc:
                _give_back(taken)
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                await asyncio.sleep(backoff_delay(attempt, exc))
                attempt += 1
                continue
            except BaseException:
                _give_back(taken)
                raise
            return head, batches if taken is None else AsyncHeld(batches, *taken)

    def _take_budget(self) -> tuple[Budget, Grant] | None:
        """The budget and this request's share of it (``None``: no budget)."""
        budget = self._budget
        if budget is None:
            return None
        grant = budget.acquire(self.timeout) if self._budget_waits else budget.take()
        return budget, grant

    async def _atake_budget(self) -> tuple[Budget, Grant] | None:
        budget = self._budget
        if budget is None:
            return None
        grant = await (budget.aacquire(self.timeout) if self._budget_waits else budget.atake())
        return budget, grant

    # -- BaseChatModel --------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, stream=True, kwargs=kwargs)
        answer = _Answer(self._provider.name, call, stream=True)
        head, rest = self._open(call)
        try:
            for batch in chain(head, rest):
                for chunk in answer.chunks(batch):
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
                if answer.stopped():
                    break
        finally:
            rest.close()
        final = answer.final_chunk()
        if run_manager and final.text:
            run_manager.on_llm_new_token(final.text, chunk=final)
        yield final

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, stream=True, kwargs=kwargs)
        answer = _Answer(self._provider.name, call, stream=True)
        head, rest = await self._aopen(call)
        try:
            # The head is read already; the rest is read here directly, with no
            # generator in between (each async hop costs more than a chunk's work).
            for batch in head:
                for chunk in answer.chunks(batch):
                    if run_manager:
                        await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
            if not answer.stopped():
                async for batch in rest:
                    for chunk in answer.chunks(batch):
                        if run_manager:
                            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
                    if answer.stopped():
                        break
        finally:
            await rest.aclose()
        final = answer.final_chunk()
        if run_manager and final.text:
            await run_manager.on_llm_new_token(final.text, chunk=final)
        yield final

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, stream=False, kwargs=kwargs)
        answer = _Answer(self._provider.name, call, stream=False)
        head, rest = self._open(call)
        try:
            for batch in chain(head, rest):
                answer.collect(batch)
                if answer.stopped():
                    break
        finally:
            rest.close()
        return ChatResult(generations=[ChatGeneration(message=answer.message())])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, stream=False, kwargs=kwargs)
        answer = _Answer(self._provider.name, call, stream=False)
        head, rest = await self._aopen(call)
        try:
            for batch in head:
                answer.collect(batch)
            if not answer.stopped():
                async for batch in rest:
                    answer.collect(batch)
                    if answer.stopped():
                        break
        finally:
            await rest.aclose()
        return ChatResult(generations=[ChatGeneration(message=answer.message())])
