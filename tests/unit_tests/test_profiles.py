"""Profiles, routing by capability, and the router's custom events."""

from __future__ import annotations

import math
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.errors import (
    AllProvidersFailedError,
    ConfigurationError,
    NoProviderAvailableError,
)
from langchain_g4f.profiles import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    PACKAGE_CAPABILITIES,
    estimate_tokens,
    union,
)
from langchain_g4f.providers import OpenAICompatible
from langchain_g4f.testing import Replica, reply_for
from tests.unit_tests.modes import MODES, call

# --- profiles ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model", "window"),
    [
        ("Lockchat", "gpt-4", 8192),
        ("Lockchat", "gpt-3.5-turbo", 4096),
        ("Mishalsgpt", "gpt-3.5-turbo-16k-0613", 16385),
        ("Gravityengine", "gpt-3.5-turbo-0613", 4096),
        ("Aichat", "gpt-3.5-turbo", 4096),
    ],
)
def test_built_in_providers_declare_text_only_and_their_windows(
    provider: str, model: str, window: int
) -> None:
    profile = ChatG4F(provider=provider, model=model).profile
    assert profile is not None
    assert profile["max_input_tokens"] == window
    assert profile["image_inputs"] is False
    assert profile["reasoning_output"] is False
    assert profile["text_inputs"] is True
    # what the package adds on every provider
    assert {k: profile[k] for k in PACKAGE_CAPABILITIES} == PACKAGE_CAPABILITIES


def test_openai_compatible_takes_a_profile_from_the_user() -> None:
    provider = OpenAICompatible(
        "Vision",
        "http://127.0.0.1:9/v1",
        profile={"image_inputs": True, "reasoning_output": True, "max_input_tokens": 32000},
    )
    profile = ChatG4F(provider=provider, model="m").profile
    assert profile is not None
    assert (profile["image_inputs"], profile["reasoning_output"]) == (True, True)
    assert profile["max_input_tokens"] == 32000
    assert profile["tool_calling"] is True
    # the default of an OpenAI-compatible endpoint: text, nothing else claimed, no known window
    plain = ChatG4F(provider=OpenAICompatible("Plain", "http://127.0.0.1:9/v1"), model="m")
    assert plain.profile is not None
    assert plain.profile["text_inputs"] is True
    assert "image_inputs" not in plain.profile
    assert "max_input_tokens" not in plain.profile


@pytest.mark.parametrize(
    "profile",
    [
        [("image_inputs", True)],
        {"max_input_tokens": 0},
        {"max_input_tokens": "8k"},
        {"image_inputs": "yes"},
    ],
)
def test_a_bad_profile_is_a_configuration_error(profile: Any) -> None:
    with pytest.raises(ConfigurationError, match="profile"):
        OpenAICompatible("Bad", "http://127.0.0.1:9/v1", profile=profile)


def test_a_profile_passed_to_the_chat_model_wins() -> None:
    llm = ChatG4F(provider="Lockchat", profile={"max_input_tokens": 100})
    assert llm.profile == {"max_input_tokens": 100}


def test_a_per_call_model_has_its_own_profile() -> None:
    llm = ChatG4F(provider="Lockchat", model="gpt-4")
    assert llm.profile_for("gpt-3.5-turbo")["max_input_tokens"] == 4096
    assert llm.profile_for(None)["max_input_tokens"] == 8192


def test_the_router_profile_is_the_union_of_its_candidates() -> None:
    vision = OpenAICompatible(
        "Vision",
        "http://127.0.0.1:9/v1",
        profile={"image_inputs": True, "max_input_tokens": 32000},
    )
    thinker = OpenAICompatible(
        "Thinker",
        "http://127.0.0.1:9/v1",
        profile={"reasoning_output": True, "max_input_tokens": 64000},
    )
    router = ChatG4FRouter(
        providers=[
            ChatG4F(provider="Lockchat"),
            ChatG4F(provider=vision, model="v"),
            ChatG4F(provider=thinker, model="t"),
        ]
    )
    profile = router.profile
    assert profile is not None
    assert profile["image_inputs"] is True
    assert profile["reasoning_output"] is True
    assert profile["max_input_tokens"] == 64000
    assert profile["tool_calling"] is True
    only_text = ChatG4FRouter(providers=["Lockchat", "Aichat"]).profile
    assert only_text is not None
    assert only_text["image_inputs"] is False
    assert only_text["max_input_tokens"] == 8192


