"""Emulated and native tool calling: instructions, history, reply parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field

from langchain_g4f import ChatG4F
from langchain_g4f._messages import convert_messages
from langchain_g4f.errors import ConfigurationError
from langchain_g4f.providers import OpenAICompatible
from langchain_g4f.testing import Replica
from langchain_g4f.tools import (
    JSON_MARKER,
    TOOLS_MARKER,
    ToolReplyStream,
    convert_tools,
    normalize_tool_choice,
    parse_tool_calls,
    tool_call_id,
    tool_instruction,
)


def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return "sunny"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


TOOLS = convert_tools([get_weather, add])
NAMES = {"get_weather", "add"}
CALL = {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}


@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(CALL),
        "```json\n" + json.dumps(CALL) + "\n```",
        "```\n" + json.dumps(CALL) + "\n```",
        'Sure, let me add them.\n```json\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n```',
        'I will call: {"name": "add", "arguments": {"a": 1, "b": 2}} now',
        '{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}',
    ],
    ids=["object", "fenced-json", "fenced", "text-and-fence", "inline-single", "string-args"],
)
def test_parse_tool_calls_accepts_the_documented_forms(reply: str) -> None:
    found = parse_tool_calls(reply, NAMES)
    assert found is not None
    _, calls = found
    assert [(c["name"], c["args"]) for c in calls] == [("add", {"a": 1, "b": 2})]
    assert calls[0]["id"] == tool_call_id("add", {"a": 1, "b": 2}, 0)


def test_parse_tool_calls_keeps_the_text_around_the_call() -> None:
    text, _ = parse_tool_calls('Let me check. {"name": "add", "arguments": {}} Done.', NAMES)  # type: ignore[misc]
    assert text == "Let me check.  Done."


@pytest.mark.parametrize(
    "reply",
    [
        "The answer is 3.",
        '{"name": "unknown_tool", "arguments": {}}',
        '{"tool_calls": [{"name": "add", "arguments": [1, 2]}]}',
        '{"tool_calls": [{"name": "add", "arguments": {"a": 1}',
        "Use braces like {this} in Python format strings.",
        '{"answer": 42}',
    ],
)
def test_anything_else_is_plain_text(reply: str) -> None:
    assert parse_tool_calls(reply, NAMES) is None


def test_tool_call_ids_are_deterministic_and_distinct() -> None:
    assert tool_call_id("add", {"a": 1, "b": 2}, 0) == tool_call_id("add", {"b": 2, "a": 1}, 0)
    assert tool_call_id("add", {"a": 1}, 0) != tool_call_id("add", {"a": 1}, 1)


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", "auto"),
        ("none", "none"),
        ("any", "required"),
        ("required", "required"),
        (True, "required"),
        ("add", "add"),
        ({"type": "function", "function": {"name": "add"}}, "add"),
    ],
)
def test_tool_choice_spellings(choice: object, expected: str | None) -> None:
    assert normalize_tool_choice(choice, TOOLS) == expected


def test_unknown_tool_choice_fails_before_any_request() -> None:
    llm = ChatG4F(provider="Lockchat")
    with pytest.raises(ConfigurationError, match="get_weather, add"):
        llm.bind_tools([get_weather, add], tool_choice="subtract")


def test_instruction_names_the_tools_and_the_choice() -> None:
    text = tool_instruction(TOOLS, "add")
    lines = text.splitlines()
    described = json.loads(lines[lines.index(TOOLS_MARKER) + 1])
    assert [t["name"] for t in described] == ["get_weather", "add"]
    assert described[1]["parameters"]["required"] == ["a", "b"]
    assert 'You must call the tool "add" now.' in text
    assert "at least one tool" in tool_instruction(TOOLS, "required")


HISTORY = [
    SystemMessage("Be brief."),
    HumanMessage("What is 1 + 2?"),
    AIMessage(
        content="",
        tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1", "type": "tool_call"}],
    ),
    ToolMessage("3", tool_call_id="call_1"),
    ToolMessage([{"type": "text", "text": "boom"}], tool_call_id="call_1", status="error"),
]


def test_emulated_history_reads_as_text() -> None:
    wire = convert_messages(HISTORY, "Lockchat")
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "user", "user"]
    assert json.loads(wire[2]["content"]) == CALL
    assert wire[3]["content"] == "Tool result for add (call 1):\n3"
    assert wire[4]["content"] == "Tool result for add (call 1) [error]:\nboom"


def test_emulated_results_point_at_their_call_by_position_not_by_random_id() -> None:
    turn = AIMessage(
        content="",
        tool_calls=[
            {"name": "add", "args": {"a": 1, "b": 2}, "id": "3f2c-random", "type": "tool_call"},
            {"name": "mul", "args": {"a": 2, "b": 3}, "id": "9d1e-random", "type": "tool_call"},
        ],
    )
    wire = convert_messages(
        [
            turn,
            ToolMessage("6", tool_call_id="9d1e-random"),
            ToolMessage("3", tool_call_id="3f2c-random"),
            ToolMessage("?", tool_call_id="unknown", name="div"),
        ],
        "Lockchat",
    )
    assert [m["content"] for m in wire[1:]] == [
        "Tool result for mul (call 2):\n6",
        "Tool result for add (call 1):\n3",
        "Tool result for div:\n?",
    ]
    assert "random" not in json.dumps(wire)


def test_native_history_uses_the_openai_fields() -> None:
    wire = convert_messages(HISTORY, "OpenAI", native_tools=True)
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "tool", "tool"]
    assert wire[2]["content"] is None
    assert wire[2]["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
        }
    ]
    assert wire[3] == {"role": "tool", "content": "3", "tool_call_id": "call_1"}


def test_ai_tool_use_blocks_are_sent_as_tool_calls_not_refused() -> None:
    message = AIMessage(
        content=[
            {"type": "text", "text": "Adding."},
            {"type": "tool_use", "id": "call_1", "name": "add", "input": {"a": 1, "b": 2}},
        ],
        tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1", "type": "tool_call"}],
    )
    (wire,) = convert_messages([message], "Lockchat")
    text, _, block = wire["content"].partition("\n")
    assert text == "Adding."
    assert json.loads(block) == CALL


def chunks_through(stream: ToolReplyStream, pieces: list[str]) -> tuple[str, str, list]:
    shown = "".join(stream.push(p) for p in pieces)
    rest, calls = stream.finish()
    return shown, rest, calls


def test_stream_releases_plain_text_at_once() -> None:
    stream = ToolReplyStream(NAMES)
    assert stream.push("Hello ") == "Hello "
    assert stream.push("world") == "world"
    assert stream.finish() == ("", [])


def test_stream_holds_a_tool_call_split_in_pieces() -> None:
    body = json.dumps(CALL)
    pieces = [body[i : i + 5] for i in range(0, len(body), 5)]
    shown, rest, calls = chunks_through(ToolReplyStream(NAMES), pieces)
    assert shown == ""
    assert rest == ""
    assert [(c["name"], c["args"]) for c in calls] == [("add", {"a": 1, "b": 2})]


def test_stream_shows_prose_then_holds_a_fenced_call() -> None:
    pieces = ["Let me ", "add. `", "``json\n", json.dumps(CALL), "\n```"]
    shown, rest, calls = chunks_through(ToolReplyStream(NAMES), pieces)
    assert shown == "Let me add. "
    assert rest == ""
    assert calls[0]["name"] == "add"


def test_stream_releases_held_text_that_is_no_call() -> None:
    shown, rest, calls = chunks_through(ToolReplyStream(NAMES), ["Use {x} ", "in f-strings."])
    assert shown + rest == "Use {x} in f-strings."
    assert calls == []


def test_native_provider_gets_tools_in_the_body() -> None:
    provider = OpenAICompatible("native", "http://127.0.0.1:9/v1", native_tools=True)
    llm = ChatG4F(provider=provider, model="m")
    call = llm._prepare([HumanMessage("hi")], None, True, {"tools": TOOLS, "tool_choice": "add"})
    body = json.loads(call.request.body)
    assert body["tools"] == TOOLS
    assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert call.tool_names is None


def test_emulated_provider_gets_an_instruction() -> None:
    llm = ChatG4F(provider="Aichat")
    call = llm._prepare([HumanMessage("hi")], None, False, {"tools": TOOLS, "tool_choice": "any"})
    body = json.loads(call.request.body)
    assert body["message"].startswith("system: # Tools\n" + TOOLS_MARKER)
    assert "at least one tool" in body["message"]
    assert body["message"].endswith("user: hi\nassistant:")
    assert call.tool_names == NAMES


def test_tool_choice_none_sends_no_instruction() -> None:
    llm = ChatG4F(provider="Lockchat")
    call = llm._prepare([HumanMessage("hi")], None, True, {"tools": TOOLS, "tool_choice": "none"})
    assert TOOLS_MARKER not in call.request.body.decode()
    assert call.tool_names is None


class Joke(BaseModel):
    """A joke to tell the user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


