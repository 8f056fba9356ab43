"""Providers of the installed ``g4f`` package, wrapped: ChatG4F and the router over them.

The g4f providers here are defined by the test (g4f's own ``AsyncGeneratorProvider``
base class, no network), so they run through g4f's real ``ChatCompletion`` path.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

g4f = pytest.importorskip("g4f")
from g4f.providers.base_provider import AsyncGeneratorProvider
from g4f.providers.response import FinishReason, Reasoning

from langchain_g4f import ChatG4F, ChatG4FRouter, providers
from langchain_g4f.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    ConfigurationError,
    EmptyResponseError,
    ProviderConnectionError,
    RateLimitError,
    UnknownProviderError,
    UnsupportedModelError,
)
from langchain_g4f.providers import Lockchat
from langchain_g4f.providers.base import ProviderTransport
from langchain_g4f.providers.g4f_package import (
    G4FPackageProvider,
    G4FPackageTransport,
    discover,
    g4f_names,
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


class Down(Echo):
    """g4f marks it as not working."""

    working = False


class Keyed(Echo):
    """Needs a key."""

    needs_auth = True


class Other(Echo):
    """Serves other models only."""

    default_model = "other-1"
    models: ClassVar[list[str]] = ["other-1"]


@pytest.fixture(autouse=True)
def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    Echo.calls.clear()
    Whole.calls.clear()
    # the package turns g4f's version check off itself; a test that leaves it on fails
    monkeypatch.setattr(g4f.debug, "version_check", True)
    monkeypatch.delenv("G4F_API_KEY", raising=False)


@pytest.fixture
def listing(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make g4f.Provider list exactly the given test-defined classes (and unloadable names)."""
    module = g4f.Provider

    def install(*classes: type, unloadable: tuple[str, ...] = ()) -> None:
        names = [cls.__name__ for cls in classes]
        monkeypatch.setattr(module, "__all__", [*module.__others__, *names, *unloadable])
        for cls in classes:
            monkeypatch.setattr(module, cls.__name__, cls, raising=False)

    return install


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
    named += re.findall(r'"g4f:(\w+)"', readme)
    assert len(named) >= 2
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
    with pytest.raises(ConfigurationError, match=r'pip install "langchain-g4f-router\[g4f\]"'):
        G4FPackageProvider("Anything")
    with pytest.raises(ConfigurationError, match=r'pip install "langchain-g4f-router\[g4f\]"'):
        ChatG4F(provider="g4f:Anything")


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


# -- g4f providers by name ------------------------------------------------------------


def test_a_g4f_name_resolves_in_the_registry_case_insensitively(
    listing: Callable[..., None],
) -> None:
    listing(Echo, Whole)
    assert providers.get("g4f:Echo").name == "g4f:Echo"
    assert providers.get("G4F:echo").g4f_provider is Echo  # type: ignore[attr-defined]
    llm = ChatG4F(provider="g4f:echo")
    message = llm.invoke("hello")
    assert message.content == "echo-1 says: hello "
    assert message.response_metadata["provider"] == "g4f:Echo"
    router = ChatG4FRouter(providers=["g4f:Whole", "g4f:Echo"], strategy="priority")
    assert router.provider_names == ["g4f:Whole", "g4f:Echo"]
    assert router.invoke("hi").response_metadata["provider"] == "g4f:Whole"


def test_an_unknown_g4f_name_in_the_registry_offers_g4fs_close_names(
    listing: Callable[..., None],
) -> None:
    listing(Echo, Whole)
    with pytest.raises(UnknownProviderError, match=r"g4f:Ecko.*did you mean 'Echo'\?"):
        ChatG4F(provider="g4f:Ecko")


def test_the_real_g4f_names_resolve_without_the_network() -> None:
    provider = providers.get("g4f:yqcloud")
    assert provider.name == "g4f:Yqcloud"
    assert "AnyProvider" not in g4f_names()  # g4f's own routers are not candidates


def test_a_name_g4f_lists_but_cannot_load_is_a_typed_error(
    listing: Callable[..., None],
) -> None:
    listing(Echo, unloadable=("Ghost",))
    with pytest.raises(ConfigurationError, match="g4f lists 'Ghost' but cannot load it") as info:
        providers.get("g4f:Ghost")
    assert info.value.provider == "g4f:Ghost"


# -- discovery: providers="g4f:*" ----------------------------------------------------


