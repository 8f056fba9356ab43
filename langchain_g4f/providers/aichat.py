"""Aichat: one flattened prompt in, ``{"response": bool, "message": str}`` out.

The conversation is flattened to one line per message, ``role: content`` with
the role exactly as given (``user``, ``assistant``, ``system``, or a
``ChatMessage``'s own role, case kept), followed by a final line ``assistant:``.
Requests carry the browser headers of the original module, in its order, with
its macOS Chrome 113 user agent. Aichat cannot stream: a streaming call gets the
whole answer as one chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_g4f.errors import MalformedResponseError, ProviderResponseError
from langchain_g4f.profiles import TEXT_ONLY, context_windows
from langchain_g4f.providers.base import Delta, Message, Provider, load_json

__all__ = ["Aichat"]


def _flatten(messages: Sequence[Message]) -> str:
    """``role: content`` lines (the role as given) and a final ``assistant:`` line."""
    lines = [f"{m['role']}: {m.get('content') or ''}" for m in messages]
    lines.append("assistant:")
    return "\n".join(lines)


class Aichat(Provider):
    """The seed Aichat provider: a flattened prompt, a JSON answer, no streaming."""

    name = "Aichat"
    url = "https://chat-gpt.org"
    path = "/api/text"
    model = ["gpt-3.5-turbo"]
    profile = TEXT_ONLY
    model_profiles = context_windows(model)
    supports_stream = False
    #: The original module's headers, in its order.
    headers = {
        "authority": "chat-gpt.org",
        "accept": "*/*",
        "cache-control": "no-cache",
        "content-type": "application/json",
        "origin": "https://chat-gpt.org",
        "pragma": "no-cache",
        "referer": "https://chat-gpt.org/chat",
        "sec-ch-ua-mobile": "?0",
        "sec-ch-ua-platform": '"macOS"',
        "sec-fetch-dest": "empty",
        "sec-fetch-mode": "cors",
        "sec-fetch-site": "same-origin",
        "user-agent": (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/113.0.0.0 Safari/537.36"
        ),
    }

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
        """The flattened prompt, with the seed module's sampling fields."""
        return {
            "message": _flatten(messages),
            "temperature": 1 if temperature is None else temperature,
            "presence_penalty": 0,
            "top_p": 1,
            "frequency_penalty": 0,
        }

    def parse_body(self, data: bytes) -> list[Delta]:
        """The ``message`` of a ``{"response": true, ...}`` answer."""
        obj = load_json(self.name, data)
        if not isinstance(obj, dict) or "response" not in obj:
            msg = f"sent JSON without a 'response' field: {data[:120]!r}"
            raise MalformedResponseError(
                msg,
                provider=self.name,
            )
        message = obj.get("message")
        if obj["response"] is not True:
            msg = f"reported a failure: {message!r}"
            raise ProviderResponseError(msg, provider=self.name)
        if not isinstance(message, str):
            msg = f"sent a non-text message: {data[:120]!r}"
            raise MalformedResponseError(msg, provider=self.name)
        return [Delta(text=message, finish_reason="stop")]
