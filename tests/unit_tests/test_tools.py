"""Emulated and native tool calling: instructions, history, reply parsing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool as tool_decorator
from pydantic import BaseModel, Field

from langchain_g4f import ChatG4F, tools
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
    call = llm._prepare(
        [HumanMessage("hi")], None, stream=True, kwargs={"tools": TOOLS, "tool_choice": "add"}
    )
    body = json.loads(call.request.body)
    assert body["tools"] == TOOLS
    assert body["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert call.tool_names is None


def test_emulated_provider_gets_an_instruction() -> None:
    llm = ChatG4F(provider="Aichat")
    call = llm._prepare(
        [HumanMessage("hi")], None, stream=False, kwargs={"tools": TOOLS, "tool_choice": "any"}
    )
    body = json.loads(call.request.body)
    assert body["message"].startswith("system: # Tools\n" + TOOLS_MARKER)
    assert "at least one tool" in body["message"]
    assert body["message"].endswith("user: hi\nassistant:")
    assert call.tool_names == NAMES


def test_tool_choice_none_sends_no_instruction() -> None:
    llm = ChatG4F(provider="Lockchat")
    call = llm._prepare(
        [HumanMessage("hi")], None, stream=True, kwargs={"tools": TOOLS, "tool_choice": "none"}
    )
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
    call = llm._prepare([HumanMessage("Tell me a joke")], None, stream=True, kwargs=options)
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
        llm._prepare(
            [HumanMessage("Tell me a joke")], None, stream=True, kwargs=options
        ).request.body
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


# --- parse_tool_calls: the same results as before, in linear time ------------------------

_OLD_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_OLD_DECODER = json.JSONDecoder()


def _old_candidates(text: str) -> list[tuple[int, int, str]]:
    """The fenced blocks and JSON objects the quadratic parser tried, in its order."""
    candidates = [(m.start(), m.end(), m.group(1)) for m in _OLD_FENCE.finditer(text)]
    start = text.find("{")
    while start != -1:
        try:
            _, end = _OLD_DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            start = text.find("{", start + 1)
            continue
        candidates.append((start, end, text[start:end]))
        start = text.find("{", end)
    return sorted(candidates)


def _old_parse_tool_calls(text: str, names: set[str]) -> tuple[str, list[Any]] | None:
    """parse_tool_calls as it was: raw_decode tried at every ``{``, a lazy fence regex."""
    for begin, end, body in _old_candidates(text):
        try:
            obj = json.loads(body)
        except ValueError:
            continue
        calls = tools._calls_in(obj, names)
        if calls:
            rest = (text[:begin] + text[end:]).strip()
            return rest, [
                {"name": name, "args": args, "id": tool_call_id(name, args, i), "type": "tool_call"}
                for i, (name, args) in enumerate(calls)
            ]
    return None


_keys = st.sampled_from(["name", "tool_calls", "arguments", "args", "a", "n{", 'q"'])
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-99, 99) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_call = st.builds(
    lambda name, args, many: (
        {"tool_calls": [{"name": name, "arguments": args}]}
        if many
        else {"name": name, "arguments": args}
    ),
    st.sampled_from(["add", "get_weather", "other"]),
    st.dictionaries(_keys, _json, max_size=2) | st.text(max_size=5),
    st.booleans(),
)


@st.composite
def _piece(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["json", "call", "cut", "fence", "noise", "word"]))
    if kind in ("json", "call", "cut"):
        value = draw(_call if kind == "call" else _json)
        text = json.dumps(
            value, ensure_ascii=draw(st.booleans()), indent=draw(st.none() | st.just(1))
        )
        return text[: draw(st.integers(0, len(text)))] if kind == "cut" else text
    if kind == "fence":
        return draw(st.sampled_from(["```", "```json\n", "```JSON ", "```\n", "\n```"]))
    if kind == "noise":
        return draw(st.text(alphabet='{}[]":,\\ \n\tu0-e.E+NaIfinty`', max_size=12))
    return draw(st.sampled_from([" Sure. ", "NaN", "-Infinity", "true", "null", "1e5", "\\u0041"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(_piece(), max_size=12))
def test_parse_tool_calls_finds_what_the_quadratic_parser_found(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert sorted([*tools._fenced_blocks(text), *tools._json_objects(text)]) == _old_candidates(
        text
    )
    assert parse_tool_calls(text, NAMES) == _old_parse_tool_calls(text, NAMES)


PATHOLOGICAL = {
    "unclosed objects": '{"a":',
    "unclosed braces": "{",
    "nested arrays": "[",
    "small objects": '{"a": 1} ',
    "braces in a string": '{}{"',
    "keys with braces": '{":',
    "arrays in objects": '{"k":"v","a":[',
    "unclosed fences": "```json ",
}


class _Counting:
    """A compiled pattern that counts its matches and the characters they read."""

    def __init__(self, pattern: re.Pattern[str], seen: list[int]) -> None:
        self.pattern, self.seen = pattern, seen

    def match(self, text: str, pos: int = 0) -> re.Match[str] | None:
        found = self.pattern.match(text, pos)
        self.seen[0] += 1
        self.seen[1] += found.end() - pos if found else 0
        return found


@pytest.mark.parametrize("unit", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_parse_tool_calls_reads_a_text_a_bounded_number_of_times(
    unit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linear without timing: the parsing steps, and what they read, grow as the text."""
    seen = [0, 0]  # steps taken, characters they read
    monkeypatch.setattr(tools, "_FLAT_OBJECT", _Counting(tools._FLAT_OBJECT, seen))
    monkeypatch.setattr(tools, "_STEPS", {k: _Counting(v, seen) for k, v in tools._STEPS.items()})
    for size in (10_000, 40_000):
        text = '{"x": ' + unit * (size // len(unit))
        seen[:] = [0, 0]
        assert parse_tool_calls(text, NAMES) is None
        assert seen[0] <= len(text)
        assert seen[1] <= 3 * len(text)


def test_a_fenced_block_nested_too_deeply_is_plain_text() -> None:
    # json.loads of the fence's body used to raise RecursionError out of the parser
    assert parse_tool_calls("```json\n" + "[" * 100_000 + "\n```", NAMES) is None
    assert parse_tool_calls("```json\n" + '{"a":' * 100_000 + "\n```", NAMES) is None


def test_objects_nested_deeper_than_json_can_decode_are_skipped_not_fatal() -> None:
    call = json.dumps({"name": "add", "arguments": {"a": 1, "b": 2}})
    deep = '{"a": ' * 5_000 + "1" + "}" * 5_000
    assert parse_tool_calls(deep, NAMES) is None
    found = parse_tool_calls(f"{deep} then {call}", NAMES)
    assert found is not None
    assert found[0] == f"{deep} then"
    assert [c["name"] for c in found[1]] == ["add"]


def test_a_name_that_is_not_a_string_is_no_call() -> None:
    # an unhashable name used to raise TypeError out of the parser
    assert parse_tool_calls('{"name": []}', NAMES) is None
    assert parse_tool_calls('{"tool_calls": [{"name": {"x": 1}}]}', NAMES) is None


def test_stream_held_in_many_pieces_is_the_text_joined() -> None:
    stream = ToolReplyStream(NAMES)
    body = "Thinking {" + "x" * 1_000 + json.dumps(CALL)
    assert stream.push("Thinking ") == "Thinking "
    assert all(stream.push(body[i : i + 7]) == "" for i in range(9, len(body), 7))
    rest, calls = stream.finish()
    assert rest == "{" + "x" * 1_000
    assert [c["name"] for c in calls] == ["add"]


def test_a_native_call_without_a_name_is_an_invalid_call() -> None:
    calls, invalid = tools.native_message_calls([{"id": "c1", "function": {"arguments": "{}"}}])
    assert calls == []
    assert [(i["name"], i["id"], i["error"]) for i in invalid] == [
        (None, "c1", "the call names no function")
    ]


def test_a_tool_is_described_the_same_way_on_every_python() -> None:
    @tool_decorator
    def adder(a: int, b: int) -> int:
        """Add two integers.

        Takes two integers and returns their sum.
        """
        return a + b

    raw = {"type": "function", "function": {"name": "f", "description": "  One.\n    Two."}}
    [converted, kept] = tools.convert_tools([adder, raw])
    assert converted["function"]["description"] == (
        "Add two integers.\n\nTakes two integers and returns their sum."
    )
    assert kept["function"]["description"] == "One.\nTwo."
    assert raw["function"]["description"] == "  One.\n    Two."  # the caller's dict untouched
