"""Providers users bring: one written from scratch, and an OpenAI-compatible endpoint,
routed next to the built-in providers.

``LineChat`` is the example from the README: a made-up protocol that answers one
JSON object, or newline-delimited JSON objects when streaming. The test serves
it from a small server on 127.0.0.1; the built-in and OpenAI-compatible providers
talk to the replica.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from langchain_g4f import ChatG4F, ChatG4FRouter, providers
from langchain_g4f.errors import ConfigurationError, MalformedResponseError
from langchain_g4f.providers import Delta, OpenAICompatible, Provider
from langchain_g4f.testing import Replica, reply_for

pytestmark = pytest.mark.loopback


# --- the README's example provider ------------------------------------------------


class NDJSONParser:
    """Newline-delimited JSON objects, each ``{"text": ...}``."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.buffer = b""

    def feed(self, data: bytes) -> list[Delta]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [self._delta(line) for line in lines if line.strip()]

    def close(self) -> list[Delta]:
        rest, self.buffer = self.buffer, b""
        return [self._delta(rest)] if rest.strip() else []

    def _delta(self, line: bytes) -> Delta:
        try:
            return Delta(text=json.loads(line)["text"])
        except (ValueError, KeyError, TypeError):
            msg = f"bad line {line[:80]!r}"
            raise MalformedResponseError(msg, provider=self.provider) from None


class LineChat(Provider):
    name = "LineChat"
    url = "http://localhost:8080"
    path = "/chat"
    model = ["line-1", "line-2"]
    supports_stream = True

    def build_payload(
        self,
        model: str,
        messages: Sequence[dict[str, Any]],
        *,
        stream: bool,
        temperature: float | None,
        max_tokens: int | None,
        stop: list[str] | None,
    ) -> dict[str, Any]:
        return {"model": model, "messages": list(messages), "stream": stream}

    def parse_body(self, data: bytes) -> list[Delta]:
        return [Delta(text=json.loads(data)["text"], finish_reason="stop")]

    def stream_parser(self) -> NDJSONParser:
        return NDJSONParser(self.name)


# --- a LineChat server ---------------------------------------------------------------


class LineChatServer(ThreadingHTTPServer):
    daemon_threads = True
    failing = False
    bodies: list[dict[str, Any]]


