"""After an answer's finish reason, only usage may follow: later text is not the answer."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from langchain_g4f import ChatG4F, providers
from langchain_g4f.providers import OpenAICompatible, Provider
from langchain_g4f.providers.base import Delta

OPENAI_STYLE = ["Mishalsgpt", "Gravityengine", "Lockchat", "OpenAI"]


def event(delta: dict[str, object], finish: str | None = None, **extra: object) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"choices": [choice], **extra}).encode() + b"\n\n"


USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
BODY = b"".join(
    [
        event({"content": "Hello"}),
        event({"content": " \u2713"}, "stop"),
        event({"content": " AFTER-FINISH"}),
        event({"reasoning_content": "more thoughts"}),
        event({"content": "!"}, "stop"),
        b'data: {"choices": [], "usage": ' + json.dumps(USAGE).encode() + b"}\n\n",
        b"data: [DONE]\n\n",
    ]
)


def provider_named(name: str) -> Provider:
    if name == "OpenAI":
        return OpenAICompatible("OpenAI", "https://example.test/v1")
    return type(providers.get(name))()  # an instance of this test's own


def parse(provider: Provider, body: bytes, cut: int) -> list[Delta]:
    parser = provider.stream_parser()
    return [*parser.feed(body[:cut]), *parser.feed(body[cut:]), *parser.close()]


@pytest.mark.parametrize("name", OPENAI_STYLE)
@pytest.mark.parametrize("cut", [0, 7, len(BODY) // 2, len(BODY)])
def test_text_after_the_finish_reason_is_dropped_and_usage_kept(name: str, cut: int) -> None:
    deltas = parse(provider_named(name), BODY, cut)
    assert "".join(d.text for d in deltas) == "Hello \u2713"
    assert "".join(d.reasoning for d in deltas) == ""
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert [d.usage for d in deltas if d.usage] == [
        {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    ]


def test_what_is_dropped_is_logged_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="langchain_g4f.providers.openai")
    parse(providers.get("Lockchat"), BODY, len(BODY))
    dropped = [r.getMessage() for r in caplog.records if "after the finish reason" in r.message]
    assert len(dropped) == 3
    assert "AFTER-FINISH" in dropped[0]
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


class _Body:
    """A transport that answers every call with one fixed event stream."""

    def __init__(self, provider: Provider, body: bytes) -> None:
        self.provider, self.body = provider, body

    def batches(self, provider: Provider, request: object) -> Iterator[list[Delta]]:
        parser = provider.stream_parser()
        return iter([[*parser.feed(self.body), *parser.close()]])

    async def abatches(self, provider: Provider, request: object) -> AsyncIterator[list[Delta]]:
        for batch in self.batches(provider, request):
            yield batch


@pytest.mark.parametrize("name", OPENAI_STYLE)
async def test_the_chat_model_answers_without_the_trailing_text(name: str) -> None:
    provider = provider_named(name)
    provider.transport = _Body(provider, BODY)
    llm = ChatG4F(provider=provider, model=provider.model[0] if provider.model else "m")
    assert llm.invoke("hi").content == "Hello \u2713"
    chunks = [c async for c in llm.astream("hi")]
    assert "".join(c.content for c in chunks) == "Hello \u2713"
    assert [c.response_metadata["finish_reason"] for c in chunks if c.response_metadata] == ["stop"]
