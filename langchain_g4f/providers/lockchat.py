"""Lockchat: an OpenAI-style endpoint over plain HTTP that always streams.

The body always asks for a stream; a non-streaming call reads the whole event
stream and joins it. The service later moved to ``http://supertest.lockchat.app``.
"""

from langchain_g4f.profiles import TEXT_ONLY, context_windows
from langchain_g4f.providers.openai import OpenAIProtocol


class Lockchat(OpenAIProtocol):
    name = "Lockchat"
    url = "http://super.lockchat.app"
    path = "/v1/chat/completions"
    model = ["gpt-4", "gpt-3.5-turbo"]
    profile = TEXT_ONLY
    model_profiles = context_windows(model)
    payload_defaults = {"temperature": 0.7}
    headers = {
        "Content-Type": "application/json",
        "user-agent": "ChatX/39 CFNetwork/1408.0.4 Darwin/22.5.0",
    }

    def wire_stream(self, stream: bool) -> bool:
        return True
