"""The OpenAI chat-completions protocol, written once.

Mishalsgpt, Gravityengine and Lockchat speak it, and so does every
OpenAI-compatible server (Ollama, vLLM, llama.cpp, LM Studio, g4f's own API):
a JSON body in, either one ``chat.completion`` object or server-sent events of
``chat.completion.chunk`` objects out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import ModelProfile

from langchain_g4f.errors import MalformedResponseError, ProviderResponseError
from langchain_g4f.profiles import check_profile
from langchain_g4f.providers import catalog
from langchain_g4f.providers.base import (
    BOM,
    Delta,
    Message,
    Provider,
    check_http_url,
    error_message,
    html_error,
    load_json,
    loads,
    looks_like_html,
)

__all__ = ["OpenAICompatible", "OpenAIProtocol", "SSEParser", "parse_completion"]

_log = logging.getLogger(__name__)

#: How many stray (non-event) lines are kept to explain a stream with no events.
_STRAY_LINES = 8


def _convert_usage(usage: Any) -> dict[str, int] | None:
    """OpenAI usage -> LangChain usage, only when the figures are real integers."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if type(prompt) is not int or type(completion) is not int:
        return None
    total = usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": total if type(total) is int else prompt + completion,
    }


def _raise_error_object(provider: str, obj: dict[str, Any]) -> None:
    """Raise :class:`ProviderResponseError` if ``obj`` carries an ``error``."""
    error = obj.get("error")
    if error:
        code = error.get("code") or error.get("type") if isinstance(error, dict) else None
        msg = f"reported an error: {error_message(error)}"
        raise ProviderResponseError(
            msg,
            provider=provider,
            code=code if isinstance(code, (str, int)) else None,
        )


def _optional(value: Any, kind: type | tuple[type, ...]) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _valid_tool_call(call: Any, arguments: type | tuple[type, ...]) -> bool:
    """Whether one OpenAI tool-call fragment has the fields' declared types."""
    if not isinstance(call, dict):
        return False
    function = call.get("function")
    if not _optional(function, dict):
        return False
    return (
        _optional(call.get("index"), int)
        and _optional(call.get("id"), str)
        and _optional(call.get("type"), str)
        and (
            function is None
            or (
                _optional(function.get("name"), str)
                and _optional(function.get("arguments"), arguments)
            )
        )
    )


def _checked_tool_calls(
    provider: str, value: Any, *, whole: bool = False
) -> list[dict[str, Any]] | None:
    """``tool_calls`` as sent, once every fragment is checked; ``None`` for none.

    Streamed fragments carry ``arguments`` as a string; a whole message may
    also carry them as an object (``whole=True``).
    """
    if value is None or value == []:
        return None
    arguments = (str, dict) if whole else str
    if isinstance(value, list) and all(_valid_tool_call(c, arguments) for c in value):
        return value
    msg = f"sent tool calls of the wrong shape: {_preview(value)}"
    raise MalformedResponseError(msg, provider=provider)


def _preview(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)[:120]
    except (ValueError, RecursionError):
        return type(value).__name__


def _checked_str(provider: str, obj: dict[str, Any], key: str) -> str | None:
    """``obj[key]`` when it is a string or absent; anything else is malformed."""
    value = obj.get(key)
    if value is None or value.__class__ is str:
        return value
    msg = f"sent a {key!r} that is not a string: {_preview(value)}"
    raise MalformedResponseError(msg, provider=provider)


def parse_completion(provider: str, data: bytes) -> list[Delta]:
    """Parse one ``chat.completion`` JSON object."""
    obj = load_json(provider, data)
    if not isinstance(obj, dict):
        msg = f"sent JSON that is not an object: {data[:120]!r}"
        raise MalformedResponseError(msg, provider=provider)
    return _completion_deltas(provider, obj, data)