def test_discovery_takes_the_working_keyless_providers_serving_the_model(
    listing: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    listing(Whole, Echo, Down, Keyed, Other, Failing, unloadable=("Ghost",))
    with caplog.at_level(logging.INFO, logger="langchain_g4f.providers.g4f_package"):
        found = discover("echo-1")
    # in g4f's (alphabetical) order, those that cannot stream (Whole) last;
    # Failing declares no model: it takes any
    assert [p.name for p in found] == ["g4f:Echo", "g4f:Failing", "g4f:Whole"]
    assert "leaves out g4f:Ghost" in caplog.text
    assert [p.name for p in discover("other-1")] == ["g4f:Failing", "g4f:Other"]


def test_discovery_takes_a_provider_that_needs_a_key_once_its_own_key_is_set(
    listing: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    listing(Echo, Keyed)
    monkeypatch.setenv("G4F_API_KEY", "shared")  # shared by every provider: not its own
    assert [p.name for p in discover("echo-1")] == ["g4f:Echo"]
    monkeypatch.setenv("G4F_G4F_KEYED_API_KEY", "its-own")
    assert [p.name for p in discover("echo-1")] == ["g4f:Echo", "g4f:Keyed"]
    router = ChatG4FRouter(providers="g4f:*", model="echo-1", strategy="priority")
    router.invoke("hi")
    assert Echo.calls[-1].get("api_key") is None
    assert router.provider_names == ["g4f:Echo", "g4f:Keyed"]


async def test_a_g4f_router_answers_and_its_stats_say_who(listing: Callable[..., None]) -> None:
    listing(Whole, Echo, Down, Other)
    router = ChatG4FRouter(providers="g4f:*", model="echo-2", strategy="priority")
    assert router.provider_names == ["g4f:Echo", "g4f:Whole"]
    message = await router.ainvoke("hi")
    assert message.content == "echo-2 says: hi "
    assert message.response_metadata["provider"] == "g4f:Echo"
    stats = router.stats()
    assert (stats["g4f:Echo"]["successes"], stats["g4f:Whole"]["successes"]) == (1, 0)


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_a_provider_that_cannot_stream_is_a_streams_fallback(
    listing: Callable[..., None], monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setattr(Failing, "error", ConnectionRefusedError("refused"))
    listing(Whole, Failing)
    router = ChatG4FRouter(providers="g4f:*", model="echo-1", strategy="priority", max_retries=0)
    assert router.provider_names == ["g4f:Failing", "g4f:Whole"]
    if mode == "stream":
        chunks = [c for c in router.stream("hi") if c.content]
    else:
        chunks = [c async for c in router.astream("hi") if c.content]
    assert [c.content for c in chunks] == ["echo-1 says: hi "]  # the whole answer, one chunk
    stats = router.stats()
    assert (stats["g4f:Failing"]["failures"], stats["g4f:Whole"]["successes"]) == (1, 1)
    assert Whole.calls[-1]["ignore_stream"] is True


def test_a_g4f_router_with_only_failing_providers_fails_typed(
    listing: Callable[..., None],
) -> None:
    listing(Failing)
    router = ChatG4FRouter(providers="g4f:*", model="anything", max_retries=0)
    with pytest.raises(AllProvidersFailedError, match="g4f:Failing"):
        router.invoke("hi")


def test_discovery_needs_a_model_and_a_match(listing: Callable[..., None]) -> None:
    listing(Echo, Down)
    with pytest.raises(ConfigurationError, match=r"providers='g4f:\*' needs model="):
        ChatG4FRouter(providers="g4f:*")
    with pytest.raises(ConfigurationError, match=r"no g4f provider .* serves model 'gpt-9'"):
        ChatG4FRouter(providers="g4f:*", model="gpt-9")


# -- quiet and typed offline -----------------------------------------------------------

_OFFLINE = textwrap.dedent(
    """
    import socket, sys, threading

    def offline(*args, **kwargs):
        raise OSError("network is unreachable (offline test)")

    socket.getaddrinfo = offline  # no name resolves: offline, and nothing leaves this machine
    socket.create_connection = offline

    from g4f.providers.base_provider import AsyncGeneratorProvider
    from langchain_g4f import ChatG4F, providers
    from langchain_g4f.errors import ProviderConnectionError
    from langchain_g4f.providers.g4f_package import G4FPackageProvider

    class Here(AsyncGeneratorProvider):
        working = True
        supports_stream = True
        default_model = "here-1"

        @classmethod
        async def create_async_generator(cls, model, messages, **kwargs):
            yield "answered here"

    # the first call through g4f's ChatCompletion: where g4f starts its version check
    assert ChatG4F(provider=G4FPackageProvider(Here)).invoke("hi").content == "answered here"
    for thread in threading.enumerate():  # let a version check thread finish its print
        if thread is not threading.main_thread():
            thread.join(10)
    assert ChatG4F(provider="g4f:Yqcloud").provider_name == "g4f:Yqcloud"
    try:
        providers.get("g4f:G4FSpace")  # g4f fetches its live provider list to build it
    except ProviderConnectionError as exc:
        sys.stderr.write(f"typed: {exc}\\n")
    """
)


def test_offline_g4f_prints_nothing_and_fails_typed(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**_env(), "HOME": str(tmp_path)},  # no cached provider list of g4f's
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "typed: g4f:G4FSpace: ConnectionError" in done.stderr


def _env() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if not key.startswith("G4F_")}
