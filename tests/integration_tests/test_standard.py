"""langchain-tests' standard integration tests for ChatG4F, replayed from cassettes.

Each seed protocol family runs the suite: Lockchat (always an event stream),
Mishalsgpt (a JSON object, or events when streaming) and Aichat (one flattened
prompt, no streaming), all with emulated tool calling; and a generic
OpenAI-compatible endpoint with native tool calling. Recorded against the local
replica.
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_g4f import ChatG4F
from tests.conftest import base_url, openai_compatible

pytestmark = pytest.mark.vcr


class _G4FIntegration(ChatModelIntegrationTests):
    provider = ""
    model_id = ""
    other_model = ""

    @property
    def chat_model_class(self) -> type[ChatG4F]:
        return ChatG4F

    @property
    def chat_model_params(self) -> dict:
        return {
            "provider": self.provider,
            "model": self.model_id,
            "base_url": base_url(self.provider),
        }

    @property
    def model_override_value(self) -> str | None:
        return self.other_model or None

    @property
    def enable_vcr_tests(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        # None of the seed protocols reports usage while streaming.
        return False

    # has_tool_calling and has_structured_output are on because ChatG4F overrides
    # bind_tools and with_structured_output.
    @property
    def supports_json_mode(self) -> bool:
        return True


class TestLockchat(_G4FIntegration):
    provider, model_id, other_model = "Lockchat", "gpt-4", "gpt-3.5-turbo"


class TestMishalsgpt(_G4FIntegration):
    provider, model_id, other_model = "Mishalsgpt", "gpt-3.5-turbo", "gpt-3.5-turbo-16k-0613"


class TestAichat(_G4FIntegration):
    provider, model_id = "Aichat", "gpt-3.5-turbo"


class TestOpenAICompatible(_G4FIntegration):
    """Native tools: the ``tools`` field out, ``tool_calls`` back."""

    model_id = "gpt-4o-mini"

    @property
    def chat_model_params(self) -> dict:
        return {"provider": openai_compatible(), "model": self.model_id}

    @property
    def returns_usage_metadata(self) -> bool:
        # OpenAI-compatible endpoints send usage (streaming: stream_options.include_usage).
        return True