def _completion_deltas(provider: str, obj: dict[str, Any], data: bytes) -> list[Delta]:
    """The deltas of a parsed ``chat.completion`` object (``data`` is its source)."""
    _raise_error_object(provider, obj)
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        msg = f"sent a completion without choices: {data[:120]!r}"
        raise MalformedResponseError(msg, provider=provider)
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        msg = f"sent a choice without a message: {data[:120]!r}"
        raise MalformedResponseError(msg, provider=provider)
    content = message.get("content")
    return [
        Delta(
            reasoning=_reasoning_of(message),
            text=content if isinstance(content, str) else "",
            finish_reason=_checked_str(provider, choice, "finish_reason"),
            usage=_convert_usage(obj.get("usage")),
            model=_checked_str(provider, obj, "model"),
            tool_calls=_checked_tool_calls(provider, message.get("tool_calls"), whole=True),
        )
    ]


class _LineSplitter:
    """Splits bytes fed in arbitrary slices into lines, in linear time.

    A line ends at LF, CR or CRLF (as the server-sent-events specification
    allows), even when a CRLF pair is split between two slices. The pieces of
    an unfinished line are kept as they came and joined once, when the line
    ends: one very long line arriving in many reads is copied once, not once
    per read. ``copied`` counts the bytes joined so.
    """

    __slots__ = ("_after_cr", "_pieces", "copied")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._after_cr = False
        self.copied = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes, without their line ends."""
        if self._after_cr:
            self._after_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\n" not in data and b"\r" not in data:
            if data:
                self._pieces.append(data)
            return []
        if self._pieces:
            self._pieces.append(data)
            data = b"".join(self._pieces)
            self.copied += len(data)
            self._pieces.clear()
        lines = data.splitlines()
        last = data[-1:]
        if last == b"\r":
            self._after_cr = True
        elif last != b"\n":
            self._pieces.append(lines.pop())
        return lines

    def rest(self) -> bytes:
        """The unfinished last line, once the input has ended."""
        rest = b"".join(self._pieces)
        self._pieces.clear()
        return rest


class SSEParser:
    """Parses an OpenAI server-sent-event stream fed in arbitrary byte slices.

    Each ``data:`` line carries one JSON chunk (``data:`` with or without the
    space); blank lines, comments (``:``) and other fields are skipped; a byte
    order mark before the first line is skipped; ``data: [DONE]`` ends the
    stream, and nothing after it is read. After a ``finish_reason`` only usage
    is taken: text that follows it (free providers append promotions after the
    answer) is dropped, and logged at debug level. Lines are split on bytes and decoded
    as a whole, so a multi-byte character split between two reads arrives
    intact. Lines that are not server-sent events at all (a plain JSON error,
    an HTML page, a bare text line) are never dropped silently: they raise, or,
    if nothing else came, are reported when the body ends.
    """

    __slots__ = ("_finished", "_started", "_stray", "done", "lines", "provider")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.lines = _LineSplitter()
        self._started = False
        #: ``data: [DONE]`` has arrived: the rest of the body is not read.
        self.done = False
        self._finished = False
        self._stray: list[bytes] = []

    def feed(self, data: bytes) -> list[Delta]:
        """The deltas of the events ``data`` completes."""
        if self.done:
            return []
        return self._lines(self.lines.feed(data))

    def close(self) -> list[Delta]:
        """The last event's deltas; raises if the stream ended incomplete."""
        if self.done:
            return []
        out = self._lines([self.lines.rest()])
        if not self.done and not self._finished:
            if self._stray:
                text = b"\n".join(self._stray)[:300].decode("utf-8", "replace")
                msg = f"sent no events, only: {text!r}"
                raise ProviderResponseError(msg, provider=self.provider)
            msg = (
                "the event stream ended before [DONE] or a finish_reason; the answer is incomplete"
            )
            raise MalformedResponseError(
                msg,
                provider=self.provider,
            )
        return out

    def _lines(self, lines: list[bytes]) -> list[Delta]:
        if not self._started and lines:
            self._started = True
            lines[0] = lines[0].removeprefix(BOM)
        out: list[Delta] = []
        for line in lines:
            if line.startswith(b"data:"):
                self._data(line[5:], out)
                if self.done:
                    break
            elif line and not line.startswith(b":"):
                self._other(line, out)
        return out

    def _data(self, payload: bytes, out: list[Delta]) -> None:
        payload = payload.strip()
        if payload == b"[DONE]":
            self.done = True
            return
        if not payload:
            return
        try:
            obj = loads(payload)
        except ValueError:
            msg = f"sent an event that is not valid JSON: {payload[:120]!r}"
            raise MalformedResponseError(
                msg,
                provider=self.provider,
            ) from None
        if isinstance(obj, dict):
            self._chunk(obj, out)
        else:
            msg = f"sent an event that is not a JSON object: {payload[:120]!r}"
            raise MalformedResponseError(
                msg,
                provider=self.provider,
            )

    def _chunk(self, obj: dict[str, Any], out: list[Delta]) -> None:
        if self._finished:
            self._after_finish(obj, out)
            return
        choices = obj.get("choices")
        if choices and isinstance(choices, list):
            choice = choices[0]
            if not isinstance(choice, dict):
                raise self._not_a_chunk(obj)
            delta = choice.get("delta") or choice.get("message") or {}
            if not isinstance(delta, dict):
                raise self._not_a_chunk(obj)
            content = delta.get("content")
            if content is not None and content.__class__ is not str:
                raise self._not_a_chunk(obj)
            finish = choice.get("finish_reason")
            tool_calls = delta.get("tool_calls")
            usage = obj.get("usage")
            reasoning = _reasoning_of(delta)
            if finish is None and usage is None and tool_calls is None and not reasoning:
                # The hot path: one piece of text and nothing else.
                if content:
                    out.append(Delta(content))
                return
            finish = _checked_str(self.provider, choice, "finish_reason")
            if finish:
                self._finished = True
            out.append(
                Delta(
                    reasoning=reasoning,
                    text=content or "",
                    finish_reason=finish,
                    usage=_convert_usage(usage),
                    model=_checked_str(self.provider, obj, "model"),
                    tool_calls=_checked_tool_calls(self.provider, tool_calls),
                )
            )
            return
        _raise_error_object(self.provider, obj)
        usage = _convert_usage(obj.get("usage"))
        if usage is not None:
            out.append(Delta(usage=usage))

    def _after_finish(self, obj: dict[str, Any], out: list[Delta]) -> None:
        """An event after the finish reason: its usage only; anything else is dropped."""
        usage = _convert_usage(obj.get("usage"))
        if usage is not None:
            out.append(Delta(usage=usage))
        if obj.get("choices") or "error" in obj:
            _log.debug(
                "%s: dropped an event after the finish reason: %s", self.provider, _preview(obj)
            )

    def _not_a_chunk(self, obj: Any) -> MalformedResponseError:
        return MalformedResponseError(
            f"sent an event that is not a chat.completion.chunk: {_preview(obj)}",
            provider=self.provider,
        )

    def _other(self, line: bytes, out: list[Delta]) -> None:
        """A line that is not a ``data:`` field."""
        line = line.strip()
        if not line or line.startswith((b"event:", b"id:", b"retry:")):
            return
        if looks_like_html(line):
            raise html_error(self.provider, line)
        if line.startswith(b"{"):
            # A server that ignored "stream": a plain JSON object on the wire.
            try:
                obj = loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                _raise_error_object(self.provider, obj)
                if "choices" in obj:
                    out.extend(_completion_deltas(self.provider, obj, line))
                    self._finished = True
                    return
        if len(self._stray) < _STRAY_LINES:
            self._stray.append(line)


