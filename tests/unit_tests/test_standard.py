"""langchain-tests' standard unit tests for ChatG4F."""

from __future__ import annotations

from langchain_core.language_models import ModelProfile
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_g4f import ChatG4F


class TestChatG4FUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatG4F]:
        return ChatG4F

    @property
    def chat_model_params(self) -> dict:
        return {"provider": "Lockchat", "model": "gpt-4"}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            # A key named for the provider (G4F_API_KEY goes only to providers
            # that need a key, and Lockchat is plain HTTP).
            {"G4F_GRAVITYENGINE_API_KEY": "env-key"},
            {"provider": "Gravityengine"},
            {"api_key": "env-key"},
        )

    # Capability flags, from the model's profile.
    @property
    def profile(self) -> ModelProfile:
        profile = self.chat_model_class(**self.chat_model_params).profile
        assert profile is not None
        return profile

    @property
    def has_tool_calling(self) -> bool:
        return bool(self.profile.get("tool_calling"))

    @property
    def has_tool_choice(self) -> bool:
        return bool(self.profile.get("tool_choice"))

    @property
    def has_structured_output(self) -> bool:
        return bool(self.profile.get("structured_output"))
