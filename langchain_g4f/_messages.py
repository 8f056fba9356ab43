"""What ``ChatG4F`` and the router share about a call's input: messages, stops, params.

- :func:`convert_messages`: LangChain messages as OpenAI-style wire messages.
- :func:`stop_list` and :class:`StopScanner`: the call's stop sequences, and
  cutting streamed text at them.
- :func:`ls_params`: LangSmith's params of a call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from langchain_core.language_models import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_g4f import content as blocks
from langchain_g4f import tools as tool_calling
from langchain_g4f.errors import ConfigurationError
from langchain_g4f.providers.base import Message

__all__ = ["StopScanner", "convert_messages", "ls_params", "stop_list"]

#: Content blocks that restate ``AIMessage.tool_calls``; sent as tool calls instead.
_TOOL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call", "server_tool_call"})


# --- messages --------------------------------------------------------------


def _parts(message: BaseMessage, provider: str, *, images: bool) -> list[dict[str, Any]]:
    """A message's content as OpenAI ``text`` and ``image_url`` parts.

    Reasoning blocks of earlier answers are left out; image blocks become
    ``image_url`` parts for providers that take images, in human messages only,
    and are a :class:`ConfigurationError` elsewhere (see :mod:`langchain_g4f.content`).
    """
    content = message.content
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append({"type": "text", "text": block})
        elif blocks.block_type(block) == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif blocks.is_reasoning(block):
            blocks.check_reasoning(block, provider)
        elif blocks.is_image(block):
            _check_image_allowed(message, block, provider, images=images)
            parts.append(blocks.image_part(block, provider))
        elif blocks.block_type(block) in _TOOL_BLOCKS and isinstance(message, AIMessage):
            continue
        elif isinstance(message, ToolMessage) and isinstance(block, dict):
            parts.append({"type": "text", "text": json.dumps(block, ensure_ascii=False)})
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            msg = f"accepts text only; the message has a {kind!r} content block"
            raise ConfigurationError(msg, provider=provider)
    return parts


def _text(parts: list[dict[str, Any]]) -> str:
    return "".join(part["text"] for part in parts if part["type"] == "text")


def _check_image_allowed(
    message: BaseMessage, block: dict[str, Any], provider: str, *, images: bool
) -> None:
    if not images:
        msg = (
            "does not take image input (its profile has no image_inputs); "
            f"the message has a {block['type']!r} content block"
        )
        raise ConfigurationError(msg, provider=provider)
    if not isinstance(message, HumanMessage):
        msg = (
            f"takes images in human messages only; a {message.type!r} message "
            f"has a {block['type']!r} content block"
        )
        raise ConfigurationError(msg, provider=provider)


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
    With ``images``, a human message with image blocks goes out as a list of
    OpenAI ``text`` and ``image_url`` parts; every other content is text.
    """
    out: list[Message] = []
    calls: dict[str, tuple[str, int]] = {}  # tool call id -> (name, 1-based position)
    for message in messages:
        parts = _parts(message, provider, images=images)
        content = _text(parts)  # image parts come in human messages only
        if isinstance(message, HumanMessage):
            has_images = any(part["type"] == "image_url" for part in parts)
            item: Message = {"role": "user", "content": parts if has_images else content}
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


# --- stops and params --------------------------------------------------------


def stop_list(stop: list[str] | None, default: list[str] | str | None) -> list[str] | None:
    """The call's stop sequences, else the model's, as a list (``None``: none)."""
    stops = stop if stop is not None else default
    if isinstance(stops, str):
        return [stops]
    return list(stops) if stops else None


class _CallDefaults(Protocol):
    """The model fields :func:`ls_params` reads (``ChatG4F`` and the router have them)."""

    @property
    def model_name(self) -> str | None: ...
    @property
    def temperature(self) -> float | None: ...
    @property
    def max_tokens(self) -> int | None: ...
    @property
    def stop(self) -> list[str] | str | None: ...


def ls_params(
    model: _CallDefaults, stop: list[str] | None, kwargs: dict[str, Any]
) -> LangSmithParams:
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
        """The part of ``text`` (after what was held) that is safe to emit now."""
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
        """The text held back, at the end of the answer (none once stopped)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