class _Handler(BaseHTTPRequestHandler):
    server: LineChatServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        if self.server.failing:
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        words = ("line-chat says: " + body["messages"][-1]["content"]).split(" ")
        if body["stream"]:
            lines = b"".join(
                json.dumps({"text": w + (" " if i < len(words) - 1 else "")}).encode() + b"\n"
                for i, w in enumerate(words)
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/x-ndjson")
        else:
            lines = json.dumps({"text": " ".join(words)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(lines)))
        self.end_headers()
        self.wfile.write(lines)


@pytest.fixture
def line_chat() -> Iterator[LineChatServer]:
    server = LineChatServer(("127.0.0.1", 0), _Handler)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provider = providers.register(LineChat(url=f"http://127.0.0.1:{server.server_address[1]}"))
    try:
        yield server
    finally:
        providers.unregister(provider.name)
        server.shutdown()
        server.server_close()


@pytest.fixture
def redirected(replica: Replica) -> Iterator[Replica]:
    replica.reset()
    with replica.redirect_providers():
        yield replica


def local_endpoint(replica: Replica) -> OpenAICompatible:
    """Stands in for Ollama, vLLM, llama.cpp or LM Studio: any model, no key."""
    return OpenAICompatible("local", replica.base_url("openai") + "/v1")


# --- tests ----------------------------------------------------------------------------


def test_a_registered_provider_works_by_name(line_chat: LineChatServer) -> None:
    llm = ChatG4F(provider="LineChat")
    assert llm.model_name == "line-1"
    assert llm.invoke("hi").content == "line-chat says: hi"
    chunks = [c.content for c in llm.stream("one two three") if c.content]
    assert chunks == ["line-chat ", "says: ", "one ", "two ", "three"]
    assert [b["stream"] for b in line_chat.bodies] == [False, True]
    assert line_chat.bodies[0]["messages"] == [{"role": "user", "content": "hi"}]
    assert "LineChat" in providers.names()


async def test_a_registered_provider_streams_async(line_chat: LineChatServer) -> None:
    llm = ChatG4F(provider="LineChat", model="line-2")
    text = "".join([c.content async for c in llm.astream("async words")])  # type: ignore[misc]
    assert text == "line-chat says: async words"
    assert line_chat.bodies[-1]["model"] == "line-2"


def test_a_registered_provider_checks_its_models_before_any_request(
    line_chat: LineChatServer,
) -> None:
    with pytest.raises(ConfigurationError, match=r"LineChat.*does not serve model 'gpt-4'"):
        ChatG4F(provider="LineChat", model="gpt-4")
    assert line_chat.bodies == []


def test_registering_a_taken_name_needs_replace() -> None:
    with pytest.raises(ValueError, match="already registered"):
        providers.register(OpenAICompatible("Lockchat", "http://127.0.0.1:9/v1"))


def test_router_over_builtin_custom_and_openai_compatible(
    line_chat: LineChatServer, redirected: Replica
) -> None:
    router = ChatG4FRouter(
        providers=[
            "LineChat",
            ChatG4F(provider=local_endpoint(redirected), model="llama3"),
            "Lockchat",
        ],
        strategy="priority",
        max_retries=0,
    )
    assert router.provider_names == ["LineChat", "local", "Lockchat"]
    message = router.invoke("Hi")
    assert message.content == "line-chat says: Hi"
    assert message.response_metadata["provider"] == "LineChat"

    line_chat.failing = True  # the custom provider fails: the local endpoint answers
    message = router.invoke("Hi")
    assert message.content == reply_for([{"role": "user", "content": "Hi"}])
    assert message.response_metadata["provider"] == "local"
    assert [a["provider"] for a in message.response_metadata["attempts"]] == ["LineChat"]
    assert redirected.requests[-1]["json"]["model"] == "llama3"

    redirected.set_fault("openai", "http_503")  # both fail: the built-in Lockchat answers
    chunks = [c.content for c in router.stream("Hi") if c.content]
    assert "".join(chunks) == reply_for([{"role": "user", "content": "Hi"}])
    assert len(chunks) > 1
    assert redirected.requests[-1]["provider"] == "lockchat"


def test_router_model_routes_across_custom_and_builtin(
    line_chat: LineChatServer, redirected: Replica
) -> None:
    router = ChatG4FRouter(
        providers=["LineChat", "Lockchat", ChatG4F(provider=local_endpoint(redirected), model="x")],
        strategy="priority",
    )
    assert router.invoke("Hi", model="gpt-4").response_metadata["provider"] == "Lockchat"
    assert router.invoke("Hi", model="line-2").response_metadata["provider"] == "LineChat"
    assert line_chat.bodies[-1]["model"] == "line-2"
    # only the endpoint that takes any model serves an unknown one
    assert router.invoke("Hi", model="qwen2.5").response_metadata["provider"] == "local"
    assert redirected.requests[-1]["json"]["model"] == "qwen2.5"


# --- a provider with its own transport of plain iterators ------------------------------


class _PlainBatches:
    """An async iterator that is not a generator: no ``aclose``."""

    def __init__(self, batches: list[list[Delta]]) -> None:
        self.batches = iter(batches)

    def __aiter__(self) -> _PlainBatches:
        return self

    async def __anext__(self) -> list[Delta]:
        try:
            return next(self.batches)
        except StopIteration:
            raise StopAsyncIteration from None


class PlainTransport:
    """A transport whose ``batches``/``abatches`` return plain iterators (no close)."""

    answer = (
        [Delta(text="Hello ")],
        [Delta(text="plain world", finish_reason="stop")],
    )

    def batches(self, provider: Provider, request: Any) -> Iterator[list[Delta]]:
        return iter(list(self.answer))

    def abatches(self, provider: Provider, request: Any) -> _PlainBatches:
        return _PlainBatches(list(self.answer))


class PlainIO(LineChat):
    name = "PlainIO"
    transport = PlainTransport()


@pytest.mark.parametrize("limits", [{}, {"max_concurrent": 1}], ids=["no-budget", "budget"])
def test_a_transport_of_plain_iterators_works_sync(limits: dict[str, int]) -> None:
    llm = ChatG4F(provider=PlainIO(), timeout=1, **limits)
    for _ in range(2):  # with a budget, the first call gave its grant back
        assert llm.invoke("hi").content == "Hello plain world"
        chunks = [c.content for c in llm.stream("hi") if c.content]
        assert chunks == ["Hello ", "plain world"]


@pytest.mark.parametrize("limits", [{}, {"max_concurrent": 1}], ids=["no-budget", "budget"])
async def test_a_transport_of_plain_iterators_works_async(limits: dict[str, int]) -> None:
    llm = ChatG4F(provider=PlainIO(), timeout=1, **limits)
    for _ in range(2):
        assert (await llm.ainvoke("hi")).content == "Hello plain world"
        chunks = [c.content async for c in llm.astream("hi") if c.content]  # type: ignore[misc]
        assert chunks == ["Hello ", "plain world"]


def test_a_transport_of_plain_iterators_stops_early_at_a_stop_sequence() -> None:
    llm = ChatG4F(provider=PlainIO(), stop=["plain"])
    assert llm.invoke("hi").content == "Hello "
    assert "".join(c.content for c in llm.stream("hi")) == "Hello "  # type: ignore[misc]
