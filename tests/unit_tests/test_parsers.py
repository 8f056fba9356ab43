"""The sans-I/O half: request building and response parsing, fed bytes directly.

Nothing here opens a socket (pytest-socket would refuse it anyway).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from langchain_g4f import ChatG4F, providers
from langchain_g4f._messages import StopScanner
from langchain_g4f.errors import (
    ConfigurationError,
    HTMLResponseError,
    MalformedResponseError,
    ProviderResponseError,
    UnknownProviderError,
    UnsupportedModelError,
)
from langchain_g4f.providers import (
    Aichat,
    Delta,
    Gravityengine,
    Lockchat,
    Mishalsgpt,
    OpenAICompatible,
    Provider,
    SSEParser,
)
from langchain_g4f.providers.base import HTTPRequest
from langchain_g4f.providers.openai import parse_completion

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Grüße — 2 + 2?"},
]
HTML = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body>Checking your browser</body></html>"
)


# --------------------------------------------------------------------------- helpers


def event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def chunk(
    content: Any = None,
    *,
    role: str | None = None,
    finish: str | None = None,
    model: str = "gpt-4",
    omit_content: bool = False,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if not omit_content:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def completion(content: Any = "Hi there", usage: Any = None, **extra: Any) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-3.5-turbo",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        **extra,
    }
    if usage is not None:
        obj["usage"] = usage
    return json.dumps(obj).encode()


def run(parser: Any, *pieces: bytes) -> list[Delta]:
    """Feed every piece, then close; all the deltas."""
    out: list[Delta] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    out.extend(parser.close())
    return out


def text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def sse_parser() -> SSEParser:
    parser = Lockchat.stream_parser()
    assert isinstance(parser, SSEParser)
    return parser


@pytest.fixture(params=["Lockchat", "OpenAICompatible"])
def new_parser(request: pytest.FixtureRequest) -> Any:
    """A factory of SSE parsers from a seed provider and from ``OpenAICompatible``."""
    if request.param == "Lockchat":
        return Lockchat.stream_parser
    return OpenAICompatible("local", "http://127.0.0.1:1/v1").stream_parser


FULL_STREAM = (
    event(chunk("", role="assistant"))
    + event(chunk("Hello"))
    + event(chunk(" wörld"))
    + event(chunk(None, finish="stop"))
    + b"data: [DONE]\n\n"
)


# --------------------------------------------------------------------------- SSE


def test_sse_whole_stream(new_parser: Any) -> None:
    deltas = run(new_parser(), FULL_STREAM)
    assert text(deltas) == "Hello wörld"
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].model == "gpt-4"


@pytest.mark.parametrize("split", range(1, 4))
def test_sse_multibyte_character_split_across_feeds(split: int) -> None:
    data = event(chunk("€ and 😀"))
    # The euro sign is 3 bytes, the emoji 4: split inside each of them.
    for char in ("€", "😀"):
        start = data.index(char.encode())
        parser = sse_parser()
        deltas = parser.feed(data[: start + split])
        deltas += parser.feed(data[start + split :] + b"data: [DONE]\n")
        deltas += parser.close()
        assert text(deltas) == "€ and 😀"


def test_sse_fed_one_byte_at_a_time(new_parser: Any) -> None:
    assert text(run(new_parser(), *byte_by_byte(FULL_STREAM))) == "Hello wörld"


@pytest.mark.parametrize("prefix", [b"data: ", b"data:", b"data:  "])
def test_sse_data_with_and_without_space(prefix: bytes) -> None:
    body = prefix + json.dumps(chunk("x")).encode() + b"\n\n" + prefix + b"[DONE]\n\n"
    assert text(run(sse_parser(), body)) == "x"


def test_sse_crlf_line_endings() -> None:
    body = FULL_STREAM.replace(b"\n", b"\r\n")
    assert text(run(sse_parser(), body)) == "Hello wörld"
    # ... also when a CR and its LF arrive in different reads.
    assert text(run(sse_parser(), *byte_by_byte(body))) == "Hello wörld"


def test_sse_skips_comments_blank_lines_and_other_fields() -> None:
    body = (
        b": keep-alive\n\n"
        b":\n"
        b"\n\n\n"
        b"event: message\n"
        b"id: 42\n"
        b"retry: 1000\n"
        + event(chunk("one"))
        + b": keep-alive\r\n\r\n"
        + b"event: completion\r\nid: 43\r\n"
        + event(chunk(" two"))
        + b"data: [DONE]\n\n"
    )
    assert text(run(sse_parser(), body)) == "one two"


def test_sse_done_ends_the_stream() -> None:
    parser = sse_parser()
    assert text(parser.feed(event(chunk("only")) + b"data: [DONE]\n\n")) == "only"
    assert parser.close() == []


def test_sse_done_without_trailing_newline_is_read_at_close() -> None:
    parser = sse_parser()
    parser.feed(event(chunk("only")) + b"data: [DONE]")
    assert parser.close() == []


def test_sse_null_or_missing_content_and_role_only_chunk() -> None:
    body = (
        event(chunk(None, role="assistant"))
        + event(chunk(omit_content=True, role="assistant"))
        + event(chunk(None))
        + event(chunk(omit_content=True))
        + event(chunk("text"))
        + b"data: [DONE]\n\n"
    )
    deltas = run(sse_parser(), body)
    assert [d.text for d in deltas] == ["text"]


def test_sse_records_finish_reason_and_model() -> None:
    body = event(chunk("a")) + event(chunk("b", finish="length", model="gpt-4-0613"))
    deltas = run(sse_parser(), body)  # no [DONE]: the finish_reason ends it
    assert text(deltas) == "ab"
    last = deltas[-1]
    assert last.finish_reason == "length"
    assert last.model == "gpt-4-0613"
    assert last.text == "b"


def test_sse_usage_chunk() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    body = (
        event(chunk("a", finish="stop"))
        + event({"object": "chat.completion.chunk", "choices": [], "usage": usage})
        + b"data: [DONE]\n\n"
    )
    deltas = run(sse_parser(), body)
    assert deltas[-1].usage == {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    assert deltas[-1].text == ""


def test_sse_usage_total_is_computed_when_missing() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 3}
    body = event({"choices": [], "usage": usage}) + b"data: [DONE]\n\n"
    assert run(sse_parser(), body)[-1].usage == {
        "input_tokens": 7,
        "output_tokens": 3,
        "total_tokens": 10,
    }


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "7", "completion_tokens": "3", "total_tokens": "10"},
        {"prompt_tokens": 7.0, "completion_tokens": 3.0},
        {"prompt_tokens": True, "completion_tokens": 3},
        {"prompt_tokens": None, "completion_tokens": None},
        {"completion_tokens": 3},
        "7 tokens",
        None,
    ],
)
def test_sse_non_integer_usage_is_ignored(usage: Any) -> None:
    body = (
        event(chunk("a", finish="stop"))
        + event({"choices": [], "usage": usage})
        + b"data: [DONE]\n\n"
    )
    deltas = run(sse_parser(), body)
    assert all(d.usage is None for d in deltas)
    assert text(deltas) == "a"


@pytest.mark.parametrize(
    "error",
    [
        {"message": "upstream overloaded", "type": "server_error"},
        "upstream overloaded",
    ],
)
def test_sse_error_event_raises(new_parser: Any, error: Any) -> None:
    parser = new_parser()
    assert text(parser.feed(event(chunk("partial")))) == "partial"
    with pytest.raises(ProviderResponseError) as info:
        parser.feed(event({"error": error}))
    assert info.value.provider == parser.provider
    assert "upstream overloaded" in str(info.value)
    assert parser.provider in str(info.value)


def test_sse_error_event_code() -> None:
    with pytest.raises(ProviderResponseError) as info:
        run(sse_parser(), event({"error": {"message": "no", "code": "model_not_found"}}))
    assert info.value.code == "model_not_found"
    assert info.value.provider == "Lockchat"


@pytest.mark.parametrize(
    "line",
    [
        b'data: {"choices": [{"delta": {"cont\n\n',
        b"data: {not json}\n\n",
        b'data: {"choices": [{"delta": {"content": "a"}}]\n\n',
        b"data: [1, 2]\n\n",
        b'data: "text"\n\n',
    ],
)
def test_sse_bad_json_in_data_line(line: bytes) -> None:
    parser = sse_parser()
    parser.feed(event(chunk("ok")))
    with pytest.raises(MalformedResponseError) as info:
        parser.feed(line)
    assert info.value.provider == "Lockchat"


def test_sse_truncated_json_at_end_of_body() -> None:
    parser = sse_parser()
    parser.feed(event(chunk("ok")) + b'data: {"choices": [{"delta": {"cont')
    with pytest.raises(MalformedResponseError):
        parser.close()


def test_sse_stream_ending_without_done_or_finish_reason() -> None:
    parser = sse_parser()
    assert text(parser.feed(event(chunk("Hello")) + event(chunk(" there")))) == "Hello there"
    with pytest.raises(MalformedResponseError) as info:
        parser.close()
    assert type(info.value) is MalformedResponseError
    assert info.value.provider == "Lockchat"


def test_sse_empty_body_is_incomplete() -> None:
    with pytest.raises(MalformedResponseError):
        run(sse_parser(), b"")


def test_sse_finish_reason_without_done_closes_fine() -> None:
    deltas = run(sse_parser(), event(chunk("Hi")) + event(chunk(None, finish="stop")))
    assert text(deltas) == "Hi"
    assert deltas[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    "pieces",
    [
        [HTML],  # one line, no newline: found at close
        [HTML + b"\n"],
        [b"\n  " + HTML.replace(b"><", b">\n<") + b"\n"],
        byte_by_byte(HTML + b"\n"),
    ],
    ids=["no-newline", "one-line", "multi-line", "bytewise"],
)
def test_sse_html_page_raises(pieces: list[bytes]) -> None:
    with pytest.raises(HTMLResponseError) as info:
        run(sse_parser(), *pieces)
    assert info.value.provider == "Lockchat"


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_sse_plain_json_error_object_raises(newline: bytes) -> None:
    body = json.dumps({"error": {"message": "Invalid key", "code": "bad_key"}}).encode()
    with pytest.raises(ProviderResponseError) as info:
        run(sse_parser(), body + newline)
    assert "Invalid key" in str(info.value)
    assert info.value.code == "bad_key"
    assert info.value.provider == "Lockchat"


def test_sse_bare_text_line_is_reported_at_close() -> None:
    parser = sse_parser()
    assert parser.feed(b"The model: `gpt-4` does not exist\n") == []
    with pytest.raises(ProviderResponseError) as info:
        parser.close()
    assert "The model: `gpt-4` does not exist" in str(info.value)
    assert info.value.provider == "Lockchat"


def test_sse_bare_text_without_newline_is_reported_at_close() -> None:
    with pytest.raises(ProviderResponseError, match="does not exist"):
        run(sse_parser(), b"The model: `gpt-4` does not exist")


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_sse_plain_completion_object_yields_its_text(newline: bytes) -> None:
    deltas = run(sse_parser(), completion("Hello wörld") + newline)
    assert text(deltas) == "Hello wörld"
    assert deltas[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    "obj",
    [{"choices": ["oops"]}, {"choices": [{"delta": "oops"}]}],
    ids=["choice-not-object", "delta-not-object"],
)
def test_sse_chunk_with_non_object_choice_is_malformed(obj: Any) -> None:
    with pytest.raises(MalformedResponseError):
        run(sse_parser(), event(obj) + b"data: [DONE]\n\n")


def test_sse_non_string_content_never_becomes_delta_text() -> None:
    body = event(chunk(5)) + event(chunk(["a"], finish="stop")) + b"data: [DONE]\n\n"
    try:
        deltas = run(sse_parser(), body)
    except MalformedResponseError:
        return  # refusing the chunk is fine too
    assert all(isinstance(d.text, str) for d in deltas)


# --------------------------------------------------------------------------- whole bodies


def test_parse_completion_normal_object() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    [delta] = parse_completion("Mishalsgpt", completion("Hello wörld", usage))
    assert delta.text == "Hello wörld"
    assert delta.finish_reason == "stop"
    assert delta.model == "gpt-3.5-turbo"
    assert delta.usage == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}


def test_parse_body_normal_object() -> None:
    [delta] = Mishalsgpt.parse_body(completion("Hi"))
    assert delta.text == "Hi"
    assert delta.usage is None


def test_parse_completion_null_content() -> None:
    [delta] = Mishalsgpt.parse_body(completion(None))
    assert delta.text == ""
    assert delta.finish_reason == "stop"


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "5", "completion_tokens": "2", "total_tokens": "7"},
        {"prompt_tokens": 5.5, "completion_tokens": 2},
        {"prompt_tokens": 5},
        [5, 2],
    ],
)
def test_parse_completion_ignores_non_integer_usage(usage: Any) -> None:
    [delta] = Mishalsgpt.parse_body(completion("Hi", usage))
    assert delta.usage is None


@pytest.mark.parametrize(
    "body",
    [
        {"id": "x", "object": "chat.completion"},
        {"choices": []},
        {"choices": None},
        {"choices": ["text"]},
        {"choices": [{"index": 0}]},
        {"choices": [{"message": "text"}]},
        [],
        "text",
        None,
    ],
)
def test_parse_completion_without_usable_choices(body: Any) -> None:
    with pytest.raises(MalformedResponseError) as info:
        Mishalsgpt.parse_body(json.dumps(body).encode())
    assert type(info.value) is MalformedResponseError
    assert info.value.provider == "Mishalsgpt"


def test_parse_completion_error_object() -> None:
    body = {
        "error": {
            "message": "The model `gpt-5` does not exist",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }
    with pytest.raises(ProviderResponseError) as info:
        Mishalsgpt.parse_body(json.dumps(body).encode())
    assert info.value.code == "model_not_found"
    assert info.value.provider == "Mishalsgpt"
    assert "The model `gpt-5` does not exist" in str(info.value)


def test_parse_completion_error_object_code_falls_back_to_type() -> None:
    body = {"error": {"message": "slow down", "type": "rate_limit"}}
    with pytest.raises(ProviderResponseError) as info:
        Gravityengine.parse_body(json.dumps(body).encode())
    assert info.value.code == "rate_limit"
    assert info.value.provider == "Gravityengine"


@pytest.mark.parametrize(
    "body",
    [
        completion("Hello")[:40],
        b"",
        b"not json",
        b'{"choices": [}',
        b'{"choices": [{"message": {"content": "\xff"}}]}',  # not UTF-8
    ],
)
def test_parse_completion_bad_json(body: bytes) -> None:
    with pytest.raises(MalformedResponseError) as info:
        Mishalsgpt.parse_body(body)
    assert type(info.value) is MalformedResponseError
    assert info.value.provider == "Mishalsgpt"


@pytest.mark.parametrize(
    "body", [HTML, b"  \n<html><body>502</body></html>", b"<HTML><BODY>x</BODY></HTML>"]
)
def test_parse_completion_html(body: bytes) -> None:
    with pytest.raises(HTMLResponseError) as info:
        parse_completion("Mishalsgpt", body)
    assert info.value.provider == "Mishalsgpt"


# --------------------------------------------------------------------------- Aichat


def test_aichat_success() -> None:
    [delta] = Aichat.parse_body(b'{"response": true, "message": "hi"}')
    assert delta.text == "hi"
    assert delta.finish_reason == "stop"


@pytest.mark.parametrize("response", ["false", "null", '"true"', "1"])
def test_aichat_failure(response: str) -> None:
    body = b'{"response": %s, "message": "quota exceeded"}' % response.encode()
    with pytest.raises(ProviderResponseError) as info:
        Aichat.parse_body(body)
    assert "quota exceeded" in str(info.value)
    assert info.value.provider == "Aichat"


@pytest.mark.parametrize(
    "body",
    [b'{"message": "hi"}', b"{}", b'["hi"]', b'"hi"', b'{"response": true, "message": 5}'],
)
def test_aichat_malformed(body: bytes) -> None:
    with pytest.raises(MalformedResponseError) as info:
        Aichat.parse_body(body)
    assert type(info.value) is MalformedResponseError
    assert info.value.provider == "Aichat"


def test_aichat_truncated_json() -> None:
    with pytest.raises(MalformedResponseError):
        Aichat.parse_body(b'{"response": true, "mess')


def test_aichat_html() -> None:
    with pytest.raises(HTMLResponseError) as info:
        Aichat.parse_body(HTML)
    assert info.value.provider == "Aichat"


# --------------------------------------------------------------------------- parser choice


def request_for(provider: Provider, *, stream: bool) -> HTTPRequest:
    return provider.build_request(provider.model[0], MESSAGES, stream=stream)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("content_type", ["text/html", "text/html; charset=utf-8"])
def test_parser_refuses_an_html_page(stream: bool, content_type: str) -> None:
    parser = Mishalsgpt.parser(request_for(Mishalsgpt, stream=stream), content_type)
    with pytest.raises(HTMLResponseError):
        run(parser, *byte_by_byte(HTML))


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("content_type", ["text/html", "text/plain", ""])
def test_json_answer_under_another_label_is_read_as_json(stream: bool, content_type: str) -> None:
    parser = Mishalsgpt.parser(request_for(Mishalsgpt, stream=stream), content_type)
    assert text(run(parser, *byte_by_byte(b"\n " + completion("Hi")))) == "Hi"


@pytest.mark.parametrize("prefix", [b"", b"\xef\xbb\xbf", b"\r\n  ", b"\xef\xbb\xbf\n"])
@pytest.mark.parametrize("content_type", ["application/json", "text/html; charset=utf-8", ""])
@pytest.mark.parametrize("split", [False, True])
def test_event_stream_under_another_label_is_read_as_events(
    prefix: bytes, content_type: str, split: bool
) -> None:
    parser = Mishalsgpt.parser(request_for(Mishalsgpt, stream=True), content_type)
    body = prefix + FULL_STREAM
    pieces = byte_by_byte(body) if split else [body]
    assert text(run(parser, *pieces)) == "Hello wörld"


def test_text_body_under_json_label_is_still_malformed() -> None:
    parser = Mishalsgpt.parser(request_for(Mishalsgpt, stream=False), "application/json")
    with pytest.raises(MalformedResponseError):
        run(parser, b"Internal error")


@pytest.mark.parametrize("content_type", ["text/event-stream", "text/event-stream; charset=utf-8"])
def test_parser_picks_sse_parser_for_a_streaming_request(content_type: str) -> None:
    parser = Mishalsgpt.parser(request_for(Mishalsgpt, stream=True), content_type)
    assert isinstance(parser, SSEParser)
    assert text(run(parser, FULL_STREAM)) == "Hello wörld"


@pytest.mark.parametrize("stream", [True, False])
def test_parser_reads_a_json_body(stream: bool) -> None:
    parser = Mishalsgpt.parser(request_for(Mishalsgpt, stream=stream), "application/json")
    assert text(run(parser, *byte_by_byte(completion("Hi")))) == "Hi"


def test_parser_for_non_streaming_request_reads_a_body() -> None:
    parser = Mishalsgpt.parser(request_for(Mishalsgpt, stream=False), "text/plain")
    with pytest.raises(MalformedResponseError, match="not valid JSON"):
        run(parser, b"Hi")


def test_parser_for_aichat_stream_call_reads_a_body() -> None:
    """Aichat cannot stream: a streaming call asks for (and parses) one body."""
    request = request_for(Aichat, stream=True)
    assert request.stream is False
    parser = Aichat.parser(request, "application/json")
    assert text(run(parser, b'{"response": true, "message": "hi"}')) == "hi"


# --------------------------------------------------------------------------- requests


def body_of(request: HTTPRequest) -> dict[str, Any]:
    return json.loads(request.body)


@pytest.mark.parametrize(
    ("provider", "url"),
    [
        (Mishalsgpt, "https://mishalsgpt.vercel.app/api/openai/v1/chat/completions"),
        (Gravityengine, "https://gpt4.gravityengine.cc/api/openai/v1/chat/completions"),
        (
            Lockchat,
            "http://super.lockchat.app/v1/chat/completions?auth=FnMNPlwZEnGFqvEc9470Vw==",
        ),
        (Aichat, "https://chat-gpt.org/api/text"),
    ],
)
def test_canonical_url(provider: Provider, url: str) -> None:
    for stream in (False, True):
        request = request_for(provider, stream=stream)
        assert request.method == "POST"
        assert request.url == url


@pytest.mark.parametrize(
    ("provider", "path"),
    [
        (Mishalsgpt, "/api/openai/v1/chat/completions"),
        (Gravityengine, "/api/openai/v1/chat/completions"),
        (Lockchat, "/v1/chat/completions"),
        (Aichat, "/api/text"),
    ],
)
@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x/", "http://127.0.0.1:8080/x//"],
)
def test_base_url_override(provider: Provider, path: str, base_url: str) -> None:
    request = provider.build_request(provider.model[0], MESSAGES, stream=False, base_url=base_url)
    assert request.url == "http://127.0.0.1:8080/x" + path
    # The override is per request: the provider keeps its own URL.
    assert request_for(provider, stream=False).url.startswith(provider.url)


def test_headers() -> None:
    for provider in (Mishalsgpt, Gravityengine):
        assert request_for(provider, stream=False).headers == {"Content-Type": "application/json"}
    lockchat = request_for(Lockchat, stream=False).headers
    assert lockchat["user-agent"] == "ChatX/39 CFNetwork/1408.0.4 Darwin/22.5.0"
    assert lockchat["Content-Type"] == "application/json"
    aichat = request_for(Aichat, stream=False).headers
    assert aichat["origin"] == "https://chat-gpt.org"
    assert aichat["referer"].startswith("https://chat-gpt.org")
    assert aichat["accept"] == "*/*"
    assert "Chrome/" in aichat["user-agent"]
    assert aichat["content-type"] == "application/json"


@pytest.mark.parametrize("provider", [Mishalsgpt, Gravityengine, Lockchat, Aichat])
def test_no_authorization_without_api_key(provider: Provider) -> None:
    headers = request_for(provider, stream=False).headers
    assert "authorization" not in {name.lower() for name in headers}


@pytest.mark.parametrize("provider", [Mishalsgpt, Gravityengine, Lockchat, Aichat])
def test_api_key_is_sent_as_bearer(provider: Provider) -> None:
    request = provider.build_request(
        provider.model[0], MESSAGES, stream=False, api_key="sk-test-123"
    )
    assert request.headers["Authorization"] == "Bearer sk-test-123"
    assert b"sk-test-123" not in request.body
    # The class-level headers are not touched.
    assert "Authorization" not in provider.headers


def test_mishalsgpt_body() -> None:
    model = "gpt-3.5-turbo-16k-0613"
    request = Mishalsgpt.build_request(model, MESSAGES, stream=False)
    assert body_of(request) == {"model": model, "temperature": 0.7, "messages": MESSAGES}
    assert request.stream is False
    request = Mishalsgpt.build_request(model, MESSAGES, stream=True)
    assert body_of(request) == {
        "model": model,
        "temperature": 0.7,
        "messages": MESSAGES,
        "stream": True,
    }
    assert request.stream is True


def test_gravityengine_body() -> None:
    model = "gpt-3.5-turbo-0613"
    request = Gravityengine.build_request(model, MESSAGES, stream=False)
    assert body_of(request) == {
        "model": model,
        "temperature": 0.7,
        "presence_penalty": 0,
        "messages": MESSAGES,
    }
    assert body_of(Gravityengine.build_request(model, MESSAGES, stream=True))["stream"] is True


@pytest.mark.parametrize("stream", [False, True])
def test_lockchat_body_always_streams(stream: bool) -> None:
    request = Lockchat.build_request("gpt-4", MESSAGES, stream=stream)
    assert body_of(request) == {
        "model": "gpt-4",
        "temperature": 0.7,
        "messages": MESSAGES,
        "stream": True,
    }
    assert request.stream is True


def test_lockchat_temperature_is_the_callers() -> None:
    request = Lockchat.build_request("gpt-4", MESSAGES, stream=False, temperature=0.2)
    assert body_of(request)["temperature"] == 0.2


@pytest.mark.parametrize("stream", [False, True])
def test_aichat_body(stream: bool) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Grüße — 2 + 2?"},
    ]
    request = Aichat.build_request("gpt-3.5-turbo", messages, stream=stream)
    assert request.stream is False
    assert body_of(request) == {
        "message": (
            "system: Be brief.\nuser: Hi\nassistant: Hello!\nuser: Grüße — 2 + 2?\nassistant:"
        ),
        "temperature": 1,
        "presence_penalty": 0,
        "top_p": 1,
        "frequency_penalty": 0,
    }
    # Non-ASCII text is sent as UTF-8, not escaped.
    assert "Grüße —".encode() in request.body


def test_aichat_flattens_null_content() -> None:
    request = Aichat.build_request(
        "gpt-3.5-turbo", [{"role": "user", "content": None}], stream=False
    )
    assert body_of(request)["message"] == "user: \nassistant:"


@pytest.mark.parametrize("provider", [Mishalsgpt, Gravityengine, Lockchat])
def test_openai_family_options_land_in_body(provider: Provider) -> None:
    request = provider.build_request(
        provider.model[0],
        MESSAGES,
        stream=False,
        temperature=0.0,
        max_tokens=16,
        stop=["\n\n", "END"],
    )
    body = body_of(request)
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 16
    assert body["stop"] == ["\n\n", "END"]
    assert body["messages"] == MESSAGES


def test_openai_family_options_absent_when_not_given() -> None:
    body = body_of(request_for(Mishalsgpt, stream=False))
    assert "max_tokens" not in body
    assert "stop" not in body


def test_extra_fields_are_merged() -> None:
    request = Mishalsgpt.build_request(
        "gpt-3.5-turbo", MESSAGES, stream=False, extra={"top_p": 0.5, "temperature": 0.1}
    )
    body = body_of(request)
    assert body["top_p"] == 0.5
    assert body["temperature"] == 0.1


def test_openai_compatible_request() -> None:
    provider = OpenAICompatible(
        "local", "http://127.0.0.1:11434/v1/", needs_auth=True, headers={"X-Test": "1"}
    )
    request = provider.build_request("llama3", MESSAGES, stream=False, api_key="sk-local")
    assert request.url == "http://127.0.0.1:11434/v1/chat/completions"
    assert request.headers == {
        "Content-Type": "application/json",
        "X-Test": "1",
        "Authorization": "Bearer sk-local",
    }
    assert body_of(request) == {"model": "llama3", "messages": MESSAGES, "stream": False}
    body = body_of(provider.build_request("llama3", MESSAGES, stream=True, api_key="k"))
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_openai_compatible_needs_auth() -> None:
    provider = OpenAICompatible("local", "http://127.0.0.1:1/v1", needs_auth=True)
    with pytest.raises(ConfigurationError, match="API key"):
        provider.build_request("llama3", MESSAGES, stream=False)


def test_openai_compatible_with_a_model_list() -> None:
    provider = OpenAICompatible("local", "http://127.0.0.1:1/v1", models=["a", "b"])
    assert provider.build_request("b", MESSAGES, stream=False).url.endswith("/chat/completions")
    with pytest.raises(UnsupportedModelError):
        provider.build_request("c", MESSAGES, stream=False)


@pytest.mark.parametrize("provider", [Mishalsgpt, Gravityengine, Lockchat, Aichat])
def test_unknown_model_is_refused_before_anything(provider: Provider) -> None:
    with pytest.raises(UnsupportedModelError) as info:
        provider.build_request("gpt-5-ultra", MESSAGES, stream=False)
    error = info.value
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ValueError)
    assert error.provider == provider.name
    assert "gpt-5-ultra" in str(error)
    for model in provider.model:
        assert model in str(error)


@pytest.mark.parametrize("provider", [Mishalsgpt, Gravityengine, Lockchat, Aichat])
def test_unknown_model_never_reaches_the_transport(provider: Provider) -> None:
    class NoTransport:
        def deltas(self, *args: Any) -> Any:
            msg = "a request was sent"
            raise AssertionError(msg)

    pieces = provider._create_completion("gpt-5-ultra", MESSAGES, False, transport=NoTransport())
    with pytest.raises(UnsupportedModelError):
        next(pieces)


@pytest.mark.parametrize("provider", [Mishalsgpt, Gravityengine, Lockchat, Aichat])
def test_empty_messages(provider: Provider) -> None:
    with pytest.raises(ConfigurationError) as info:
        provider.build_request(provider.model[0], [], stream=False)
    assert info.value.provider == provider.name


def test_create_completion_refuses_to_stream_aichat() -> None:
    with pytest.raises(ConfigurationError, match="stream"):
        next(Aichat._create_completion("gpt-3.5-turbo", MESSAGES, True))


# --------------------------------------------------------------------------- seed contract


@pytest.mark.parametrize(
    ("provider", "url", "models", "supports_stream"),
    [
        (
            Mishalsgpt,
            "https://mishalsgpt.vercel.app",
            ["gpt-3.5-turbo-16k-0613", "gpt-3.5-turbo"],
            True,
        ),
        (
            Gravityengine,
            "https://gpt4.gravityengine.cc",
            ["gpt-3.5-turbo-16k", "gpt-3.5-turbo-0613"],
            True,
        ),
        (Lockchat, "http://super.lockchat.app", ["gpt-4", "gpt-3.5-turbo"], True),
        (Aichat, "https://chat-gpt.org", ["gpt-3.5-turbo"], False),
    ],
)
def test_seed_contract(
    provider: Provider, url: str, models: list[str], supports_stream: bool
) -> None:
    assert provider.url == url
    assert provider.model == models
    assert provider.supports_stream is supports_stream
    assert provider.needs_auth is False
    assert isinstance(provider.params, str)
    assert provider.name in provider.params
    for hint in ("model: str", "messages:", "stream: bool"):
        assert hint in provider.params
    assert callable(provider._create_completion)


# --------------------------------------------------------------------------- registry


def test_registry_names() -> None:
    assert {"Aichat", "Gravityengine", "Lockchat", "Mishalsgpt"} <= set(providers.names())
    assert providers.names() == sorted(providers.names())


@pytest.mark.parametrize("name", ["Lockchat", "lockchat", "LOCKCHAT", "lOcKcHaT"])
def test_registry_get_is_case_insensitive(name: str) -> None:
    assert providers.get(name) is Lockchat


def test_registry_get_unknown() -> None:
    with pytest.raises(UnknownProviderError) as info:
        providers.get("Bard")
    assert isinstance(info.value, ConfigurationError)
    message = str(info.value)
    assert "Bard" in message
    for name in ("Aichat", "Gravityengine", "Lockchat", "Mishalsgpt"):
        assert name in message


@pytest.fixture
def custom() -> Any:
    provider = OpenAICompatible("TestLocalProvider", "http://127.0.0.1:1/v1")
    yield provider
    providers.unregister("TestLocalProvider")


def test_register_and_unregister(custom: OpenAICompatible) -> None:
    assert providers.register(custom) is custom
    assert "TestLocalProvider" in providers.names()
    assert providers.get("testlocalprovider") is custom
    assert custom in providers.all_providers()
    providers.unregister("TestLocalProvider")
    assert "TestLocalProvider" not in providers.names()
    with pytest.raises(UnknownProviderError):
        providers.get("TestLocalProvider")
    providers.unregister("TestLocalProvider")  # a second time is harmless


def test_register_refuses_a_duplicate_name(custom: OpenAICompatible) -> None:
    providers.register(custom)
    other = OpenAICompatible("TestLocalProvider", "http://127.0.0.1:2/v1")
    with pytest.raises(ValueError, match="already registered"):
        providers.register(other)
    assert providers.get("TestLocalProvider") is custom
    assert providers.register(other, replace=True) is other
    assert providers.get("TestLocalProvider") is other


def test_register_refuses_a_duplicate_seed_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        providers.register(OpenAICompatible("Lockchat", "http://127.0.0.1:1/v1"))
    assert providers.get("Lockchat") is Lockchat


@pytest.mark.parametrize("bad", [object(), "Lockchat", OpenAICompatible("", "http://x")])
def test_register_refuses_bad_providers(bad: Any) -> None:
    before = providers.names()
    with pytest.raises((TypeError, ValueError)):
        providers.register(bad)
    assert providers.names() == before


# --------------------------------------------------------------------------- StopScanner


def scan(stops: list[str], pieces: list[str]) -> tuple[list[str], str, bool]:
    scanner = StopScanner(stops)
    out = [scanner.push(piece) for piece in pieces]
    return out, scanner.flush(), scanner.stopped


def test_stop_inside_one_piece() -> None:
    out, tail, stopped = scan(["STOP"], ["Hello STOP world", "more"])
    assert out == ["Hello ", ""]
    assert tail == ""
    assert stopped


def test_stop_split_across_pieces() -> None:
    out, tail, stopped = scan(["bc"], ["ab", "cd"])
    assert out == ["a", ""]
    assert (tail, stopped) == ("", True)


def test_stop_split_across_many_pieces() -> None:
    out, _tail, stopped = scan(["<END>"], ["x<", "E", "N", "D", ">y"])
    assert "".join(out) == "x"
    assert stopped


def test_held_prefix_that_is_not_a_stop_is_released() -> None:
    out, tail, stopped = scan(["bc"], ["ab", "xd"])
    assert out == ["a", "bxd"]
    assert (tail, stopped) == ("", False)


def test_held_prefix_is_flushed_at_the_end() -> None:
    out, tail, stopped = scan(["bc"], ["ab"])
    assert out == ["a"]
    assert tail == "b"
    assert not stopped


def test_earliest_of_several_stops_wins() -> None:
    out, _, stopped = scan(["world", "lo"], ["Hello world"])
    assert out == ["Hel"]
    assert stopped


def test_no_stops_passes_everything() -> None:
    out, tail, stopped = scan(["", ""], ["a", "b"])
    assert (out, tail, stopped) == (["a", "b"], "", False)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_stop_scanner_matches_a_plain_cut(size: int) -> None:
    """Whatever the chunking, the text emitted is the text before the first stop."""
    whole = "The answer is 4.\n\nQuestion: what is 3 + 3?"
    pieces = [whole[i : i + size] for i in range(0, len(whole), size)]
    scanner = StopScanner(["\n\nQuestion:", "\n\nQ:"])
    emitted = "".join(scanner.push(p) for p in pieces) + scanner.flush()
    assert emitted == "The answer is 4."


# --------------------------------------------------------------------------- event streams as sent


@pytest.mark.parametrize(
    "after",
    [
        event(chunk(" more")),
        b"not an event\n",
        b"data: {broken\n\n",
        HTML,
        event({"error": "late"}),
    ],
)
@pytest.mark.parametrize("split", [False, True])
def test_sse_nothing_after_done_is_read(after: bytes, split: bool) -> None:
    body = FULL_STREAM + after
    pieces = byte_by_byte(body) if split else [FULL_STREAM, after]
    assert text(run(sse_parser(), *pieces)) == "Hello wörld"


@pytest.mark.parametrize("split", [False, True])
def test_sse_byte_order_mark_before_the_first_event_is_skipped(split: bool) -> None:
    body = b"\xef\xbb\xbf" + event(chunk("first")) + event(chunk(" second", finish="stop"))
    pieces = byte_by_byte(body) if split else [body]
    assert text(run(sse_parser(), *pieces)) == "first second"


@pytest.mark.parametrize("split", [False, True])
def test_sse_bare_cr_line_endings(split: bool) -> None:
    body = FULL_STREAM.replace(b"\n", b"\r")
    pieces = byte_by_byte(body) if split else [body]
    assert text(run(sse_parser(), *pieces)) == "Hello wörld"


def test_sse_mixed_line_endings_make_no_extra_lines() -> None:
    body = event(chunk("a")).replace(b"\n\n", b"\r\n\r") + b"\n" + event(chunk("b", finish="stop"))
    assert text(run(sse_parser(), *byte_by_byte(body))) == "ab"


def test_sse_one_large_event_in_many_reads_is_copied_once() -> None:
    big = "x" * 2_000_000
    body = event(chunk(big)) + b"data: [DONE]\n\n"
    parser = sse_parser()
    reads = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    assert text(run(parser, *reads)) == big
    # Joined once when the line ends, not once per read (that would be ~2,000x).
    assert parser.lines.copied <= 2 * len(body)


DEEP = b"[" * 100_000


@pytest.mark.parametrize(
    "body", [DEEP, b'{"choices": ' + DEEP, b'{"error": ' + b"[" * 900 + b"]" * 900 + b"}"]
)
def test_deeply_nested_json_body_is_malformed(body: bytes) -> None:
    with pytest.raises((MalformedResponseError, ProviderResponseError)) as info:
        parse_completion("Mishalsgpt", body)
    assert info.value.provider == "Mishalsgpt"


@pytest.mark.parametrize("line", [b"data: " + DEEP, DEEP, b"{" + b'"a":[' * 50_000])
def test_deeply_nested_json_event_is_malformed(line: bytes) -> None:
    with pytest.raises((MalformedResponseError, ProviderResponseError)) as info:
        run(sse_parser(), line + b"\n\n")
    assert info.value.provider == "Lockchat"


def test_deeply_nested_aichat_body_is_malformed() -> None:
    with pytest.raises(MalformedResponseError):
        Aichat.parse_body(DEEP)


@pytest.mark.parametrize("body", [DEEP, b'{"error": ' + DEEP + b"}", b"[" * 900 + b"]" * 900])
def test_error_text_of_a_deeply_nested_body(body: bytes) -> None:
    assert isinstance(Mishalsgpt.error_text(body), str)


BAD_TOOL_CALLS = [
    True,
    [1],
    [None],
    [{"index": [], "function": {"name": "f", "arguments": ""}}],
    [{"index": 0, "function": None, "id": 5}],
    [{"index": 0, "function": {"name": 5}}],
    [{"index": 0, "function": {"name": "f", "arguments": 3}}],
    [{"index": 0, "function": "f"}],
    {"index": 0},
    "calls",
]


def tool_chunk(tool_calls: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4",
        "choices": [{"index": 0, "delta": {"tool_calls": tool_calls}, "finish_reason": None}],
        **extra,
    }


@pytest.mark.parametrize("tool_calls", BAD_TOOL_CALLS)
def test_sse_tool_calls_of_the_wrong_type_are_malformed(tool_calls: Any) -> None:
    with pytest.raises(MalformedResponseError) as info:
        run(sse_parser(), event(tool_chunk(tool_calls)))
    assert info.value.provider == "Lockchat"


@pytest.mark.parametrize("tool_calls", BAD_TOOL_CALLS)
def test_completion_tool_calls_of_the_wrong_type_are_malformed(tool_calls: Any) -> None:
    body = json.dumps(
        {
            "choices": [
                {
                    "message": {"content": None, "tool_calls": tool_calls},
                    "finish_reason": "tool_calls",
                }
            ]
        }
    ).encode()
    with pytest.raises(MalformedResponseError) as info:
        parse_completion("Mishalsgpt", body)
    assert info.value.provider == "Mishalsgpt"


@pytest.mark.parametrize("finish", [[], 5, {"a": 1}, True])
def test_finish_reason_of_the_wrong_type_is_malformed(finish: Any) -> None:
    with pytest.raises(MalformedResponseError):
        run(
            sse_parser(), event({"choices": [{"delta": {"content": "x"}, "finish_reason": finish}]})
        )
    body = json.dumps({"choices": [{"message": {"content": "x"}, "finish_reason": finish}]})
    with pytest.raises(MalformedResponseError):
        parse_completion("Mishalsgpt", body.encode())


@pytest.mark.parametrize("model", [[], 5, {"a": 1}])
def test_model_of_the_wrong_type_is_malformed(model: Any) -> None:
    with pytest.raises(MalformedResponseError):
        run(
            sse_parser(),
            event({"model": model, "choices": [{"delta": {}, "finish_reason": "stop"}]}),
        )


def test_good_tool_calls_keep_their_shape() -> None:
    calls = [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    deltas = run(sse_parser(), event(tool_chunk(calls)), event(chunk(None, finish="tool_calls")))
    assert deltas[0].tool_calls == calls
    whole = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]
    body = json.dumps(
        {"choices": [{"message": {"tool_calls": whole}, "finish_reason": "tool_calls"}]}
    )
    assert parse_completion("Mishalsgpt", body.encode())[0].tool_calls == whole


# --------------------------------------------------------------------------- layering

PACKAGE = Path(__file__).resolve().parents[2] / "langchain_g4f"
PROVIDER_MODULES = sorted(
    f"langchain_g4f.providers.{p.stem}"
    for p in (PACKAGE / "providers").glob("*.py")
    if p.stem != "__init__"
)


def imported_modules(path: Path, *, module_level: bool) -> set[str]:
    """The ``langchain_g4f`` modules (and names) a source file imports.

    ``module_level`` leaves out imports inside functions, which run only when
    called; ``if TYPE_CHECKING:`` blocks count, as they name a dependency.
    """
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith(
                "langchain_g4f"
            ):
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("langchain_g4f"))
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_transport_imports_only_the_provider_contract() -> None:
    imports = imported_modules(PACKAGE / "transport.py", module_level=False)
    providers_imported = {m for m in imports if m.startswith("langchain_g4f.providers.")}
    assert providers_imported <= {"langchain_g4f.providers.base"} | {
        f"langchain_g4f.providers.base.{name}" for name in ("Delta", "HTTPRequest", "Provider")
    }


@pytest.mark.parametrize("module", PROVIDER_MODULES)
def test_providers_do_not_import_transports_or_chat_models(module: str) -> None:
    path = PACKAGE / "providers" / (module.rsplit(".", 1)[1] + ".py")
    upward = ("langchain_g4f.transport", "langchain_g4f.chat_models", "langchain_g4f.router")
    assert not {m for m in imported_modules(path, module_level=True) if m.startswith(upward)}


@pytest.mark.parametrize(
    "module", [*PROVIDER_MODULES, "langchain_g4f.transport", "langchain_g4f.chat_models"]
)
def test_each_module_imports_alone_and_providers_load_no_transport(module: str) -> None:
    code = f"import sys, {module}\nprint('langchain_g4f.transport' in sys.modules)\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    loads_transport = result.stdout.strip() == "True"
    assert loads_transport is (not module.startswith("langchain_g4f.providers."))


def test_emulated_tool_call_text_nested_too_deeply_is_plain_text() -> None:
    from langchain_g4f.tools import parse_tool_calls

    text = 'Sure: {"tool_calls": ' + "[" * 100_000
    assert parse_tool_calls(text, {"f"}) is None
    nested_args = '{"name": "f", "arguments": "' + "[" * 100_000 + '"}'
    assert parse_tool_calls(nested_args, {"f"}) is None


class PlainTextParser:
    """A stream that is its text, as some custom providers send."""

    def feed(self, data: bytes) -> list[Delta]:
        return [Delta(text=data.decode())] if data else []

    def close(self) -> list[Delta]:
        return [Delta(finish_reason="stop")]


class PlainText(Provider):
    name = "PlainText"
    model = ["m"]
    supports_stream = True

    def build_payload(self, model: str, messages: Any, **options: Any) -> dict[str, Any]:
        return {}

    def stream_parser(self) -> PlainTextParser:
        return PlainTextParser()


@pytest.mark.parametrize("body", [b"d", b"da", b"data", b" \n", b"<p>"])
def test_a_short_body_decided_at_its_end_keeps_its_deltas(body: bytes) -> None:
    provider = PlainText()
    parser = provider.parser(provider.build_request("m", MESSAGES, stream=True), "text/plain")
    assert text(run(parser, *byte_by_byte(body))) == body.decode("utf-8", "replace")


# --------------------------------------------------------------------------- tool calls, merged


class WireTransport:
    """Answers with the given tool calls, as an OpenAI SSE stream or one JSON body,
    read by the provider's own parsers (no socket).
    """

    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls

    def batches(self, provider: Provider, request: HTTPRequest) -> Iterator[list[Delta]]:
        if request.stream:
            parser = provider.stream_parser()
            data = event(tool_chunk(self.calls)) + event(chunk(None, finish="tool_calls"))
            yield from [
                batch
                for batch in (parser.feed(data + b"data: [DONE]\n\n"), parser.close())
                if batch
            ]
        else:
            whole = [{k: v for k, v in call.items() if k != "index"} for call in self.calls]
            message = {"content": None, "tool_calls": whole}
            body = {"choices": [{"message": message, "finish_reason": "tool_calls"}]}
            yield provider.parse_body(json.dumps(body).encode())

    async def abatches(
        self, provider: Provider, request: HTTPRequest
    ) -> AsyncIterator[list[Delta]]:
        for batch in self.batches(provider, request):
            yield batch


class DeltaTransport(WireTransport):
    """Hands the tool calls on as deltas, one each, unparsed: a provider doing its own I/O."""

    def batches(self, provider: Provider, request: HTTPRequest) -> Iterator[list[Delta]]:
        for call in self.calls:
            yield [Delta(tool_calls=[call])]
        yield [Delta(finish_reason="tool_calls")]


def wire_model(transport: WireTransport, *, stream: bool = True) -> ChatG4F:
    provider = type(providers.get("Mishalsgpt"))()
    provider.transport = transport  # type: ignore[assignment]
    provider.supports_stream = stream
    return ChatG4F(provider=provider)


def named(name: Any, **fields: Any) -> dict[str, Any]:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"arguments": "{}"}}
    if name != "absent":
        call["function"]["name"] = name
    call.update(fields)
    return call


async def answers(llm: ChatG4F) -> list[BaseMessage]:
    """The answers of invoke, stream, ainvoke and astream (the chunks added up)."""
    chunks = list(llm.stream("hi"))
    achunks = [c async for c in llm.astream("hi")]
    return [
        llm.invoke("hi"),
        sum(chunks[1:], chunks[0]),
        await llm.ainvoke("hi"),
        sum(achunks[1:], achunks[0]),
    ]


async def assert_malformed(llm: ChatG4F) -> None:
    """Invoke, stream, ainvoke and astream each raise MalformedResponseError."""
    errors = []
    with pytest.raises(MalformedResponseError) as info:
        llm.invoke("hi")
    errors.append(info.value)
    with pytest.raises(MalformedResponseError) as info:
        list(llm.stream("hi"))
    errors.append(info.value)
    with pytest.raises(MalformedResponseError) as info:
        await llm.ainvoke("hi")
    errors.append(info.value)
    with pytest.raises(MalformedResponseError) as info:
        [c async for c in llm.astream("hi")]
    errors.append(info.value)
    assert [error.provider for error in errors] == ["Mishalsgpt"] * 4


@pytest.mark.parametrize("name", [None, "absent"])
async def test_a_tool_call_from_the_wire_without_a_name_is_malformed(name: Any) -> None:
    await assert_malformed(wire_model(WireTransport([named(name)])))


@pytest.mark.parametrize(
    "call",
    [
        named(None),
        named(5),
        named(["f"]),
        named("f", id=7),
        named("f", function={"name": "f", "arguments": 3}),
        named("f", function={"name": "f", "arguments": ["a"]}),
        named("f", function="f"),
        named("f", index="0"),
        "f",
    ],
    ids=[
        "null-name",
        "numeric-name",
        "list-name",
        "numeric-id",
        "numeric-arguments",
        "list-arguments",
        "function-string",
        "string-index",
        "not-an-object",
    ],
)
async def test_a_tool_call_delta_of_the_wrong_type_is_malformed(call: Any) -> None:
    await assert_malformed(wire_model(DeltaTransport([call])))


async def test_a_later_fragment_may_leave_out_the_name() -> None:
    fragments = [
        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}},
        {"index": 0, "function": {"arguments": ": 1}"}},
    ]
    for message in await answers(wire_model(DeltaTransport(fragments))):
        assert message.tool_calls == [
            {"name": "f", "args": {"a": 1}, "id": "c1", "type": "tool_call"}
        ]


async def test_whole_tool_call_arguments_may_be_an_object() -> None:
    call = named("f", function={"name": "f", "arguments": {"a": 1}})
    expected = [{"name": "f", "args": {"a": 1}, "id": "c1", "type": "tool_call"}]
    # a provider that cannot stream answers every call with one body
    for message in await answers(wire_model(WireTransport([call]), stream=False)):
        assert message.tool_calls == expected
    streaming = wire_model(WireTransport([call]))
    assert streaming.invoke("hi").tool_calls == expected
    assert (await streaming.ainvoke("hi")).tool_calls == expected