def _reasoning_of(message: dict[str, Any]) -> str:
    """The reasoning text of a message or delta: ``reasoning_content`` or ``reasoning``.

    DeepSeek-style servers send ``reasoning_content``, others (OpenRouter, vLLM)
    ``reasoning``; a value that is not a string is not reasoning text.
    """
    value = message.get("reasoning_content")
    if value is None:
        value = message.get("reasoning")
    return value if isinstance(value, str) else ""


class OpenAIProtocol(Provider):
    """Shared request and response handling of the OpenAI family.

    ``payload_defaults`` are sent in every body unless the caller sets them;
    ``send_stream_false`` says whether a non-streaming body carries
    ``"stream": false`` or leaves the key out (as the seed modules did).
    """

    supports_stream = True
    payload_defaults: dict[str, Any] = {}
    send_stream_false = False
    #: Ask for a final usage event (``stream_options.include_usage``) when streaming.
    stream_usage = False

    def build_payload(
        self,
        model: str,
        messages: Sequence[Message],
        *,
        stream: bool,
        temperature: float | None,
        max_tokens: int | None,
        stop: list[str] | None,
    ) -> dict[str, Any]:
        """The OpenAI chat-completions body."""
        payload: dict[str, Any] = {"model": model, **self.payload_defaults}
        if temperature is not None:
            payload["temperature"] = temperature
        payload["messages"] = list(messages)
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        if stop:
            payload["stop"] = stop
        if stream:
            payload["stream"] = True
            if self.stream_usage:
                payload["stream_options"] = {"include_usage": True}
        elif self.send_stream_false:
            payload["stream"] = False
        return payload

    def parse_body(self, data: bytes) -> list[Delta]:
        """Parse one ``chat.completion`` object."""
        return parse_completion(self.name, data)

    def stream_parser(self) -> SSEParser:
        """A fresh :class:`SSEParser`."""
        return SSEParser(self.name)


