"""Reasoning output: ``reasoning_content``/``reasoning`` fields and ``<think>`` sections."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.providers import OpenAICompatible
from langchain_g4f.providers.openai import SSEParser, parse_completion
from langchain_g4f.reasoning import ThinkSplitter
from langchain_g4f.testing import Replica, reasoning_for, reply_for
from tests.unit_tests.modes import MODES, call, chunks_of

# --- the splitter --------------------------------------------------------------------------


def split(pieces: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    reasoning, answer = [], []
    for piece in pieces:
        r, a = splitter.push(piece)
        reasoning.append(r)
        answer.append(a)
    r, a = splitter.flush()
    return "".join(reasoning) + r, "".join(answer) + a


TEXT = "\n<think>\nLet me see.\n</think>\n\nThe answer is 4."


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, len(TEXT)])
def test_a_think_section_is_split_off_whatever_the_piece_sizes(size: int) -> None:
    pieces = [TEXT[i : i + size] for i in range(0, len(TEXT), size)]
    assert split(pieces) == ("\nLet me see.\n", "The answer is 4.")


def test_every_cut_of_the_tags_gives_the_same_split() -> None:
    for cut in range(1, len(TEXT)):
        assert split([TEXT[:cut], TEXT[cut:]]) == ("\nLet me see.\n", "The answer is 4."), cut


def test_an_unclosed_think_section_is_all_reasoning() -> None:
    assert split(["<think>still", " thinking </thi"]) == ("still thinking </thi", "")


def test_think_later_in_the_text_is_answer_text() -> None:
    assert split(["Hello ", "<think>x</think>"]) == ("", "Hello <think>x</think>")


def test_text_that_only_starts_like_the_tag_is_answer() -> None:
    assert split(["<thi", "s is not a tag"]) == ("", "<this is not a tag")
    assert split(["<th"]) == ("", "<th")
    assert split(["  "]) == ("", "  ")


def test_reasoning_is_emitted_as_it_arrives() -> None:
    splitter = ThinkSplitter()
    assert splitter.push("<think>one ") == ("one ", "")
    assert splitter.thinking
    assert splitter.push("two</") == ("two", "")
    assert splitter.push("think>three") == ("", "three")
    assert not splitter.thinking


# --- the parsers ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_parsers_read_reasoning_fields(field: str) -> None:
    body = {"choices": [{"message": {"content": "4", field: "2+2"}, "finish_reason": "stop"}]}
    [delta] = parse_completion("P", json.dumps(body).encode())
    assert (delta.reasoning, delta.text) == ("2+2", "4")

    parser = SSEParser("P")
    events = [
        {"choices": [{"delta": {field: "2+"}, "finish_reason": None}]},
        {"choices": [{"delta": {field: "2"}, "finish_reason": None}]},
        {"choices": [{"delta": {"content": "4"}, "finish_reason": "stop"}]},
    ]
    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    deltas = parser.feed(data + b"data: [DONE]\n\n") + parser.close()
    assert "".join(d.reasoning for d in deltas) == "2+2"
    assert "".join(d.text for d in deltas) == "4"


def test_a_reasoning_value_that_is_not_text_is_not_reasoning() -> None:
    body = {"choices": [{"message": {"content": "4", "reasoning": {"effort": "low"}}}]}
    [delta] = parse_completion("P", json.dumps(body).encode())
    assert delta.reasoning == ""


# --- through ChatG4F and the router, against the replica -------------------------------------

PROMPT = "Why is the sky blue?"


def reasoning_chat(replica: Replica, model: str, **kwargs: Any) -> ChatG4F:
    provider = OpenAICompatible(
        "OpenAI", replica.base_url("OpenAI") + "/v1", profile={"reasoning_output": True}
    )
    return ChatG4F(provider=provider, model=model, timeout=5, **kwargs)


def router_with(replica: Replica, model: str, **kwargs: Any) -> ChatG4FRouter:
    """Lockchat, failing with HTTP 500, then the reasoning model."""
    replica.set_fault("Lockchat", "http_500")
    failing = ChatG4F(provider="Lockchat", base_url=replica.base_url("Lockchat"), timeout=5)
    return ChatG4FRouter(
        providers=[failing, reasoning_chat(replica, model)],
        strategy="priority",
        max_retries=0,
        **kwargs,
    )


def answer_of(prompt: str) -> str:
    return reply_for([{"role": "user", "content": prompt}])


def thoughts_of(prompt: str) -> str:
    return reasoning_for([{"role": "user", "content": prompt}])


@pytest.fixture
def fresh(replica: Replica) -> Replica:
    replica.reset()
    return replica


@pytest.mark.loopback
@pytest.mark.parametrize("model", ["deepseek-reasoner", "deepseek-r1"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_reasoning_is_apart_from_the_answer(
    fresh: Replica, model: str, mode: str, via: str
) -> None:
    llm: Any = router_with(fresh, model) if via == "router" else reasoning_chat(fresh, model)

    message = await call(llm, PROMPT, mode)

    assert message.content == answer_of(PROMPT)
    assert message.additional_kwargs["reasoning_content"] == thoughts_of(PROMPT)
    assert message.response_metadata["finish_reason"] == "stop"
    if via == "router":
        assert [a["provider"] for a in message.response_metadata["attempts"]] == ["Lockchat"]


@pytest.mark.loopback
@pytest.mark.parametrize("model", ["deepseek-reasoner", "deepseek-r1"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_output_version_v1_gives_reasoning_blocks(
    fresh: Replica, model: str, mode: str, via: str
) -> None:
    llm: Any = (
        router_with(fresh, model, output_version="v1")
        if via == "router"
        else reasoning_chat(fresh, model, output_version="v1")
    )

    message = await call(llm, PROMPT, mode)

    blocks = [{k: v for k, v in b.items() if k != "index"} for b in message.content]
    assert blocks == [
        {"type": "reasoning", "reasoning": thoughts_of(PROMPT)},
        {"type": "text", "text": answer_of(PROMPT)},
    ]
    assert message.text == answer_of(PROMPT)
    assert message.response_metadata["output_version"] == "v1"


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["stream", "astream"])
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_reasoning_streams_before_the_answer(fresh: Replica, mode: str, via: str) -> None:
    llm: Any = (
        router_with(fresh, "deepseek-r1")
        if via == "router"
        else reasoning_chat(fresh, "deepseek-r1")
    )

    chunks = await chunks_of(llm, PROMPT, mode)

    kinds = [
        "reasoning" if c.additional_kwargs.get("reasoning_content") else "text"
        for c in chunks
        if c.content or c.additional_kwargs.get("reasoning_content")
    ]
    assert kinds.count("reasoning") > 1  # several pieces, as they came
    assert kinds == sorted(kinds)  # every reasoning chunk before any answer chunk
    assert all("<" not in str(c.content) for c in chunks)  # no tag leaks into the answer


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_an_unclosed_think_section_is_reasoning_and_the_answer_is_empty(
    fresh: Replica, mode: str, via: str
) -> None:
    fresh.set_reply("OpenAI", None, chunks=["<thi", "nk>Still ", "thinking about it", "</th"])
    llm: Any = router_with(fresh, "plain") if via == "router" else reasoning_chat(fresh, "plain")

    message = await call(llm, PROMPT, mode, max_tokens=3)  # the replica cuts the 4th piece

    assert message.content == ""
    assert message.additional_kwargs["reasoning_content"] == "Still thinking about it"
    assert message.response_metadata["finish_reason"] == "length"  # as the server sent it


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_stop_sequences_apply_to_the_answer_only(fresh: Replica, mode: str, via: str) -> None:
    # "user" is in the reasoning ("The user said: ..."), "replica" in the answer.
    chunks = ["<think>", "The user said hi.", "</think>", "Hello from the replica, user!"]
    fresh.set_reply("OpenAI", None, chunks=chunks)
    llm: Any = router_with(fresh, "plain") if via == "router" else reasoning_chat(fresh, "plain")

    message = await call(llm, PROMPT, mode, stop=["user"])

    assert message.additional_kwargs["reasoning_content"] == "The user said hi."
    assert message.content == "Hello from the replica, "


@pytest.mark.loopback
async def test_the_router_wins_on_the_first_reasoning(fresh: Replica) -> None:
    """A reasoning model's first output is its reasoning: the race is won then."""
    router = router_with(fresh, "deepseek-reasoner")
    first = next(iter(router.stream(PROMPT)))
    assert first.additional_kwargs["reasoning_content"]
    assert isinstance(router.invoke(PROMPT), AIMessage)


