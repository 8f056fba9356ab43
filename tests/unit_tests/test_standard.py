"""langchain-tests' standard unit tests for ChatG4F."""

from __future__ import annotations

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_g4f import ChatG4F
from tests.profile_flags import ProfileFlags


class TestChatG4FUnit(ProfileFlags, ChatModelUnitTests):
    """Capability flags come from the model's profile (:class:`ProfileFlags`)."""

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
