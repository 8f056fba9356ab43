"""Fuzzing every parser: any bytes, split anywhere, give typed deltas or a typed error.

The properties, for the OpenAI JSON body, the OpenAI event stream, Aichat's
body, error bodies, the generic :class:`BodyParser` and the content sniffing
of :meth:`Provider.parser`:

- whatever the bytes and however they are split between reads, parsing ends in
  deltas whose fields have their declared types, or in a
  :class:`~langchain_g4f.errors.ProviderError` that names the provider;
- a valid event stream parses to the same deltas however it is split, whatever
  its line ends, with or without a byte order mark.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_g4f.errors import ProviderError
from langchain_g4f.providers import Aichat, Delta, Lockchat, Mishalsgpt, SSEParser
from langchain_g4f.providers.base import BodyParser, Provider

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- checks


def _optional_str(value: Any) -> bool:
    return value is None or type(value) is str


def check_tool_call(call: Any) -> None:
    assert type(call) is dict
    assert call.get("index") is None or type(call["index"]) is int
    assert _optional_str(call.get("id"))
    assert _optional_str(call.get("type"))
    function = call.get("function")
    assert function is None or type(function) is dict
    if function is not None:
        assert _optional_str(function.get("name"))
        arguments = function.get("arguments")
        assert arguments is None or type(arguments) in (str, dict)


def check_delta(delta: Any) -> None:
    """Every field of ``delta`` has the type ``Delta`` declares."""
    assert type(delta) is Delta
    assert type(delta.text) is str
    assert type(delta.reasoning) is str
    assert _optional_str(delta.finish_reason)
    assert _optional_str(delta.model)
    if delta.usage is not None:
        assert type(delta.usage) is dict
        assert set(delta.usage) == {"input_tokens", "output_tokens", "total_tokens"}
        assert all(type(v) is int for v in delta.usage.values())
    if delta.tool_calls is not None:
        assert type(delta.tool_calls) is list
        assert delta.tool_calls
        for call in delta.tool_calls:
            check_tool_call(call)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def outcome(provider: str, parse: Any) -> list[Delta]:
    """Run ``parse()``; its deltas, all typed, or [] after a typed error naming ``provider``."""
    try:
        deltas = parse()
    except ProviderError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.provider == provider
        assert str(error).startswith(f"{provider}: ")
        return []
    for delta in deltas:
        check_delta(delta)
    return deltas


def feed_all(parser: Any, pieces: list[bytes]) -> list[Delta]:
    out: list[Delta] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    out.extend(parser.close())
    return out


# --------------------------------------------------------------------------- inputs

#: Values of every JSON type, including those no field should hold.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def shaped(keys: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with some of ``keys`` (each from its strategy, or any JSON value)."""
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in keys.items()})


tool_calls = st.lists(
    shaped(
        {
            "index": st.integers(0, 3),
            "id": st.text(max_size=4),
            "type": st.just("function"),
            "function": shaped({"name": st.text(max_size=4), "arguments": st.text(max_size=6)}),
        }
    ),
    max_size=2,
)
usage = shaped(
    {
        "prompt_tokens": st.integers(0, 9),
        "completion_tokens": st.integers(0, 9),
        "total_tokens": st.integers(0, 9),
    }
)
choice = shaped(
    {
        "delta": shaped(
            {
                "content": st.text(max_size=8),
                "tool_calls": tool_calls,
                "reasoning_content": st.text(max_size=8),
                "role": st.just("assistant"),
            }
        ),
        "message": shaped({"content": st.text(max_size=8), "tool_calls": tool_calls}),
        "finish_reason": st.sampled_from(["stop", "length", "tool_calls"]),
        "index": st.integers(0, 2),
    }
)
chunk_objects = shaped(
    {
        "choices": st.lists(choice, max_size=2),
        "model": st.text(max_size=6),
        "usage": usage,
        "error": shaped({"message": st.text(max_size=6), "code": st.text(max_size=4)}),
    }
)
aichat_objects = shaped({"response": st.booleans(), "message": st.text(max_size=8)})
#: Bodies nested deeper than a parser can recurse.
deep = st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b'{"error": ' + b"[" * 100_000])


