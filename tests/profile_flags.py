"""The standard suites' capability flags, read from the tested model's profile."""

from __future__ import annotations

from langchain_core.language_models import ModelProfile


class ProfileFlags:
    """Mixed into a standard test class before the suite, so the flags win."""

    chat_model_class: type
    chat_model_params: dict

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
