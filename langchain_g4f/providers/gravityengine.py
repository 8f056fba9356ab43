"""Gravityengine: a ChatGPT-Next-Web deployment proxying the OpenAI API.

The service later moved to ``https://gpt4.xunika.uk``; pass that (or any other
deployment) as ``base_url``. Later forks wanted ``Authorization: Bearer``: pass
``api_key`` and it is sent that way.
"""

from langchain_g4f.profiles import TEXT_ONLY, context_windows
from langchain_g4f.providers.openai import OpenAIProtocol

__all__ = ["Gravityengine"]


class Gravityengine(OpenAIProtocol):
    """The seed Gravityengine provider."""

    name = "Gravityengine"
    url = "https://gpt4.gravityengine.cc"
    path = "/api/openai/v1/chat/completions"
    model = ["gpt-3.5-turbo-16k", "gpt-3.5-turbo-0613"]
    profile = TEXT_ONLY
    model_profiles = context_windows(model)
    payload_defaults = {"temperature": 0.7, "presence_penalty": 0}