def test_the_union_of_an_unknown_window_is_unknown() -> None:
    assert "max_input_tokens" not in union([{"max_input_tokens": 10}, {"image_inputs": False}])
    assert union([{"image_inputs": False}, {"image_inputs": True}]) == {"image_inputs": True}


def test_a_router_on_one_model_describes_the_providers_of_that_model() -> None:
    router = ChatG4FRouter(providers=["Lockchat", "Mishalsgpt"], model="gpt-3.5-turbo")
    assert router.profile is not None
    assert router.profile["max_input_tokens"] == 4096


# --- the estimate --------------------------------------------------------------------------


def test_the_estimate_is_characters_over_four_plus_overhead() -> None:
    messages = [SystemMessage("a" * 10), HumanMessage("b" * 401)]
    assert (
        estimate_tokens(messages) == math.ceil(10 / 4) + math.ceil(401 / 4) + 2 * MESSAGE_OVERHEAD
    )


def test_the_estimate_counts_images_and_tool_calls_not_reasoning() -> None:
    image = {"type": "image", "base64": "A" * 4000, "mime_type": "image/png"}
    human = HumanMessage(content=[{"type": "text", "text": "abcd"}, image])
    assert estimate_tokens([human]) == 1 + MESSAGE_OVERHEAD + IMAGE_TOKENS
    ai = AIMessage(
        content=[{"type": "reasoning", "reasoning": "x" * 1000}],
        tool_calls=[{"name": "f", "args": {"a": 1}, "id": "1"}],
    )
    assert estimate_tokens([ai]) == math.ceil((1 + len('{"a": 1}')) / 4) + MESSAGE_OVERHEAD


# --- routing by context window, against the replica ------------------------------------------


def chat(replica: Replica, name: str, model: str) -> ChatG4F:
    return ChatG4F(provider=name, model=model, base_url=replica.base_url(name), timeout=5)


@pytest.fixture
def fresh(replica: Replica) -> Replica:
    replica.reset()
    return replica


LONG = "word " * 8000  # about 10000 tokens: more than 8192, fewer than 16385


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_a_long_input_goes_only_to_a_provider_whose_window_fits(
    fresh: Replica, mode: str
) -> None:
    router = ChatG4FRouter(
        providers=[
            chat(fresh, "Lockchat", "gpt-4"),
            chat(fresh, "Mishalsgpt", "gpt-3.5-turbo-16k-0613"),
        ],
        strategy="priority",
    )

    message = await call(router, LONG, mode)

    assert message.response_metadata["provider"] == "Mishalsgpt"
    assert message.response_metadata["attempts"] == []
    assert [r["provider"] for r in fresh.requests] == ["mishalsgpt"]
    # a short input still goes to the first
    short = await call(router, "Hi", mode)
    assert short.response_metadata["provider"] == "Lockchat"


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_when_no_window_fits_the_router_says_so_before_any_request(
    fresh: Replica, mode: str
) -> None:
    router = ChatG4FRouter(
        providers=[chat(fresh, "Lockchat", "gpt-4"), chat(fresh, "Aichat", "gpt-3.5-turbo")]
    )
    with pytest.raises(NoProviderAvailableError, match="a context window of at least") as info:
        await call(router, LONG, mode)
    assert "Lockchat lacks" in str(info.value)
    assert "Aichat lacks" in str(info.value)
    assert fresh.requests == []


# --- custom events -------------------------------------------------------------------------


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.custom: list[tuple[str, Any, UUID]] = []
        self.starts: list[UUID] = []

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **kw: Any
    ) -> None:
        self.starts.append(run_id)

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kw: Any) -> None:
        self.custom.append((name, data, run_id))


class AsyncEvents(AsyncCallbackHandler):
    def __init__(self) -> None:
        self.custom: list[tuple[str, Any, UUID]] = []
        self.starts: list[UUID] = []

    async def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **kw: Any
    ) -> None:
        self.starts.append(run_id)

    async def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kw: Any) -> None:
        self.custom.append((name, data, run_id))