def _bound_options(runnable: Any) -> dict[str, Any]:
    """The call options ``with_structured_output`` bound (its first step)."""
    return {k: v for k, v in runnable.first.kwargs.items() if not k.startswith("ls_")}


def test_json_mode_gives_an_emulated_model_the_schema() -> None:
    llm = ChatG4F(provider="Lockchat")
    options = _bound_options(llm.with_structured_output(Joke, method="json_mode"))
    call = llm._prepare([HumanMessage("Tell me a joke")], None, True, options)
    system = json.loads(call.request.body)["messages"][0]
    assert system["role"] == "system"
    head, schema = system["content"].split("\n", 2)[1:]
    assert head == f"{JSON_MARKER} that matches this JSON schema:"
    assert json.loads(schema)["required"] == ["setup", "punchline"]


def test_json_mode_sends_a_native_endpoint_no_schema() -> None:
    provider = OpenAICompatible("native", "http://127.0.0.1:9/v1", native_tools=True)
    llm = ChatG4F(provider=provider, model="m")
    options = _bound_options(llm.with_structured_output(Joke, method="json_mode"))
    body = json.loads(
        llm._prepare([HumanMessage("Tell me a joke")], None, True, options).request.body
    )
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["user"]


@pytest.mark.loopback
@pytest.mark.parametrize("name", ["Lockchat", "Aichat"])
def test_json_mode_answers_with_the_schema_keys_unprompted(replica: Replica, name: str) -> None:
    llm = ChatG4F(provider=name, base_url=replica.base_url(name))
    joke = llm.with_structured_output(Joke, method="json_mode").invoke("Tell me a joke about cats")
    assert isinstance(joke, Joke)
    assert joke.setup
    assert joke.punchline
