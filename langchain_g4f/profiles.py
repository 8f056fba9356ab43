"""Model profiles: what a provider can do, and what a request needs.

A provider declares a LangChain :class:`~langchain_core.language_models.ModelProfile`
(``Provider.profile``, per-model entries in ``Provider.model_profiles``);
:func:`chat_profile` adds what the package itself provides on every provider
(tool calling and structured output, emulated where the endpoint has no native
support). :func:`union` describes a router: a capability is present when any
candidate has it, and ``max_input_tokens`` is the largest window.

A request's needs (:func:`needs`) are its image inputs and its size, estimated
before sending by :func:`estimate_tokens`: for each message, its text
(string content, text blocks, tool calls' names and arguments) in characters
divided by 4 and rounded up, plus 4 tokens of per-message overhead; each image
counts :data:`IMAGE_TOKENS`. The estimate is deliberately simple (no tokenizer
is downloaded) and errs on the generous side for English text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import ModelProfile
from langchain_core.messages import AIMessage, BaseMessage

from langchain_g4f.content import is_image, is_reasoning
from langchain_g4f.errors import ConfigurationError

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "PACKAGE_CAPABILITIES",
    "TEXT_ONLY",
    "Needs",
    "chat_profile",
    "check_profile",
    "context_windows",
    "estimate_tokens",
    "needs",
    "union",
]

#: Tokens added per message (role and separators).
MESSAGE_OVERHEAD = 4
#: Tokens counted per image (OpenAI's low-detail figure).
IMAGE_TOKENS = 85
#: What ChatG4F adds on every provider: tool calling and structured output,
#: native where the endpoint has them, emulated by instruction elsewhere.
PACKAGE_CAPABILITIES: ModelProfile = {
    "tool_calling": True,
    "tool_choice": True,
    "tool_call_streaming": True,
    "structured_output": True,
}
#: The built-in providers' profile: text in, text out, no reasoning.
TEXT_ONLY: ModelProfile = {
    "text_inputs": True,
    "text_outputs": True,
    "image_inputs": False,
    "image_url_inputs": False,
    "audio_inputs": False,
    "pdf_inputs": False,
    "video_inputs": False,
    "reasoning_output": False,
}
#: Context windows of the models the built-in providers serve.
_CONTEXT_WINDOWS = {
    "gpt-4": 8192,
    "gpt-3.5-turbo": 4096,
    "gpt-3.5-turbo-0613": 4096,
    "gpt-3.5-turbo-16k": 16385,
    "gpt-3.5-turbo-16k-0613": 16385,
}


def context_windows(models: Iterable[str]) -> dict[str, ModelProfile]:
    """``model_profiles`` entries with each model's ``max_input_tokens``."""
    return {model: {"max_input_tokens": _CONTEXT_WINDOWS[model]} for model in models}


def check_profile(profile: Any, provider: str | None = None) -> ModelProfile:
    """Raise a :class:`ConfigurationError` unless ``profile`` is a usable profile."""
    if not isinstance(profile, dict):
        msg = f"profile must be a dict, not {type(profile).__name__}"
        raise ConfigurationError(msg, provider=provider)
    window = profile.get("max_input_tokens")
    if window is not None and (type(window) is not int or window < 1):
        msg = f"profile max_input_tokens must be a positive integer, not {window!r}"
        raise ConfigurationError(msg, provider=provider)
    for key in ("image_inputs", "reasoning_output", "tool_calling", "structured_output"):
        if key in profile and not isinstance(profile[key], bool):
            msg = f"profile {key} must be True or False, not {profile[key]!r}"
            raise ConfigurationError(msg, provider=provider)
    return profile  # type: ignore[return-value]


def chat_profile(provider: Any, model: str | None) -> ModelProfile:
    """``ChatG4F``'s profile: the package's capabilities, then the provider's own."""
    return {**PACKAGE_CAPABILITIES, **provider.profile_for(model)}


def union(profiles: Sequence[ModelProfile]) -> ModelProfile:
    """A router's profile: each capability any candidate has; the largest window."""
    out: dict[str, Any] = {}
    for profile in profiles:
        for key, value in profile.items():
            if isinstance(value, bool):
                out[key] = out.get(key, False) or value
            elif key in ("max_input_tokens", "max_output_tokens") and isinstance(value, int):
                out[key] = max(out.get(key, 0), value)
    if any("max_input_tokens" not in p for p in profiles):
        out.pop("max_input_tokens", None)  # a candidate with no known limit
    return out  # type: ignore[return-value]


# --- what a request needs ---------------------------------------------------------


@dataclass(frozen=True)
class Needs:
    """What a request asks of a provider."""

    images: bool
    tokens: int

    def missing(self, profile: ModelProfile) -> str | None:
        """The capability ``profile`` lacks for this request, or ``None``."""
        if self.images and not profile.get("image_inputs"):
            return "image input"
        window = profile.get("max_input_tokens")
        if window is not None and self.tokens > window:
            return f"a context window of at least {self.tokens} tokens"
        return None


def needs(messages: Sequence[BaseMessage]) -> Needs:
    """What ``messages`` ask of a provider: image input, and their estimated size."""
    images = any(
        is_image(block)
        for message in messages
        if isinstance(message.content, list)
        for block in message.content
    )
    return Needs(images, estimate_tokens(messages))


def estimate_tokens(messages: Sequence[BaseMessage]) -> int:
    """The input's size in tokens, estimated as the module docstring says."""
    total = 0
    for message in messages:
        chars, images = _size(message)
        total += math.ceil(chars / 4) + MESSAGE_OVERHEAD + images * IMAGE_TOKENS
    return total


def _size(message: BaseMessage) -> tuple[int, int]:
    """Characters of text and number of images in one message."""
    content = message.content
    chars, images = 0, 0
    for block in [content] if isinstance(content, str) else content:
        if isinstance(block, str):
            chars += len(block)
        elif is_image(block):
            images += 1
        elif isinstance(block, dict) and block.get("type") == "text":
            chars += len(str(block.get("text", "")))
        elif isinstance(block, dict) and not is_reasoning(block):
            chars += len(json.dumps(block, ensure_ascii=False))
    if isinstance(message, AIMessage):
        for call in message.tool_calls:
            chars += len(call["name"]) + len(json.dumps(call["args"], ensure_ascii=False))
    return chars, images
