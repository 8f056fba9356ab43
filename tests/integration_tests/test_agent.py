"""Agents end to end: ``create_agent`` with two tools and a router over the replica.

The router's first provider is refused, so every model call also falls back.
Emulated tools (Lockchat) and native tools (an OpenAI-compatible route) both run
the whole loop: a tool call, the tool's result, then an answer streamed token
by token through ``stream_mode="messages"``.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.providers import OpenAICompatible
from langchain_g4f.testing import Replica

pytestmark = pytest.mark.loopback

PROMPT = "What is the weather in Paris?"
WEATHER = "It is sunny in Paris."


def get_weather(location: str) -> str:
    """Get the current weather at a location."""
    return f"It is sunny in {location}."


def get_time(timezone: str) -> str:
    """Get the current time in a timezone."""
    return f"It is noon in {timezone}."


def router(replica: Replica, answering: str) -> ChatG4FRouter:
    replica.set_fault("Mishalsgpt", "refuse")
    dead = ChatG4F(provider="Mishalsgpt", base_url=replica.base_url("Mishalsgpt"), timeout=2)
    if answering == "native":
        provider = OpenAICompatible("OpenAI", replica.base_url("openai") + "/v1", native_tools=True)
        live = ChatG4F(provider=provider, model="gpt-4o-mini", timeout=5)
    else:
        live = ChatG4F(provider=answering, base_url=replica.base_url(answering), timeout=5)
    return ChatG4FRouter(providers=[dead, live], strategy="priority", max_retries=0, timeout=10)


def answered_by(message: AIMessage) -> str:
    return message.response_metadata["provider"]


@pytest.fixture(autouse=True)
def _fresh(replica: Replica) -> None:
    replica.reset()


@pytest.mark.parametrize("answering", ["Lockchat", "native"])
def test_agent_calls_a_tool_reads_it_and_answers(replica: Replica, answering: str) -> None:
    agent = create_agent(router(replica, answering), tools=[get_weather, get_time])
    messages = agent.invoke({"messages": [HumanMessage(PROMPT)]})["messages"]

    _human, call, result, answer = messages
    assert isinstance(call, AIMessage)
    assert isinstance(result, ToolMessage)
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [
        ("get_weather", {"location": "Paris"})
    ]
    assert result.content == WEATHER
    assert result.tool_call_id == call.tool_calls[0]["id"]
    assert WEATHER in answer.content
    assert not answer.tool_calls
    # each model call fell back from the refused provider
    for message in (call, answer):
        assert answered_by(message) != "Mishalsgpt"
        assert [a["provider"] for a in message.response_metadata["attempts"]] == ["Mishalsgpt"]


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="LangGraph streams an async run's tokens through contextvars, which asyncio "
    "propagates to its tasks from Python 3.11 on (any chat model, LangChain's fakes too)",
)
@pytest.mark.parametrize("answering", ["Lockchat", "native"])
async def test_agent_streams_the_answer_token_by_token(replica: Replica, answering: str) -> None:
    agent = create_agent(router(replica, answering), tools=[get_weather, get_time])
    chunks: list[AIMessageChunk] = []
    tools_ran: list[ToolMessage] = []
    async for message, metadata in agent.astream(
        {"messages": [HumanMessage(PROMPT)]}, stream_mode="messages"
    ):
        if isinstance(message, ToolMessage):
            tools_ran.append(message)
        elif isinstance(message, AIMessageChunk) and metadata["langgraph_node"] == "model":
            chunks.append(message)

    assert [m.content for m in tools_ran] == [WEATHER]
    call_chunks = [c for c in chunks if c.tool_call_chunks]
    answer_chunks = [c for c in chunks if c.content]
    # the call arrives as tool-call chunks, never as text
    assert call_chunks
    assert all(not c.content for c in call_chunks)
    # the answer arrives in several pieces that join to the full text
    answer = "".join(c.content for c in answer_chunks)
    assert len(answer_chunks) > 3
    assert WEATHER in answer
    assert answer.split() == [piece.strip() for c in answer_chunks for piece in c.content.split()]


def test_agent_sync_stream_over_aichat(replica: Replica) -> None:
    """Aichat answers in one piece (no streaming protocol); the loop still works."""
    agent = create_agent(router(replica, "Aichat"), tools=[get_weather, get_time])
    updates: list[dict[str, Any]] = list(
        agent.stream({"messages": [HumanMessage(PROMPT)]}, stream_mode="updates")
    )
    nodes = [next(iter(update)) for update in updates]
    assert nodes == ["model", "tools", "model"]
    final = updates[-1]["model"]["messages"][-1]
    assert WEATHER in final.content
    assert answered_by(final) == "Aichat"


@pytest.mark.parametrize("answering", ["Lockchat", "Aichat", "native"])
@pytest.mark.parametrize("mode", ["invoke", "stream", "ainvoke", "astream"])
async def test_router_bind_tools_in_every_mode(replica: Replica, answering: str, mode: str) -> None:
    llm = router(replica, answering).bind_tools([get_weather, get_time], tool_choice="any")
    if mode == "invoke":
        message = llm.invoke(PROMPT)
    elif mode == "ainvoke":
        message = await llm.ainvoke(PROMPT)
    else:
        chunks = (
            list(llm.stream(PROMPT)) if mode == "stream" else [c async for c in llm.astream(PROMPT)]
        )
        message = chunks[0]
        for chunk in chunks[1:]:
            message += chunk
        assert all(c.tool_call_chunks[0]["index"] == 0 for c in chunks if c.tool_call_chunks)
    assert message.content == ""
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"location": "Paris"})
    ]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert answered_by(message) != "Mishalsgpt"


@pytest.mark.parametrize("answering", ["Lockchat", "native"])
@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_router_structured_output(replica: Replica, answering: str, method: str) -> None:
    from pydantic import BaseModel, Field

    class Weather(BaseModel):
        """The weather at a place."""

        location: str = Field(description="the place")
        summary: str = Field(description="one line")

    llm = router(replica, answering).with_structured_output(Weather, method=method)
    # a native JSON mode takes no schema: the prompt names the keys
    prompt = (
        "Reply in JSON with the keys 'location' and 'summary'." if method == "json_mode" else PROMPT
    )
    result = llm.invoke(prompt)
    assert isinstance(result, Weather)
    assert result.location
    assert result.summary


@pytest.mark.parametrize("answering", ["Lockchat", "native"])
async def test_streaming_true_invoke_keeps_tool_calls(replica: Replica, answering: str) -> None:
    """invoke() of a model with streaming=True sums its stream: tool calls included."""
    if answering == "native":
        provider = OpenAICompatible("OpenAI", replica.base_url("openai") + "/v1", native_tools=True)
        llm = ChatG4F(provider=provider, model="gpt-4o-mini", streaming=True)
    else:
        llm = ChatG4F(provider=answering, base_url=replica.base_url(answering), streaming=True)
    bound = llm.bind_tools([get_weather, get_time], tool_choice="any")
    for message in (bound.invoke(PROMPT), await bound.ainvoke(PROMPT)):
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [
            ("get_weather", {"location": "Paris"})
        ]
        assert message.response_metadata["finish_reason"] == "tool_calls"
