"""Lockchat: an OpenAI-style endpoint over plain HTTP that always streams.

Requests go, as in the seed, to
``http://super.lockchat.app/v1/chat/completions?auth=FnMNPlwZEnGFqvEc9470Vw==``:
that ``auth`` token is a fixed, public part of the protocol, not a user's
secret. Later releases of the service used ``http://supertest.lockchat.app``
with no query: pass ``base_url="http://supertest.lockchat.app"`` for that form.
A ``base_url`` replaces the URL and its query together; one that carries a query
of its own keeps it after the path (``http://h/?auth=X`` is sent to
``http://h/v1/chat/completions?auth=X``).

The body always asks for a stream; a non-streaming call reads the whole event
stream and joins it.
"""

from langchain_g4f.profiles import TEXT_ONLY, context_windows
from langchain_g4f.providers.openai import OpenAIProtocol

__all__ = ["Lockchat"]

#: The seed's public query token (written into the original provider code).
_SEED_QUERY = "auth=FnMNPlwZEnGFqvEc9470Vw=="


class Lockchat(OpenAIProtocol):
    """The seed Lockchat provider, with its public query token."""

    name = "Lockchat"
    url = "http://super.lockchat.app"
    path = "/v1/chat/completions"
    query = _SEED_QUERY
    model = ["gpt-4", "gpt-3.5-turbo"]
    profile = TEXT_ONLY
    model_profiles = context_windows(model)
    payload_defaults = {"temperature": 0.7}
    headers = {
        "Content-Type": "application/json",
        "user-agent": "ChatX/39 CFNetwork/1408.0.4 Darwin/22.5.0",
    }

    def wire_stream(self, *, stream: bool) -> bool:
        """Always: Lockchat's body asks for a stream."""
        return True