@pytest.mark.parametrize("stream", [True, False])
def test_the_client_cuts_the_answer_at_a_stop_sequence_never_the_reasoning(stream: bool) -> None:
    from langchain_g4f.chat_models import _Answer, _Call
    from langchain_g4f.providers.base import Delta

    answer = _Answer("P", _Call(None, "m", ["user"]), stream=stream)  # type: ignore[arg-type]
    batch = [
        Delta(reasoning="the user "),
        Delta(text="<think>The user said hi.</th"),
        Delta(text="ink>Hi, us"),
        Delta(text="er! More."),
    ]
    if stream:
        chunks = [*answer.chunks(batch), answer.final_chunk()]
        message: Any = chunks[0].message
        for chunk in chunks[1:]:
            message = message + chunk.message
    else:
        answer.collect(batch)
        message = answer.message()
    assert message.additional_kwargs["reasoning_content"] == "the user The user said hi."
    assert message.content == "Hi, "
    assert message.response_metadata["finish_reason"] == "stop"


@pytest.mark.loopback
@pytest.mark.parametrize("via", ["chat", "router"])
async def test_stream_events_v3_carries_reasoning_and_text(fresh: Replica, via: str) -> None:
    from langchain_tests.integration_tests.chat_models import assert_valid_event_stream

    llm: Any = (
        router_with(fresh, "deepseek-r1")
        if via == "router"
        else reasoning_chat(fresh, "deepseek-r1")
    )
    stream = llm.stream_events(PROMPT, version="v3")
    assert_valid_event_stream(list(stream))
    astream = await llm.astream_events(PROMPT, version="v3")
    assert_valid_event_stream([event async for event in astream])

    for message in (stream.output, await astream.output):
        assert [b["type"] for b in message.content_blocks] == ["reasoning", "text"]
        assert message.text == answer_of(PROMPT)
        assert message.response_metadata["output_version"] == "v1"
