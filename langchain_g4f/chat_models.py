"""``ChatG4F``: one provider as a LangChain chat model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from itertools import chain
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import (
    BaseChatModel,
    LangSmithParams,
    ModelProfile,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, SecretStr, field_serializer, field_validator

from langchain_g4f import content as blocks
from langchain_g4f import profiles
from langchain_g4f import providers as registry
from langchain_g4f import reasoning as thinking
from langchain_g4f import tools as tool_calling
from langchain_g4f._config import (
    check_call_values,
    check_env_key_destination,
    check_proxy_url,
    env_api_key,
    init_model,
)
from langchain_g4f._redact import redact_url
from langchain_g4f.budgets import AsyncHeld, Budget, Grant, Held, Limits, budgets_of
from langchain_g4f.errors import ConfigurationError, ProviderError
from langchain_g4f.providers.base import (
    Delta,
    HTTPRequest,
    Message,
    Provider,
    check_http_url,
)
from langchain_g4f.redis_store import open_store
from langchain_g4f.retry import backoff_delay
from langchain_g4f.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    AsyncTransport,
    SyncTransport,
)

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
#: Content blocks that restate ``AIMessage.tool_calls``; sent as tool calls instead.
_TOOL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call", "server_tool_call"})


# --- messages --------------------------------------------------------------


def _content(message: BaseMessage, provider: str, images: bool) -> str | list[dict[str, Any]]:
    """A message's content for the wire: its text, or OpenAI parts when it has images.

    Text blocks become text; reasoning blocks of earlier answers are left out; image
    blocks become ``image_url`` parts for providers that take images and are a
    :class:`ConfigurationError` elsewhere (see :mod:`langchain_g4f.content`).
    """
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append({"type": "text", "text": block})
        elif blocks.block_type(block) == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif blocks.is_reasoning(block):
            blocks.check_reasoning(block, provider)
        elif blocks.is_image(block):
            _check_image_allowed(message, block, provider, images)
            parts.append(blocks.image_part(block, provider))
        elif blocks.block_type(block) in _TOOL_BLOCKS and isinstance(message, AIMessage):
            continue
        elif isinstance(message, ToolMessage) and isinstance(block, dict):
            parts.append({"type": "text", "text": json.dumps(block, ensure_ascii=False)})
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            msg = f"accepts text only; the message has a {kind!r} content block"
            raise ConfigurationError(
                msg,
                provider=provider,
            )
    if any(part["type"] == "image_url" for part in parts):
        return parts
    return "".join(part["text"] for part in parts)


def _check_image_allowed(
    message: BaseMessage, block: dict[str, Any], provider: str, images: bool
) -> None:
    if not images:
        msg = (
            "does not take image input (its profile has no image_inputs); "
            f"the message has a {block['type']!r} content block"
        )
        raise ConfigurationError(
            msg,
            provider=provider,
        )
    if not isinstance(message, HumanMessage):
        msg = (
            f"takes images in human messages only; a {message.type!r} message "
            f"has a {block['type']!r} content block"
        )
        raise ConfigurationError(
            msg,
            provider=provider,
        )


def convert_messages(
    messages: Sequence[BaseMessage],
    provider: str,
    *,
    native_tools: bool = False,
    images: bool = False,
) -> list[Message]:
    """LangChain messages -> OpenAI-style ``{"role", "content"}`` dicts.

    Tool calls and tool results go out natively (``tool_calls``, role ``tool``)
    for providers with native tools, and in the emulated text format otherwise.
    With ``images``, a message with image blocks goes out as a list of OpenAI
    ``text`` and ``image_url`` parts.
    """
    out: list[Message] = []
    calls: dict[str, tuple[str, int]] = {}  # tool call id -> (name, 1-based position)
    for message in messages:
        content = _content(message, provider, images)
        if isinstance(message, HumanMessage):
            item: Message = {"role": "user", "content": content}
        elif isinstance(message, AIMessage):
            item = {"role": "assistant", "content": content}
            if message.tool_calls:
                calls.update(
                    (c["id"], (c["name"], i))
                    for i, c in enumerate(message.tool_calls, 1)
                    if c["id"]
                )
                if native_tools:
                    item = {
                        "role": "assistant",
                        "content": content or None,
                        "tool_calls": tool_calling.native_calls(message),
                    }
                else:
                    item["content"] = tool_calling.emulated_call_text(message, content)
        elif isinstance(message, SystemMessage):
            item = {"role": "system", "content": content}
        elif isinstance(message, ToolMessage):
            if native_tools:
                item = {"role": "tool", "content": content, "tool_call_id": message.tool_call_id}
            else:
                name, position = calls.get(message.tool_call_id, (None, None))
                text = tool_calling.emulated_result_text(
                    message, message.name or name, position, content
                )
                item = {"role": "user", "content": text}
        elif isinstance(message, ChatMessage):
            item = {"role": message.role, "content": content}
        elif isinstance(message, FunctionMessage):
            item = {"role": "function", "content": content, "name": message.name}
        else:
            msg = f"cannot send a message of type {message.type!r}"
            raise ConfigurationError(msg, provider=provider)
        if message.name and "name" not in item and item["role"] in ("user", "assistant", "system"):
            item["name"] = message.name
        out.append(item)
    return out


def stop_list(stop: list[str] | None, default: list[str] | str | None) -> list[str] | None:
    """The call's stop sequences, else the model's, as a list (``None``: none)."""
    stops = stop if stop is not None else default
    if isinstance(stops, str):
        return [stops]
    return list(stops) if stops else None


def ls_params(model: Any, stop: list[str] | None, kwargs: dict[str, Any]) -> LangSmithParams:
    """LangSmith's params for ``ChatG4F`` and the router (same field names)."""
    params = LangSmithParams(ls_provider="g4f", ls_model_type="chat")
    name = kwargs.get("model") or model.model_name
    if name:
        params["ls_model_name"] = name
    temperature = kwargs.get("temperature", model.temperature)
    if temperature is not None:
        params["ls_temperature"] = temperature
    max_tokens = kwargs.get("max_tokens", model.max_tokens)
    if max_tokens is not None:
        params["ls_max_tokens"] = max_tokens
    stops = stop_list(stop, model.stop)
    if stops:
        params["ls_stop"] = stops
    return params


