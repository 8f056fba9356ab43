"""The replica as a small deterministic tool-using model, driven directly over HTTP.

Emulated tools and JSON instructions (system-message text, any route, Aichat's flattened
prompt included) and native ones (``tools``/``tool_choice``/``response_format`` on the
"openai" route).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from langchain_g4f.testing import Replica, reply_for
from langchain_g4f.testing.replica import args_for, respond

pytestmark = pytest.mark.loopback

MAGIC = {
    "name": "magic_function",
    "description": "Apply a magic function to an input.",
    "parameters": {
        "type": "object",
        "properties": {"input": {"type": "integer"}},
        "required": ["input"],
    },
}
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather at a location.",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "City and state"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}
COMPANY = {
    "name": "Company",
    "description": "A company.",
    "parameters": {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
    },
}
JOKE_SCHEMA = {
    "title": "Joke",
    "type": "object",
    "properties": {
        "setup": {"type": "string", "description": "question to set up a joke"},
        "punchline": {"type": "string", "description": "answer to resolve the joke"},
        "rating": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
    },
    "required": ["setup", "punchline"],
}
CHOICES = {
    "auto": "Call a tool only when it helps; otherwise answer in plain text.",
    "required": "You must call at least one tool now.",
}
PATHS = {
    "Aichat": "/api/text",
    "Mishalsgpt": "/api/openai/v1/chat/completions",
    "Gravityengine": "/api/openai/v1/chat/completions",
}
MODELS = {"Lockchat": "gpt-4", "Mishalsgpt": "gpt-3.5-turbo", "Gravityengine": "gpt-3.5-turbo-16k"}
WEATHER_Q = "What is the weather in San Francisco, CA?"
MAGIC_Q = "What is the value of magic_function(3)? Use the tool."


def tools_system(tools: list[dict], choice: str = "auto") -> str:
    choice_line = CHOICES.get(choice) or f'You must call the tool "{choice}" now.'
    return (
        "# Tools\n"
        "You can call these tools. Each is described by a JSON schema:\n"
        f"{json.dumps(tools, ensure_ascii=False)}\n\n"
        "To call tools, reply with nothing but one JSON object of this form:\n"
        '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}\n'
        f"{choice_line}\n"
        'Tool results come back in messages that begin with "Tool result". '
        "Then answer the user in plain text, or call tools again."
    )


def json_system(schema: dict | None = None) -> str:
    if schema is None:
        return "# Output format\nReply with nothing but one JSON object."
    return (
        "# Output format\nReply with nothing but one JSON object that matches this JSON "
        f"schema:\n{json.dumps(schema, ensure_ascii=False)}"
    )


def call_text(name: str, args: dict) -> str:
    return json.dumps({"tool_calls": [{"name": name, "arguments": args}]}, ensure_ascii=False)


def native(tool: dict) -> dict:
    return {"type": "function", "function": tool}


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture(autouse=True)
def _clean(replica: Replica) -> Iterator[None]:
    replica.reset()
    yield
    replica.reset()


def post(
    replica: Replica, session: requests.Session, provider: str, body: dict
) -> requests.Response:
    path = PATHS.get(provider, "/v1/chat/completions")
    response = session.post(replica.base_url(provider) + path, json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response


def events(response: requests.Response) -> list[dict]:
    out = [
        json.loads(line[6:])
        for line in response.content.decode("utf-8").split("\n")
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    assert response.content.decode("utf-8").rstrip().endswith("data: [DONE]")
    return out


def chat(
    replica: Replica,
    session: requests.Session,
    messages: list[dict],
    *,
    provider: str = "Lockchat",
    stream: bool = False,
    **extra: Any,
) -> str:
    """The text answer of an OpenAI-style route (the streamed pieces joined)."""
    model = MODELS.get(provider, "any-model")
    body = {"model": model, "messages": messages, "stream": stream, **extra}
    response = post(replica, session, provider, body)
    if not stream:
        return response.json()["choices"][0]["message"]["content"]
    parts = [
        c["choices"][0]["delta"].get("content") or "" for c in events(response) if c["choices"]
    ]
    return "".join(parts)


def aichat(replica: Replica, session: requests.Session, messages: list[dict]) -> str:
    lines = [f"{m['role']}: {m['content']}" for m in messages] + ["assistant:"]
    body = {"message": "\n".join(lines), "temperature": 1}
    obj = post(replica, session, "Aichat", body).json()
    assert obj["response"] is True
    return obj["message"]


# --------------------------------------------------------------------------- emulated


@pytest.mark.parametrize("stream", [False, True])
def test_emulated_call_on_lockchat(
    replica: Replica, session: requests.Session, stream: bool
) -> None:
    messages = [
        {"role": "system", "content": tools_system([MAGIC, WEATHER])},
        {"role": "user", "content": WEATHER_Q},
    ]
    text = chat(replica, session, messages, stream=stream)
    assert text == call_text("get_weather", {"location": "San Francisco, CA"})


def test_emulated_stream_arrives_in_pieces(replica: Replica, session: requests.Session) -> None:
    messages = [
        {"role": "system", "content": tools_system([MAGIC])},
        {"role": "user", "content": MAGIC_Q},
    ]
    body = {"model": "gpt-4", "messages": messages, "stream": True}
    chunks = events(post(replica, session, "Lockchat", body))
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks]
    pieces = [p for p in pieces if p]
    assert len(pieces) >= 3
    assert "".join(pieces) == call_text("magic_function", {"input": 3})
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_emulated_call_on_aichat(replica: Replica, session: requests.Session) -> None:
    messages = [
        {"role": "system", "content": "You are helpful.\n" + tools_system([MAGIC, WEATHER])},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi! How can I help?"},
        {"role": "user", "content": "Please:\n" + MAGIC_Q},
    ]
    assert aichat(replica, session, messages) == call_text("magic_function", {"input": 3})


def test_aichat_tool_result_is_the_final_answer(
    replica: Replica, session: requests.Session
) -> None:
    messages = [
        {"role": "system", "content": tools_system([MAGIC])},
        {"role": "user", "content": MAGIC_Q},
        {"role": "assistant", "content": call_text("magic_function", {"input": 3})},
        {"role": "user", "content": "Tool result for magic_function (call 1):\n5"},
    ]
    assert aichat(replica, session, messages) == "The tool returned: 5."


def test_aichat_without_tools_is_unchanged(replica: Replica, session: requests.Session) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Grüße\nzwei Zeilen"},
    ]
    expected = reply_for([{"role": "user", "content": "Grüße\nzwei Zeilen"}])
    assert aichat(replica, session, messages) == expected


@pytest.mark.parametrize(
    ("choice", "question", "expected"),
    [
        (
            "get_weather",
            "Hello there",
            call_text("get_weather", {"location": "location about there"}),
        ),
        ("magic_function", WEATHER_Q, call_text("magic_function", {"input": 0})),
        ("required", "Hello there", call_text("magic_function", {"input": 0})),
        ("required", WEATHER_Q, call_text("get_weather", {"location": "San Francisco, CA"})),
        ("auto", "Hello there", reply_for([{"role": "user", "content": "Hello there"}])),
        ("auto", MAGIC_Q, call_text("magic_function", {"input": 3})),
    ],
)
def test_emulated_choices(
    replica: Replica, session: requests.Session, choice: str, question: str, expected: str
) -> None:
    messages = [
        {"role": "system", "content": tools_system([MAGIC, WEATHER], choice)},
        {"role": "user", "content": question},
    ]
    assert chat(replica, session, messages, provider="Mishalsgpt") == expected


@pytest.mark.parametrize("stream", [False, True])
def test_emulated_tool_result(replica: Replica, session: requests.Session, stream: bool) -> None:
    messages = [
        {"role": "system", "content": tools_system([MAGIC])},
        {"role": "user", "content": MAGIC_Q},
        {
            "role": "assistant",
            "content": "Let me see.\n" + call_text("magic_function", {"input": 3}),
        },
        {
            "role": "user",
            "content": "Tool result for magic_function (call 1) [error]:\nboom " + "x" * 300,
        },
    ]
    text = chat(replica, session, messages, stream=stream)
    assert text == "The tool returned: " + ("boom " + "x" * 300)[:200] + "."


def test_unicode_argument_preserved(replica: Replica, session: requests.Session) -> None:
    messages = [
        {"role": "system", "content": tools_system([COMPANY], "Company")},
        {"role": "user", "content": "创建一个名为'你好啊集团'的公司"},
    ]
    response = post(replica, session, "Lockchat", {"model": "gpt-4", "messages": messages})
    text = response.json()["choices"][0]["message"]["content"]
    assert text == '{"tool_calls": [{"name": "Company", "arguments": {"name": "你好啊集团"}}]}'
    assert "你好啊集团".encode() in response.content


# --------------------------------------------------------------------------- native


def test_native_call(replica: Replica, session: requests.Session) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": WEATHER_Q}],
        "tools": [native(MAGIC), native(WEATHER)],
    }
    obj = post(replica, session, "openai", body).json()
    choice = obj["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] is None
    arguments = '{"location": "San Francisco, CA"}'
    digest = hashlib.sha1(("get_weather" + arguments).encode(), usedforsecurity=False).hexdigest()[
        :24
    ]
    assert message["tool_calls"] == [
        {
            "id": f"call_{digest}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
    ]


def test_native_stream_assembles(replica: Replica, session: requests.Session) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "创建一个名为'你好啊集团'的公司"}],
        "tools": [native(COMPANY)],
        "tool_choice": {"type": "function", "function": {"name": "Company"}},
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = events(post(replica, session, "openai", body))
    first = chunks[0]["choices"][0]["delta"]
    assert first["role"] == "assistant"
    assert first["content"] is None
    head = first["tool_calls"][0]
    assert head["index"] == 0
    assert head["type"] == "function"
    assert head["id"].startswith("call_")
    assert len(head["id"]) == 29
    assert head["function"] == {"name": "Company", "arguments": ""}
    pieces = []
    for chunk in chunks[1:]:
        if not chunk["choices"] or "tool_calls" not in chunk["choices"][0]["delta"]:
            break
        (part,) = chunk["choices"][0]["delta"]["tool_calls"]
        assert part["index"] == 0
        pieces.append(part["function"]["arguments"])
    assert 2 <= len(pieces) <= 3
    assert "".join(pieces) == '{"name": "你好啊集团"}'
    end = chunks[1 + len(pieces)]
    assert end["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_native_choice_none_and_required(replica: Replica, session: requests.Session) -> None:
    messages = [{"role": "user", "content": MAGIC_Q}]
    base = {"model": "m", "messages": messages, "tools": [native(MAGIC)]}
    obj = post(replica, session, "openai", {**base, "tool_choice": "none"}).json()
    assert obj["choices"][0]["message"]["content"] == reply_for(messages)
    assert obj["choices"][0]["finish_reason"] == "stop"
    other = [{"role": "user", "content": "Hi"}]
    obj = post(
        replica, session, "openai", {**base, "messages": other, "tool_choice": "required"}
    ).json()
    call = obj["choices"][0]["message"]["tool_calls"][0]["function"]
    assert call == {"name": "magic_function", "arguments": '{"input": 0}'}
    obj = post(replica, session, "openai", {**base, "messages": other}).json()
    assert obj["choices"][0]["message"]["content"] == reply_for(other)


def test_native_tool_result(replica: Replica, session: requests.Session) -> None:
    messages = [
        {"role": "user", "content": MAGIC_Q},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "magic_function", "arguments": '{"input": 3}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]
    tools = [native(MAGIC)]
    for stream in (False, True):
        text = chat(replica, session, messages, provider="openai", stream=stream, tools=tools)
        assert text == "The tool returned: 5."


def test_native_tools_ignored_off_the_openai_route(
    replica: Replica, session: requests.Session
) -> None:
    messages = [{"role": "user", "content": MAGIC_Q}]
    text = chat(replica, session, messages, tools=[native(MAGIC)], tool_choice="required")
    assert text == reply_for(messages)


def test_script_and_faults_apply_to_tool_calls(replica: Replica, session: requests.Session) -> None:
    messages = [{"role": "user", "content": MAGIC_Q}]
    body = {"model": "m", "messages": messages, "tools": [native(MAGIC)], "stream": True}
    replica.set_reply("openai", "scripted")
    kwargs = {"provider": "openai", "stream": True, "tools": [native(MAGIC)]}
    assert chat(replica, session, messages, **kwargs) == "scripted"
    replica.set_reply("openai", None)
    replica.set_fault("openai", "error_event", times=1, after_chunks=1)
    text = post(replica, session, "openai", body).content.decode()
    assert text.count("tool_calls") == 1
    assert "upstream overloaded" in text
    replica.set_fault("openai", "empty", times=1)
    assert chat(replica, session, messages, **kwargs) == ""


# --------------------------------------------------------------------------- JSON output


def test_emulated_json_with_schema(replica: Replica, session: requests.Session) -> None:
    messages = [
        {"role": "system", "content": json_system(JOKE_SCHEMA)},
        {"role": "user", "content": "Tell me a joke about cats."},
    ]
    text = chat(replica, session, messages, stream=True)
    assert json.loads(text) == {"setup": "setup about cats", "punchline": "punchline about cats"}
    messages[1]["content"] = "Tell me a joke about cats with a rating of 7."
    assert json.loads(aichat(replica, session, messages))["rating"] == 7


def test_emulated_json_without_schema(replica: Replica, session: requests.Session) -> None:
    question = "Tell me a joke about cats. Respond in JSON with 'setup' and 'punchline' keys."
    messages = [
        {"role": "system", "content": json_system()},
        {"role": "user", "content": question},
    ]
    text = chat(replica, session, messages, provider="Gravityengine")
    assert text == '{"setup": "setup about cats", "punchline": "punchline about cats"}'
    plain = [messages[0], {"role": "user", "content": "Hi"}]
    answer = json.loads(chat(replica, session, plain))
    assert answer == {"answer": reply_for(plain)}


def test_native_json(replica: Replica, session: requests.Session) -> None:
    messages = [{"role": "user", "content": "Tell me a joke about dogs."}]
    fmt = {"type": "json_schema", "json_schema": {"name": "Joke", "schema": JOKE_SCHEMA}}
    text = chat(replica, session, messages, provider="openai", response_format=fmt)
    assert json.loads(text) == {"setup": "setup about dogs", "punchline": "punchline about dogs"}
    fmt = {"type": "json_object"}
    text = chat(replica, session, messages, provider="openai", stream=True, response_format=fmt)
    assert json.loads(text) == {"answer": reply_for(messages)}
    # the native field is for the openai route only
    text = chat(replica, session, messages, response_format=fmt)
    assert text == reply_for(messages)


def test_tools_win_over_json(replica: Replica, session: requests.Session) -> None:
    messages = [
        {"role": "system", "content": tools_system([MAGIC]) + "\n\n" + json_system()},
        {"role": "user", "content": MAGIC_Q},
    ]
    assert chat(replica, session, messages) == call_text("magic_function", {"input": 3})


# --------------------------------------------------------------------------- args_for


def test_args_for_ref_and_any_of() -> None:
    schema = {
        "type": "object",
        "$defs": {
            "Point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "tags": {"items": {"type": "string"}}},
                "required": ["x", "tags"],
            },
            "Unit": {"enum": ["km", "mi"]},
        },
        "properties": {
            "start": {"$ref": "#/$defs/Point"},
            "end": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Point"}]},
            "unit": {"allOf": [{"$ref": "#/$defs/Unit"}]},
            "count": {"oneOf": [{"type": "integer"}, {"type": "null"}]},
            "city": {"type": "string"},
            "flag": {"type": "boolean"},
            "note": {"type": "string"},
        },
        "required": ["start", "end", "unit", "count", "city", "flag"],
    }
    text = "Route from 'home' 2.5 km to the end, in Lyon."
    assert args_for(schema, text) == {
        "start": {"x": 2.5, "tags": ["home"]},
        "end": {"x": 2.5, "tags": ["home"]},
        "unit": "km",
        "count": 2,
        "city": "home",
        "flag": True,
    }
    assert args_for(schema, "Go to Lyon")["city"] == "city about Lyon"
    assert args_for(schema, "Weather in Lyon?")["city"] == "Lyon"
    legacy = {
        "definitions": {"N": {"type": "integer"}},
        "properties": {"n": {"$ref": "#/definitions/N"}, "m": {"type": "integer"}},
        "required": ["n"],
    }
    assert args_for(legacy, "nothing") == {"n": 0}
    assert args_for({"name": "t", "parameters": legacy}, "set m to -4") == {"n": -4, "m": -4}


def test_respond_is_a_pure_function() -> None:
    messages = [
        {"role": "system", "content": tools_system([MAGIC, WEATHER])},
        {"role": "user", "content": "Tell me the weather in Paris."},
    ]
    first = respond(messages)
    assert first == respond(json.loads(json.dumps(messages)))
    assert first == {"text": call_text("get_weather", {"location": "Paris"})}
    assert respond([{"role": "user", "content": "Tool results: none"}]) == {
        "text": reply_for([{"role": "user", "content": "Tool results: none"}])
    }


def test_redirect_providers_points_seed_providers_at_the_replica_and_back(
    replica: Replica,
) -> None:
    from langchain_g4f import ChatG4F, providers

    before = {p.name: p.url for p in providers.all_providers()}
    with replica.redirect_providers():
        assert ChatG4F(provider="Lockchat").invoke("Hi").content
        assert replica.requests[-1]["provider"] == "lockchat"
        assert all(p.url.startswith(replica.url) for p in providers.all_providers())
    assert {p.name: p.url for p in providers.all_providers()} == before


def test_redirected_urls_follow_refuse_faults_set_later(replica: Replica) -> None:
    from langchain_g4f import ChatG4F
    from langchain_g4f.errors import ProviderConnectionError

    replica.reset()
    with replica.redirect_providers():
        replica.set_fault("Lockchat", "refuse")
        with pytest.raises(ProviderConnectionError, match="refused"):
            ChatG4F(provider="Lockchat", max_retries=0).invoke("Hi")
        replica.set_fault("Lockchat", None)
        assert ChatG4F(provider="Lockchat").invoke("Hi").content
        with pytest.raises(RuntimeError, match="already redirected"):
            replica.redirect_providers().start()
