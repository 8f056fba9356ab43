"""v1 content blocks in inputs: text, reasoning from earlier turns, images."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f._messages import convert_messages
from langchain_g4f.errors import ConfigurationError, NoProviderAvailableError
from langchain_g4f.providers import OpenAICompatible
from langchain_g4f.testing import Replica, describe_images, reply_for
from tests.unit_tests.modes import MODES, call

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()
DATA_URL = f"data:image/png;base64,{PNG}"
URL = "https://example.com/cat.jpg"
WIRE_DATA = {"type": "image_url", "image_url": {"url": DATA_URL}}
WIRE_URL = {"type": "image_url", "image_url": {"url": URL}}

IMAGE_FORMS = {
    "v1 base64": ({"type": "image", "base64": PNG, "mime_type": "image/png"}, WIRE_DATA),
    "v1 url": ({"type": "image", "url": URL}, WIRE_URL),
    "v0 base64": (
        {"type": "image", "source_type": "base64", "data": PNG, "mime_type": "image/png"},
        WIRE_DATA,
    ),
    "v0 url": ({"type": "image", "source_type": "url", "url": URL}, WIRE_URL),
    "openai data url": (WIRE_DATA, WIRE_DATA),
    "openai url string": ({"type": "image_url", "image_url": URL}, WIRE_URL),
    "openai detail": (
        {"type": "image_url", "image_url": {"url": URL, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": URL, "detail": "low"}},
    ),
}

MALFORMED = {
    "no url nor data": ({"type": "image"}, "neither a url nor base64 data"),
    "wrong mime type": (
        {"type": "image", "base64": PNG, "mime_type": "application/pdf"},
        r"not an image/\* type",
    ),
    "base64 without mime type": ({"type": "image", "base64": PNG}, "no mime_type"),
    "bad base64": ({"type": "image", "base64": "@@@", "mime_type": "image/png"}, "decode"),
    "empty image_url": ({"type": "image_url", "image_url": {}}, "has no url"),
    "data url of a pdf": (
        {"type": "image_url", "image_url": {"url": f"data:application/pdf;base64,{PNG}"}},
        "not base64 image data",
    ),
    "ftp url": ({"type": "image", "url": "ftp://example.com/a.png"}, r"neither http\(s\)"),
    "file id": ({"type": "image", "file_id": "file-123"}, "file id"),
}


def human(*blocks: Any) -> HumanMessage:
    return HumanMessage(content=[{"type": "text", "text": "What is this?"}, *blocks])


# --- conversion ----------------------------------------------------------------------------


def test_text_blocks_become_text() -> None:
    messages = [
        SystemMessage(content=[{"type": "text", "text": "Be brief."}]),
        HumanMessage(
            content=[{"type": "text", "text": "Hi "}, "there", {"type": "text", "text": "!"}]
        ),
    ]
    assert convert_messages(messages, "P") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there!"},
    ]


@pytest.mark.parametrize("kind", ["reasoning", "thinking"])
def test_reasoning_blocks_of_earlier_answers_are_not_sent(kind: str) -> None:
    earlier = AIMessage(
        content=[
            {"type": kind, kind: "Let me think about greetings."},
            {"type": "text", "text": "Hello!"},
        ],
        additional_kwargs={"reasoning_content": "Let me think about greetings."},
    )
    wire = convert_messages([HumanMessage("Hi"), earlier, HumanMessage("Again")], "P")
    assert wire[1] == {"role": "assistant", "content": "Hello!"}
    assert "greetings" not in str(wire)


@pytest.mark.parametrize("text", [42, ["a"], {"x": 1}])
def test_a_reasoning_block_with_non_string_text_is_refused(text: Any) -> None:
    earlier = AIMessage(content=[{"type": "reasoning", "reasoning": text}, "Hello"])
    with pytest.raises(ConfigurationError, match="needs a string 'reasoning'"):
        convert_messages([earlier], "P")


@pytest.mark.parametrize("form", list(IMAGE_FORMS))
def test_image_blocks_become_openai_image_url_parts(form: str) -> None:
    block, wire = IMAGE_FORMS[form]
    [message] = convert_messages([human(block)], "P", images=True)
    assert message == {
        "role": "user",
        "content": [{"type": "text", "text": "What is this?"}, wire],
    }


@pytest.mark.parametrize("form", list(IMAGE_FORMS))
def test_image_blocks_are_refused_by_text_only_providers(form: str) -> None:
    with pytest.raises(ConfigurationError, match="does not take image input"):
        convert_messages([human(IMAGE_FORMS[form][0])], "P")


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_image_blocks_are_refused(case: str) -> None:
    block, message = MALFORMED[case]
    with pytest.raises(ConfigurationError, match=message):
        convert_messages([human(block)], "P", images=True)


def test_images_go_in_human_messages_only() -> None:
    tool = ToolMessage(content=[IMAGE_FORMS["v1 url"][0]], tool_call_id="1")
    with pytest.raises(ConfigurationError, match="human messages only"):
        convert_messages([tool], "P", images=True)


# --- through ChatG4F and the router, against the replica -------------------------------------


def vision(replica: Replica, **kwargs: Any) -> ChatG4F:
    provider = OpenAICompatible(
        "Vision", replica.base_url("OpenAI") + "/v1", profile={"image_inputs": True}
    )
    return ChatG4F(provider=provider, model="gpt-4o-mini", timeout=5, **kwargs)


def text_only(replica: Replica, name: str = "Lockchat") -> ChatG4F:
    return ChatG4F(provider=name, base_url=replica.base_url(name), timeout=5)


@pytest.fixture
def fresh(replica: Replica) -> Replica:
    replica.reset()
    return replica


PROMPT = [human(IMAGE_FORMS["v1 base64"][0], IMAGE_FORMS["v1 url"][0])]
SEEN = reply_for([{"role": "user", "content": "What is this?"}]) + describe_images(
    {"content": [WIRE_DATA, WIRE_URL]}
)


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_images_reach_a_provider_with_image_input(
    fresh: Replica, mode: str, via: str
) -> None:
    llm: Any = (
        ChatG4FRouter(providers=[text_only(fresh), vision(fresh)], strategy="priority")
        if via == "router"
        else vision(fresh)
    )

    message = await call(llm, PROMPT, mode)

    assert message.content == SEEN
    assert "I see 2 images" in SEEN
    # The text-only provider was never asked, and nothing failed.
    assert [r["provider"] for r in fresh.requests] == ["openai"]
    assert fresh.requests[0]["json"]["messages"][0]["content"][1:] == [WIRE_DATA, WIRE_URL]
    if via == "router":
        assert message.response_metadata["attempts"] == []


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_a_text_only_chat_refuses_images_before_any_request(
    fresh: Replica, mode: str
) -> None:
    with pytest.raises(ConfigurationError, match="does not take image input"):
        await call(text_only(fresh), PROMPT, mode)
    assert fresh.requests == []


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_a_router_without_image_input_says_so_before_any_request(
    fresh: Replica, mode: str
) -> None:
    router = ChatG4FRouter(providers=[text_only(fresh), text_only(fresh, "Mishalsgpt")])
    with pytest.raises(NoProviderAvailableError, match="needs image input") as info:
        await call(router, PROMPT, mode)
    assert "Lockchat lacks image input" in str(info.value)
    assert fresh.requests == []


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_a_malformed_image_block_is_refused_before_any_request(
    fresh: Replica, mode: str, via: str
) -> None:
    llm: Any = ChatG4FRouter(providers=[vision(fresh)]) if via == "router" else vision(fresh)
    bad = [human({"type": "image", "base64": PNG, "mime_type": "text/plain"})]
    with pytest.raises(ConfigurationError, match="not an image"):
        await call(llm, bad, mode)
    assert fresh.requests == []


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_a_history_with_v1_blocks_is_accepted(fresh: Replica, mode: str, via: str) -> None:
    history = [
        HumanMessage(content=[{"type": "text", "text": "Hi"}]),
        AIMessage(
            content=[
                {"type": "reasoning", "reasoning": "A greeting."},
                {"type": "text", "text": "Hello!"},
            ]
        ),
        HumanMessage(content=[{"type": "text", "text": "And now?"}]),
    ]
    llm: Any = ChatG4FRouter(providers=[text_only(fresh)]) if via == "router" else text_only(fresh)

    message = await call(llm, history, mode)

    assert message.content == reply_for([{"role": "user", "content": "And now?"}])
    sent = fresh.requests[0]["json"]["messages"]
    assert sent == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And now?"},
    ]


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_a_reasoning_block_with_non_string_text_is_refused_by_the_router(
    fresh: Replica, mode: str
) -> None:
    router = ChatG4FRouter(providers=[text_only(fresh)])
    history = [AIMessage(content=[{"type": "reasoning", "reasoning": 7}]), HumanMessage("Hi")]
    with pytest.raises(ConfigurationError, match="needs a string"):
        await call(router, history, mode)
    assert fresh.requests == []