def as_json(objects: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return objects.map(lambda o: json.dumps(o).encode())


def as_events(objects: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    line = st.one_of(
        objects.map(lambda o: b"data: " + json.dumps(o).encode()),
        st.sampled_from([b"data: [DONE]", b": ping", b"event: x", b"", b"data:"]),
        deep.map(lambda d: b"data: " + d),
        st.binary(max_size=12),
    )
    ending = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n"])
    return st.lists(st.tuples(line, ending), max_size=6).map(
        lambda pairs: b"".join(a + b for a, b in pairs)
    )


any_body = st.binary(max_size=200) | deep
cuts = st.lists(st.integers(0, 400), max_size=8)

# --------------------------------------------------------------------------- any bytes


@FUZZ
@given(body=any_body | as_json(chunk_objects), cuts=cuts)
def test_openai_json_body(body: bytes, cuts: list[int]) -> None:
    outcome("Mishalsgpt", lambda: feed_all(BodyParser(Mishalsgpt.parse_body), split(body, cuts)))


@FUZZ
@given(body=any_body | as_events(chunk_objects), cuts=cuts)
def test_openai_event_stream(body: bytes, cuts: list[int]) -> None:
    outcome("Lockchat", lambda: feed_all(Lockchat.stream_parser(), split(body, cuts)))


@FUZZ
@given(body=any_body | as_json(aichat_objects), cuts=cuts)
def test_aichat_body(body: bytes, cuts: list[int]) -> None:
    outcome("Aichat", lambda: feed_all(BodyParser(Aichat.parse_body), split(body, cuts)))


@FUZZ
@given(body=any_body | as_json(chunk_objects) | as_json(json_values))
def test_error_bodies(body: bytes) -> None:
    for provider in (Mishalsgpt, Aichat):
        assert type(provider.error_text(body)) is str


@FUZZ
@given(
    body=any_body | as_json(chunk_objects) | as_events(chunk_objects),
    cuts=cuts,
    content_type=st.sampled_from(
        [
            "",
            "application/json",
            "text/event-stream",
            "text/html",
            "text/plain",
            "application/x-ndjson",
        ]
    ),
    stream=st.booleans(),
    bom=st.booleans(),
    provider=st.sampled_from([Mishalsgpt, Lockchat, Aichat]),
)
def test_content_sniffing(
    body: bytes, cuts: list[int], content_type: str, stream: bool, bom: bool, provider: Provider
) -> None:
    request = provider.build_request(
        provider.model[0], [{"role": "user", "content": "x"}], stream=stream
    )
    body = b"\xef\xbb\xbf" + body if bom else body
    outcome(
        provider.name, lambda: feed_all(provider.parser(request, content_type), split(body, cuts))
    )


# --------------------------------------------------------------------------- round trips

valid_chunks = st.lists(
    st.one_of(
        st.text(min_size=1, max_size=12).map(lambda t: {"choices": [{"delta": {"content": t}}]}),
        st.builds(
            lambda i, name, args: {
                "choices": [
                    {
                        "delta": {
                            "tool_calls": [
                                {"index": i, "function": {"name": name, "arguments": args}}
                            ]
                        }
                    }
                ]
            },
            st.integers(0, 2),
            st.text(max_size=4),
            st.text(max_size=6),
        ),
    ),
    min_size=1,
    max_size=8,
)


def serialise(chunks: list[dict[str, Any]], ending: bytes, bom: bool, comments: bool) -> bytes:
    events = [b"data: " + json.dumps(c, ensure_ascii=False).encode() for c in chunks]
    events.append(b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}], "model": "m"}')
    events.append(b"data: [DONE]")
    lines = []
    for event in events:
        if comments:
            lines.append(b": keep-alive")
        lines += [event, b""]
    return (b"\xef\xbb\xbf" if bom else b"") + b"".join(line + ending for line in lines)


@FUZZ
@given(
    chunks=valid_chunks,
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    bom=st.booleans(),
    comments=st.booleans(),
    cuts=cuts,
    trailer=st.binary(max_size=20),
)
def test_a_valid_stream_split_anywhere_parses_the_same(
    chunks: list[dict[str, Any]],
    ending: bytes,
    bom: bool,
    comments: bool,
    cuts: list[int],
    trailer: bytes,
) -> None:
    body = serialise(chunks, ending, bom, comments)
    whole = feed_all(SSEParser("Lockchat"), [serialise(chunks, b"\n", False, False)])
    # Split anywhere, with anything after [DONE]: the same deltas.
    pieces = split(body + trailer, [c * len(body) // 400 for c in cuts])
    assert feed_all(SSEParser("Lockchat"), pieces) == whole
    for delta in whole:
        check_delta(delta)
    assert "".join(d.text for d in whole) == "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks
    )
