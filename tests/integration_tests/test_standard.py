"""langchain-tests' standard integration tests for ChatG4F, replayed from cassettes.

Each seed protocol family runs the suite: Lockchat (always an event stream),
Mishalsgpt (a JSON object, or events when streaming) and Aichat (one flattened
prompt, no streaming), all with emulated tool calling; a generic
OpenAI-compatible endpoint with native tool calling; and an OpenAI-compatible
multimodal reasoning model (image input, reasoning output). Every capability
flag comes from the tested model's profile. Recorded against the local replica.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import httpx
import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_g4f import ChatG4F
from tests.conftest import base_url, openai_compatible
from tests.profile_flags import ProfileFlags

pytestmark = pytest.mark.vcr


def _png(width: int = 2, height: int = 2) -> bytes:
    """A small, valid RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x80\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(autouse=True)
def _local_test_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard image test downloads a picture first; tests stay off the network,
    so that download gets a PNG made here (the model still gets the picture's URL)."""
    real_get = httpx.get

    def get(url: Any, *args: Any, **kwargs: Any) -> httpx.Response:
        if str(url).startswith("https://raw.githubusercontent.com/") and str(url).endswith(".png"):
            return httpx.Response(200, content=_png(), request=httpx.Request("GET", url))
        return real_get(url, *args, **kwargs)

    monkeypatch.setattr(httpx, "get", get)


class _G4FIntegration(ProfileFlags, ChatModelIntegrationTests):
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

    @property
    def supports_json_mode(self) -> bool:
        return True

    # -- capability flags, from the profile ------------------------------------------

    @property
    def supports_image_inputs(self) -> bool:
        return bool(self.profile.get("image_inputs"))

    @property
    def supports_image_urls(self) -> bool:
        return bool(self.profile.get("image_url_inputs"))

    @property
    def supports_image_tool_message(self) -> bool:
        return bool(self.profile.get("image_tool_message"))

    @property
    def supports_pdf_inputs(self) -> bool:
        return bool(self.profile.get("pdf_inputs"))

    @property
    def supports_pdf_tool_message(self) -> bool:
        return bool(self.profile.get("pdf_tool_message"))

    @property
    def supports_audio_inputs(self) -> bool:
        return bool(self.profile.get("audio_inputs"))


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


class TestOpenAICompatibleMultimodalReasoning(TestOpenAICompatible):
    """Image input (base64 and URLs) and reasoning output: ``reasoning_content``
    fields from one model, a ``<think>`` section from the other."""

    model_id, other_model = "deepseek-reasoner", "deepseek-r1"

    @property
    def chat_model_params(self) -> dict:
        profile = {"image_inputs": True, "image_url_inputs": True, "reasoning_output": True}
        return {"provider": openai_compatible(profile=profile), "model": self.model_id}