def failing_router(replica: Replica) -> ChatG4FRouter:
    replica.set_fault("Lockchat", "http_500")
    replica.set_fault("Gravityengine", "http_401")
    return ChatG4FRouter(
        providers=[
            chat(replica, "Lockchat", "gpt-4"),
            chat(replica, "Gravityengine", "gpt-3.5-turbo-16k"),
            chat(replica, "Mishalsgpt", "gpt-3.5-turbo"),
        ],
        strategy="priority",
        max_retries=0,
    )


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("handler", [Events, AsyncEvents])
async def test_each_failed_attempt_is_a_g4f_attempt_event_on_the_router_run(
    fresh: Replica, mode: str, handler: type
) -> None:
    events = handler()
    router = failing_router(fresh)

    message = await call(router, "Hi", mode, config={"callbacks": [events]})

    assert message.response_metadata["provider"] == "Mishalsgpt"
    [run_id] = events.starts
    assert [(name, run) for name, _, run in events.custom] == [("g4f_attempt", run_id)] * 2
    records = [data for _, data, _ in events.custom]
    assert records == message.response_metadata["attempts"]
    assert [(r["provider"], r["error"], r["status"]) for r in records] == [
        ("Lockchat", "ProviderHTTPError", 500),
        ("Gravityengine", "AuthenticationError", 401),
    ]
    assert set(records[0]) == {"provider", "error", "status", "message", "elapsed"}


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_attempts_are_dispatched_when_every_provider_fails(fresh: Replica, mode: str) -> None:
    fresh.set_fault("Mishalsgpt", "http_503")
    events = Events()
    with pytest.raises(AllProvidersFailedError) as info:
        await call(failing_router(fresh), "Hi", mode, config={"callbacks": [events]})
    assert [data for _, data, _ in events.custom] == info.value.attempts
    assert len(info.value.attempts) == 3


@pytest.mark.loopback
async def test_astream_events_shows_the_attempts(fresh: Replica) -> None:
    router = failing_router(fresh)
    seen = [
        (event["name"], event["data"]["provider"])
        async for event in router.astream_events("Hi", version="v2")
        if event["event"] == "on_custom_event"
    ]
    assert seen == [("g4f_attempt", "Lockchat"), ("g4f_attempt", "Gravityengine")]


@pytest.mark.loopback
async def test_events_inside_a_chain_attach_to_the_router_run(fresh: Replica) -> None:
    from langchain_core.output_parsers import StrOutputParser

    chain = failing_router(fresh) | StrOutputParser()
    events = [e async for e in chain.astream_events("Hi", version="v2")]
    model_runs = {e["run_id"] for e in events if e["event"] == "on_chat_model_start"}
    custom = [e for e in events if e["event"] == "on_custom_event"]
    assert len(custom) == 2
    assert {e["run_id"] for e in custom} == model_runs
    assert "".join(
        e["data"]["chunk"] for e in events if e["event"] == "on_parser_stream"
    ) == reply_for([{"role": "user", "content": "Hi"}])


# --- ls_model_name -------------------------------------------------------------------------


def test_ls_model_name_names_the_model_asked() -> None:
    llm = ChatG4F(provider="Lockchat", model="gpt-4")
    assert llm._get_ls_params()["ls_model_name"] == "gpt-4"
    assert llm._get_ls_params(model="gpt-3.5-turbo")["ls_model_name"] == "gpt-3.5-turbo"
    same = ChatG4FRouter(providers=["Lockchat", "Mishalsgpt"], model="gpt-3.5-turbo")
    assert same._get_ls_params()["ls_model_name"] == "gpt-3.5-turbo"
    shared = ChatG4FRouter(
        providers=[ChatG4F(provider="Lockchat", model="gpt-3.5-turbo"), "Aichat"]
    )
    assert shared._get_ls_params()["ls_model_name"] == "gpt-3.5-turbo"
    mixed = ChatG4FRouter(providers=["Lockchat", "Mishalsgpt"])
    assert "ls_model_name" not in mixed._get_ls_params()  # each answer names its own
