"""Mishalsgpt: a ChatGPT-Next-Web deployment proxying the OpenAI API."""

from langchain_g4f.profiles import TEXT_ONLY, context_windows
from langchain_g4f.providers.openai import OpenAIProtocol

__all__ = ["Mishalsgpt"]


class Mishalsgpt(OpenAIProtocol):
    """The seed Mishalsgpt provider."""

    name = "Mishalsgpt"
    url = "https://mishalsgpt.vercel.app"
    path = "/api/openai/v1/chat/completions"
    model = ["gpt-3.5-turbo-16k-0613", "gpt-3.5-turbo"]
    profile = TEXT_ONLY
    model_profiles = context_windows(model)
    payload_defaults = {"temperature": 0.7}