# --- answers ---------------------------------------------------------------


class StopScanner:
    """Cuts text at the first stop sequence, also across chunk boundaries.

    ``push`` returns the text that is safe to emit: anything that could still
    be the start of a stop sequence is held back until the next piece decides.
    """

    __slots__ = ("_held", "_keep", "stopped", "stops")

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self._keep = max((len(s) for s in self.stops), default=1) - 1
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        text = self._held + text
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        # Hold back the longest tail that is a prefix of some stop sequence.
        hold = 0
        for n in range(min(self._keep, len(text)), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                hold = n
                break
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


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
                out.append(
                    ChatGenerationChunk(
                        message=AIMessageChunk(
                            content="",
                            tool_call_chunks=tool_calling.native_chunks(delta.tool_calls),
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
                self.native.extend(delta.tool_calls)

    @property
    def stopped(self) -> bool:
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
        elif self.stopped:
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
        """The last chunk: held-back text and tool calls, and all the metadata."""
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
            calls, invalid = tool_calling.native_message_calls(_merge_fragments(self.native))
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
            usage_metadata=self.usage,  # type: ignore[arg-type]
        )


def _reasoning_kwargs(reasoning: str) -> dict[str, Any]:
    return {"reasoning_content": reasoning} if reasoning else {}


def _reasoning_chunk(reasoning: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(
        message=AIMessageChunk(content="", additional_kwargs=_reasoning_kwargs(reasoning))
    )


def _merge_fragments(fragments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls, whole or streamed in fragments, merged by index."""
    merged: dict[int, dict[str, Any]] = {}
    for position, fragment in enumerate(fragments):
        index = fragment.get("index", position)
        function = fragment.get("function") or {}
        call = merged.setdefault(index, {"id": None, "function": {"name": None, "arguments": ""}})
        call["id"] = call["id"] or fragment.get("id")
        call["function"]["name"] = call["function"]["name"] or function.get("name")
        call["function"]["arguments"] += function.get("arguments") or ""
    return [merged[i] for i in sorted(merged)]


def _has_content(batch: list[Delta]) -> bool:
    return any(d.text or d.tool_calls or d.reasoning for d in batch)


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
    timeout: float | None = Field(default=60.0, gt=0)
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
            if name in ("base_url", "proxy") and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    def __init__(self, **kwargs: Any) -> None:
        init_model(super().__init__, type(self), kwargs)
        # Resolved here rather than in a validator, so the typed errors reach
        # the caller as they are (pydantic would wrap them).
        provider = self.provider
        self._provider = registry.get(provider) if isinstance(provider, str) else provider
        if not isinstance(self._provider, Provider):
            msg = f"provider must be a name or a Provider, not {type(provider).__name__}"
            raise ConfigurationError(msg)
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

    # -- LangChain metadata -------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "g4f"

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": self._key_env or "G4F_API_KEY"}

    @property
    def provider_name(self) -> str:
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
        assert model is not None
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
        if self._async is None:
            self._async = AsyncTransport(
                timeout=self.timeout,
                proxy=self.proxy,
                verify=self.verify,
                max_response_bytes=self.max_response_bytes,
            )
        return self._async

    # -- sending, with retries before the first delta -------------------------

    def _open(self, call: _Call) -> tuple[list[list[Delta]], Iterator[list[Delta]]]:
        """Send the call and read up to its first text, retrying what can heal.

        Returns the batches read so far and the rest of the answer. Nothing has
        reached the caller before the first text, so a retry cannot duplicate.
        Each request first takes its share of the budget, given back when the
        rest of the answer is read or closed.
        """
        attempt = 0
        while True:
            grant = self._take_budget()
            batches = (self._provider.transport or self.sync_transport).batches(
                self._provider, call.request
            )
            head: list[list[Delta]] = []
            try:
                for batch in batches:
                    head.append(batch)
                    if _has_content(batch):
                        break
            except ProviderError as exc:
                self._give_back(grant)
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                time.sleep(backoff_delay(attempt, exc))
                attempt += 1
                continue
            except BaseException:
                self._give_back(grant)
                raise
            return head, batches if grant is None else Held(batches, self._budget, grant)

    async def _aopen(
        self, call: _Call
    ) -> tuple[list[list[Delta]], AsyncGenerator[list[Delta], None]]:
        attempt = 0
        while True:
            grant = await self._atake_budget()
            batches = (self._provider.transport or self.async_transport).abatches(
                self._provider, call.request
            )
            head: list[list[Delta]] = []
            try:
                async for batch in batches:
                    head.append(batch)
                    if _has_content(batch):
                        break
            except ProviderError as exc:
                self._give_back(grant)
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                await asyncio.sleep(backoff_delay(attempt, exc))
                attempt += 1
                continue
            except BaseException:
                self._give_back(grant)
                raise
            if grant is None:
                return head, batches
            return head, AsyncHeld(batches, self._budget, grant)  # type: ignore[return-value]

    def _take_budget(self) -> Grant | None:
        budget = self._budget
        if budget is None:
            return None
        return budget.acquire(self.timeout) if self._budget_waits else budget.take()

    async def _atake_budget(self) -> Grant | None:
        budget = self._budget
        if budget is None:
            return None
        return await budget.aacquire(self.timeout) if self._budget_waits else budget.take()

    def _give_back(self, grant: Grant | None) -> None:
        if grant is not None and self._budget is not None:
            self._budget.release(grant)

    # -- BaseChatModel --------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, True, kwargs)
        answer = _Answer(self._provider.name, call, stream=True)
        head, rest = self._open(call)
        try:
            for batch in chain(head, rest):
                for chunk in answer.chunks(batch):
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
                if answer.stopped:
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
        call = self._prepare(messages, stop, True, kwargs)
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
            if not answer.stopped:
                async for batch in rest:
                    for chunk in answer.chunks(batch):
                        if run_manager:
                            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
                    if answer.stopped:
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
        call = self._prepare(messages, stop, False, kwargs)
        answer = _Answer(self._provider.name, call, stream=False)
        head, rest = self._open(call)
        try:
            for batch in chain(head, rest):
                answer.collect(batch)
                if answer.stopped:
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
        call = self._prepare(messages, stop, False, kwargs)
        answer = _Answer(self._provider.name, call, stream=False)
        head, rest = await self._aopen(call)
        try:
            for batch in head:
                answer.collect(batch)
            if not answer.stopped:
                async for batch in rest:
                    answer.collect(batch)
                    if answer.stopped:
                        break
        finally:
            await rest.aclose()
        return ChatResult(generations=[ChatGeneration(message=answer.message())])
