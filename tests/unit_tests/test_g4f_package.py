"""Providers of the installed ``g4f`` package, wrapped: ChatG4F and the router over them.

The g4f providers here are defined by the test (g4f's own ``AsyncGeneratorProvider``
base class, no network), so they run through g4f's real ``ChatCompletion`` path.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

g4f = pytest.importorskip("g4f")
from g4f.providers.base_provider import AsyncGeneratorProvider  # noqa: E402
from g4f.providers.response import FinishReason, Reasoning  # noqa: E402

from langchain_g4f import ChatG4F, ChatG4FRouter  # noqa: E402
from langchain_g4f.errors import (  # noqa: E402
    AuthenticationError,
    ConfigurationError,
    EmptyResponseError,
    ProviderConnectionError,
    RateLimitError,
    UnsupportedModelError,
)
from langchain_g4f.providers import Lockchat  # noqa: E402
from langchain_g4f.providers.base import ProviderTransport  # noqa: E402
from langchain_g4f.providers.g4f_package import (  # noqa: E402
    G4FPackageProvider,
    G4FPackageTransport,
)


class Echo(AsyncGeneratorProvider):
    url = "https://echo.example"
    working = True
    supports_stream = True
    default_model = "echo-1"
    models: ClassVar[list[str]] = ["echo-1", "echo-2"]
    calls: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    async def create_async_generator(cls, model: str, messages: list, **kwargs: Any):  # type: ignore[override]
        cls.calls.append({"model": model, "messages": messages, **kwargs})
        for word in f"{model} says: {messages[-1]['content']}".split(" "):
            yield word + " "
        yield FinishReason("stop")


class Whole(Echo):
    """Cannot stream: the whole answer at once."""

    supports_stream = False

    @classmethod
    async def create_async_generator(cls, model: str, messages: list, **kwargs: Any):  # type: ignore[override]
        cls.calls.append({"model": model, "messages": messages, **kwargs})
        yield f"{model} says: {messages[-1]['content']} "


class Thinker(Echo):
    """Reasoning tokens (and a status line, which is not reasoning) before the answer."""

    @classmethod
    async def create_async_generator(cls, model: str, messages: list, **kwargs: Any):  # type: ignore[override]
        yield Reasoning(status="Thinking...")
        for token in ("Two and ", "two."):
            yield Reasoning(token)
        yield "Four."
        yield FinishReason("stop")


class Failing(AsyncGeneratorProvider):
    working = True
    supports_stream = True
    error: ClassVar[BaseException] = ConnectionRefusedError("refused")

    @classmethod
    async def create_async_generator(cls, model: str, messages: list, **kwargs: Any):  # type: ignore[override]
        raise cls.error
        yield ""  # pragma: no cover - makes this an async generator


class Silent(Echo):
    @classmethod
    async def create_async_generator(cls, model: str, messages: list, **kwargs: Any):  # type: ignore[override]
        yield FinishReason("stop")


@pytest.fixture(autouse=True)
def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    Echo.calls.clear()
    # g4f asks PyPI for its latest version on first use; these tests stay offline.
    monkeypatch.setattr(g4f.debug, "version_check", False)


def test_declarations_come_from_the_g4f_class() -> None:
    provider = G4FPackageProvider(Echo)
    assert provider.name == "g4f:Echo"
    assert provider.url == "https://echo.example"
    assert provider.model == ["echo-1", "echo-2"]
    assert not provider.accepts_any_model
    assert provider.supports_stream
    assert G4FPackageProvider(Failing).accepts_any_model  # declares no model


def test_invoke_stream_and_the_seed_adapter() -> None:
    llm = ChatG4F(provider=G4FPackageProvider(Echo), temperature=0.3)
    message = llm.invoke("hello there")
    assert message.content == "echo-1 says: hello there "
    assert message.response_metadata["provider"] == "g4f:Echo"
    assert message.response_metadata["finish_reason"] == "stop"
    assert Echo.calls[-1]["temperature"] == 0.3
    assert Echo.calls[-1]["messages"] == [{"role": "user", "content": "hello there"}]

    pieces = [c.content for c in llm.stream("a b", model="echo-2") if c.content]
    assert pieces == ["echo-2 ", "says: ", "a ", "b "]
    assert list(
        G4FPackageProvider(Echo)._create_completion(
            "echo-1", [{"role": "user", "content": "x"}], True
        )
    ) == ["echo-1 ", "says: ", "x "]


async def test_native_async() -> None:
    llm = ChatG4F(provider=G4FPackageProvider(Echo))
    assert (await llm.ainvoke("async")).content == "echo-1 says: async "
    pieces = [c.content async for c in llm.astream("x y") if c.content]
    assert pieces == ["echo-1 ", "says: ", "x ", "y "]


async def test_a_provider_that_cannot_stream_answers_in_one_chunk() -> None:
    llm = ChatG4F(provider=G4FPackageProvider(Whole))
    assert [c.content for c in llm.stream("hi") if c.content] == ["echo-1 says: hi "]
    assert [c.content async for c in llm.astream("hi") if c.content] == ["echo-1 says: hi "]
    assert Whole.calls[-1]["stream"] is True
    assert Whole.calls[-1]["ignore_stream"] is True


def test_bad_input_fails_before_g4f_is_called() -> None:
    with pytest.raises(UnsupportedModelError, match=r"g4f:Echo.*'gpt-9'"):
        ChatG4F(provider=G4FPackageProvider(Echo), model="gpt-9")
    with pytest.raises(ConfigurationError, match="base_url does not apply"):
        ChatG4F(provider=G4FPackageProvider(Echo), base_url="http://x").invoke("hi")
    with pytest.raises(ConfigurationError, match="no provider named 'NoSuchThing'"):
        G4FPackageProvider("NoSuchThing")
    assert Echo.calls == []


def test_an_unknown_g4f_name_lists_the_close_ones() -> None:
    # Blackbox is gone from g4f 8; its paid twin is what a user most likely means
    with pytest.raises(
        ConfigurationError, match=r"no provider named 'Blackbox' \(did you mean 'BlackboxPro'"
    ):
        G4FPackageProvider("Blackbox")


def test_the_readme_example_names_a_provider_the_pinned_g4f_has() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    named = re.findall(r'G4FPackageProvider\("(\w+)"\)', readme)
    assert named
    for name in named:
        provider = G4FPackageProvider(name)
        assert provider.name == f"g4f:{name}"
        assert not provider.needs_auth


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError("refused"), ProviderConnectionError),
        (g4f.errors.RateLimitError("slow down"), RateLimitError),
        (g4f.errors.MissingAuthError("log in"), AuthenticationError),
        (g4f.errors.ModelNotFoundError("nope"), UnsupportedModelError),
    ],
)
async def test_g4f_errors_become_typed_errors_naming_the_provider(
    monkeypatch: pytest.MonkeyPatch, error: BaseException, expected: type
) -> None:
    monkeypatch.setattr(Failing, "error", error)
    llm = ChatG4F(provider=G4FPackageProvider(Failing), model="any", max_retries=0)
    with pytest.raises(expected, match="g4f:Failing") as sync_info:
        llm.invoke("hi")
    with pytest.raises(expected, match="g4f:Failing"):
        await llm.ainvoke("hi")
    assert sync_info.value.__cause__ is error


def test_no_text_is_an_empty_answer() -> None:
    with pytest.raises(EmptyResponseError, match="g4f:Silent"):
        ChatG4F(provider=G4FPackageProvider(Silent), max_retries=0).invoke("hi")


async def test_router_falls_back_from_a_failing_g4f_provider_to_another() -> None:
    router = ChatG4FRouter(
        providers=[
            ChatG4F(provider=G4FPackageProvider(Failing), model="echo-1"),
            ChatG4F(provider=G4FPackageProvider(Echo)),
        ],
        strategy="priority",
        max_retries=0,
    )
    message = await router.ainvoke("hi")
    assert message.content == "echo-1 says: hi "
    assert message.response_metadata["provider"] == "g4f:Echo"
    assert [a["provider"] for a in message.response_metadata["attempts"]] == ["g4f:Failing"]


def test_importing_the_package_does_not_import_g4f() -> None:
    code = (
        "import sys, langchain_g4f, langchain_g4f.providers; "
        "from langchain_g4f import ChatG4F, ChatG4FRouter; "
        "assert 'g4f' not in sys.modules, 'g4f imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_g4f_installed_building_one_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "g4f", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'langchain-g4f-router\[g4f\]'"):
        G4FPackageProvider("Anything")


@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
async def test_g4f_reasoning_tokens_are_reasoning(mode: str) -> None:
    from tests.unit_tests.modes import call

    llm = ChatG4F(provider=G4FPackageProvider(Thinker), model="echo-1")
    message = await call(llm, "2+2?", mode)
    assert message.content == "Four."
    assert message.additional_kwargs["reasoning_content"] == "Two and two."


def test_the_g4f_transport_is_a_provider_transport() -> None:
    transport = G4FPackageProvider(Echo).transport
    assert isinstance(transport, G4FPackageTransport)
    assert isinstance(transport, ProviderTransport)


async def test_the_g4f_transport_refuses_another_provider() -> None:
    transport = G4FPackageTransport()
    request = Lockchat.build_request("gpt-4", [{"role": "user", "content": "hi"}], stream=False)
    with pytest.raises(ConfigurationError, match="serves only a G4FPackageProvider"):
        next(transport.batches(Lockchat, request))
    with pytest.raises(ConfigurationError, match="serves only a G4FPackageProvider"):
        await anext(transport.abatches(Lockchat, request))