class OpenAICompatible(OpenAIProtocol):
    """Any endpoint that speaks the OpenAI chat-completions protocol.

    ``profile`` says what the endpoint can do, as a LangChain model profile
    (``{"image_inputs": True, "reasoning_output": True, "max_input_tokens": 128000}``),
    laid over the default, which claims text only.

    >>> ollama = OpenAICompatible("ollama", "http://localhost:11434/v1")
    >>> groq = OpenAICompatible(
    ...     "groq",
    ...     "https://api.groq.com/openai/v1",
    ...     needs_auth=True,
    ...     native_tools=True,
    ...     api_key_env="GROQ_API_KEY",
    ... )

    ``models`` lists the models it serves; leave it out to pass any model
    through. ``path`` is appended to ``url`` (default ``/chat/completions``, so
    ``url`` is the API root that ends in ``/v1``); a query string in ``url``
    stays after the path. ``api_key_env`` names an environment variable that
    holds its key (``ChatG4F`` reads it, and ``G4F_<NAME>_API_KEY``, when no
    ``api_key`` is passed).
    """

    send_stream_false = True
    stream_usage = True

    def __init__(
        self,
        name: str,
        url: str,
        *,
        path: str = "/chat/completions",
        models: Sequence[str] | None = None,
        needs_auth: bool = False,
        native_tools: bool = False,
        supports_stream: bool = True,
        profile: ModelProfile | None = None,
        headers: dict[str, str] | None = None,
        api_key_env: str | None = None,
    ) -> None:
        super().__init__(check_http_url(url, "url", provider=name))
        self.name = name
        self.api_key_env = api_key_env
        self.path = path
        self.model = list(models or [])
        self.accepts_any_model = models is None
        self.needs_auth = needs_auth
        self.native_tools = native_tools
        self.supports_stream = supports_stream
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        if profile is not None:
            self.profile = {**self.profile, **check_profile(profile, name)}

    @classmethod
    def from_catalog(cls, name: str, /, **overrides: Any) -> OpenAICompatible:
        """The endpoint the catalog knows as ``name`` (see :mod:`langchain_g4f.providers.catalog`).

        Its key is read by ``ChatG4F`` from the entry's own environment variable
        (``$GROQ_API_KEY`` for ``"groq"``) and, like every key from the
        environment, never sent over plain ``http://`` except to this machine.
        The entry's model is served first, and any other model is passed through.
        ``overrides`` are this class's keyword arguments (``url=`` for a
        stand-in server, ``models=``, ``headers=``...).

        >>> OpenAICompatible.from_catalog("groq").api_key_env
        'GROQ_API_KEY'
        """
        found = catalog.entry(name)
        options: dict[str, Any] = {
            "name": found.name,
            "url": found.base_url,
            "needs_auth": not found.keyless,
            "api_key_env": found.key_variable(),
            **overrides,
        }
        provider = cls(**options)
        if "models" not in overrides and found.model is not None:
            provider.model = [found.model]  # the default, while any model passes through
        return provider
