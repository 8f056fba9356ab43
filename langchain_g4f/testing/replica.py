"""A local, deterministic replica of the four seed providers (and a generic OpenAI endpoint).

The real Mishalsgpt, Gravityengine, Lockchat and Aichat endpoints are long gone. The replica
is a small HTTP server on 127.0.0.1 that speaks their wire protocols exactly, answers
deterministically (see :func:`reply_for`) and injects faults per provider (see ``FAULTS``).
The offline demo, the test suite (to record cassettes), the benchmarks and users' own tests
point a provider's base URL at it::

    from langchain_g4f.testing import Replica

    with Replica() as replica:
        url = replica.base_url("Lockchat")  # pass as the provider's base URL
        replica.set_fault("Lockchat", "rate_limit", times=1, retry_after=2)
        ...  # call the provider; inspect replica.requests

Routes, relative to ``base_url(provider)``: ``POST /api/openai/v1/chat/completions``
(mishalsgpt, gravityengine), ``POST /v1/chat/completions`` (lockchat, openai) and
``POST /api/text`` (aichat). Anything else gets a 404 JSON error.

The "openai" route also plays a multimodal reasoning model: it describes the
``image_url`` parts it gets (:func:`describe_images`), and models named like
reasoning models reason first (:func:`reasoning_style`: ``"reasoner"`` in the name
sends ``reasoning_content``, ``"r1"`` a ``<think>`` section).

With tools or a JSON output instruction in the request the replica acts as a small
deterministic tool-using model (:func:`respond`, :func:`args_for`): emulated tools and JSON
instructions arrive as system-message text on any route (for Aichat inside the flattened
prompt), native ones as ``tools``/``tool_choice``/``response_format`` on the "openai" route,
which then answers with OpenAI ``tool_calls``. Without them the answer is :func:`reply_for`.

Standard library only, besides the package's continuation instruction (which it recognises)
and provider registry (which ``redirect_providers`` repoints); works on Python 3.10+.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any, TypedDict
from urllib.parse import parse_qsl, urlsplit

from langchain_g4f import providers
from langchain_g4f.continuation import CONTINUE_INSTRUCTION
from langchain_g4f.providers.base import Provider

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "FAULTS",
    "PROVIDERS",
    "Redirect",
    "Replica",
    "args_for",
    "describe_images",
    "reasoning_for",
    "reasoning_style",
    "reply_for",
    "respond",
]

FAULTS = (
    "refuse",
    "hang",
    "stall",
    "reset",
    "rate_limit",
    "http_500",
    "http_502",
    "http_503",
    "http_401",
    "html",
    "truncated_json",
    "error_event",
    "empty",
    "slow",
)

#: Route names (lower case) the replica serves; ``base_url`` accepts any capitalisation.
PROVIDERS = ("mishalsgpt", "gravityengine", "lockchat", "aichat", "openai")

_SEED_ROUTES = tuple(name for name in PROVIDERS if name != "openai")
_ROUTES = {
    "mishalsgpt": "/api/openai/v1/chat/completions",
    "gravityengine": "/api/openai/v1/chat/completions",
    "lockchat": "/v1/chat/completions",
    "openai": "/v1/chat/completions",
    "aichat": "/api/text",
}

# None: any model is accepted.
_MODELS: dict[str, tuple[str, ...] | None] = {
    "mishalsgpt": ("gpt-3.5-turbo-16k-0613", "gpt-3.5-turbo"),
    "gravityengine": ("gpt-3.5-turbo-16k", "gpt-3.5-turbo-0613"),
    "lockchat": ("gpt-4", "gpt-3.5-turbo"),
    "openai": None,
}


class _FaultOptions(TypedDict):
    retry_after: float
    delay: float
    after_chunks: int
    after_chars: int | None


@dataclass
class _Fault:
    name: str
    left: int | None  # requests it still applies to; None: all
    options: _FaultOptions


class _Tool(TypedDict):
    name: str
    description: str
    parameters: dict[str, Any]


class _ToolCall(TypedDict):
    name: str
    arguments: dict[str, Any]


class _Answer(TypedDict, total=False):
    text: str
    tool_call: _ToolCall


_DEFAULT_DELAY = {"hang": 30.0, "stall": 30.0, "slow": 0.05}
_OPTIONS = ("retry_after", "delay", "after_chunks", "after_chars")
_NO_OPTIONS: _FaultOptions = {
    "retry_after": 1,
    "delay": 0.0,
    "after_chunks": 2,
    "after_chars": None,
}
#: Faults that end a stream early, after some text.
_BREAKS = ("stall", "reset", "error_event", "truncated_json")

_PIECE_RE = re.compile(r"\S+\s*|\s+")
_ROLE_LINE_RE = re.compile(r"(system|user|assistant|function|tool)\s*:", re.IGNORECASE)

_CLOUDFLARE_HTML = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body>Checking your browser</body></html>"
)
_BAD_GATEWAY_HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
_HTTP_ERRORS = {
    "http_500": (500, "The server had an error while processing your request.", "server_error"),
    "http_503": (503, "The engine is currently overloaded, try again later.", "server_error"),
    "http_401": (401, "Incorrect API key provided.", "invalid_request_error"),
}
_OVERLOADED = "upstream overloaded"
_END = b"0\r\n\r\n"
_HeaderPairs = tuple[tuple[str, str], ...]
_BATCH_BYTES = 65536


# --------------------------------------------------------------------------- answers


def _text_of(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return " ".join(parts)
    return str(content)


def reply_for(messages: list[dict[str, Any]]) -> str:
    """The replica's deterministic answer to a conversation of OpenAI-style role/content dicts.

    ``"Hello from the replica — you said: <last user text, stripped, first 200 chars>"``
    (``"... — you said nothing."`` when there is no user text). Always several words and
    one non-ASCII character (the em dash).
    """
    said = ""
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            said = _text_of(message.get("content"))
            break
    said = said.strip()[:200]
    if not said:
        return "Hello from the replica — you said nothing."
    return f"Hello from the replica — you said: {said}"


def _aichat_messages(prompt: str) -> list[dict[str, Any]]:
    """Recover the last user message from Aichat's flattened ``role: content`` prompt.

    The last line starting with ``user:`` (any case) opens it; following lines belong to it
    until the next ``role:`` line. With no such line the whole prompt is the user message.
    """
    lines = prompt.split("\n")
    for start in range(len(lines) - 1, -1, -1):
        if lines[start][:5].lower() == "user:":
            break
    else:
        return [{"role": "user", "content": prompt}]
    first = lines[start][5:]
    body = [first.removeprefix(" ")]
    for line in lines[start + 1 :]:
        if _ROLE_LINE_RE.match(line):
            break
        body.append(line)
    return [{"role": "user", "content": "\n".join(body)}]


# --------------------------------------------------------------------------- tools and JSON
#
# With tools or a JSON output instruction in a request, the replica behaves like a small
# deterministic tool-using model (see :func:`respond`). Emulated requests (any route) carry
# them as system-message text; native requests (the "openai" route) as ``tools``,
# ``tool_choice`` and ``response_format`` in the body.

# The line the emulated tools' JSON (one line) follows.
_TOOLS_MARKER = "You can call these tools. Each is described by a JSON schema:"
# How an emulated tool result (a user message) begins.
_TOOL_RESULT_PREFIX = "Tool result"
# The emulated JSON output instruction, after a ``# Output format`` line.
_JSON_MARKER = "Reply with nothing but one JSON object"

_REQUIRED_LINE = "You must call at least one tool now."
# A tool result's header: "Tool result for NAME (call N):" or "... [error]:".
_RESULT_RE = re.compile(re.escape(_TOOL_RESULT_PREFIX) + r"\b[^\n]*:")
_FORCED_RE = re.compile(r'^You must call the tool "(.+)" now\.[ \t]*$', re.MULTILINE)
_JSON_RE = re.compile(
    r"^# Output format[ \t]*\n" + re.escape(_JSON_MARKER) + r"(?:\.|"
    r" that matches this JSON schema:[ \t]*\n(?P<schema>[^\n]*))",
    re.MULTILINE,
)
_INT_RE = re.compile(r"-?\d+")
_NUM_RE = re.compile(r"-?\d+(?:\.\d+)?")
# A quoted value: ASCII single or double quotes (not an apostrophe inside a word), or
# typographic quotes. Non-ASCII text inside is kept as is.
_QUOTED_RE = re.compile(
    r"(?<![A-Za-z0-9])'([^'\n]+?)'(?![A-Za-z0-9])|\"([^\"\n]+?)\""
    r"|“([^”\n]+?)”|‘([^’\n]+?)’"
)
_KEY_RE = re.compile(r"(?<![A-Za-z0-9])'([A-Za-z_][\w\-]*)'(?![A-Za-z0-9])")
_PLACE_RE = re.compile(r"location|city|place|town|country|address|destination", re.IGNORECASE)
_NAME_SPLIT_RE = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# ASCII, typographic and CJK punctuation (the full-width , ! ? : ; escaped).
_PUNCT = "\"'`.,;:!?()[]{}<>«»“”‘’。\uff0c\uff01\uff1f\uff1a\uff1b、"
_MAX_DEPTH = 8
# A tool is picked by a word of its name this long or longer found in the user's text.
_MIN_NAME_WORD = 4
# The most pieces a streamed tool call's arguments come in.
_ARGUMENT_PIECES = 3


def _tool_result(text: str) -> str:
    """The result text of an emulated tool result: what follows its header line."""
    header, newline, rest = text.partition("\n")
    if newline:
        return rest
    return header.partition(":")[2]


def _tool_answer(result: str) -> str:
    result = result.strip()[:200]
    return f"The tool returned: {result}" + ("" if result.endswith((".", "!", "?")) else ".")


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _system_texts(messages: list[Any]) -> list[str]:
    return [
        _text_of(m.get("content"))
        for m in messages or []
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]


def _as_tool(entry: Any) -> _Tool | None:
    """``{"name", "description", "parameters"}`` from an emulated or OpenAI tool entry."""
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("function"), dict):
        entry = entry["function"]
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        return None
    parameters = entry.get("parameters")
    description = entry.get("description")
    return {
        "name": name,
        "description": description if isinstance(description, str) else "",
        "parameters": parameters if isinstance(parameters, dict) else {},
    }


def _emulated_tools(systems: list[str]) -> tuple[list[_Tool], str] | None:
    """The tools and the choice (``"auto"``, ``"required"`` or a name) taught in a system text."""
    for text in reversed(systems):
        lines = text.split("\n")
        for index, line in enumerate(lines[:-1]):
            if line.strip() != _TOOLS_MARKER:
                continue
            try:
                entries = json.loads(lines[index + 1])
            except ValueError:
                continue
            if not isinstance(entries, list):
                continue
            tools = [tool for tool in map(_as_tool, entries) if tool is not None]
            if not tools:
                continue
            rest = "\n".join(lines[index + 2 :])
            forced = _FORCED_RE.search(rest)
            if forced:
                return tools, forced.group(1)
            if any(line.strip() == _REQUIRED_LINE for line in lines[index + 2 :]):
                return tools, "required"
            return tools, "auto"
    return None


def _native_tools(body: dict[str, Any]) -> tuple[list[_Tool], str] | None:
    """The tools and the choice (``"auto"``, ``"none"``, ``"required"`` or a name) of a body."""
    entries = body.get("tools")
    if not isinstance(entries, list):
        return None
    tools = [tool for tool in map(_as_tool, entries) if tool is not None]
    if not tools:
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        return tools, name if isinstance(name, str) and name else "auto"
    if choice in ("none", "required"):
        return tools, choice
    if choice == "any":
        return tools, "required"
    return tools, "auto"


def _json_instruction(systems: list[str]) -> tuple[bool, dict[str, Any] | None]:
    """Whether an emulated JSON output instruction is present, and its schema if any."""
    for text in reversed(systems):
        match = _JSON_RE.search(text)
        if match is None:
            continue
        line = match.group("schema")
        if line is None:
            return True, None
        try:
            schema = json.loads(line)
        except ValueError:
            return True, None
        return True, schema if isinstance(schema, dict) else None
    return False, None


def _native_json(body: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """Whether a body's ``response_format`` asks for JSON, and its schema if any."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return False, None
    if fmt.get("type") == "json_object":
        return True, None
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return True, schema if isinstance(schema, dict) else None
    return False, None


def _name_words(name: str) -> list[str]:
    return [word.lower() for word in _NAME_SPLIT_RE.split(name) if len(word) >= _MIN_NAME_WORD]


def _pick_tool(tools: list[_Tool], choice: str, text: str) -> _Tool | None:
    """The tool to call, or None for a plain answer (``choice`` is not ``"none"``)."""
    if choice not in ("auto", "required"):
        for tool in tools:
            if tool["name"] == choice:
                return tool
        return {"name": choice, "description": "", "parameters": {}}
    low = text.lower()
    for tool in tools:
        if tool["name"].lower() in low:
            return tool
    for tool in tools:
        if any(word in low for word in _name_words(tool["name"])):
            return tool
    return tools[0] if choice == "required" else None


def _topic(text: str) -> str:
    """A word the user's text is about: the word after the last "about", else the last word."""
    words = text.split()
    low = [w.lower().strip(_PUNCT) for w in words]
    if "about" in low[:-1]:
        index = len(low) - 1 - low[::-1].index("about")
        if index + 1 < len(words):
            word = words[index + 1].strip(_PUNCT)
            if word:
                return word
    return next((word for word in (w.strip(_PUNCT) for w in reversed(words)) if word), "")


def _phrase(name: str, text: str) -> str:
    topic = _topic(text)
    return f"{name} about {topic}" if topic else name


def _quoted(text: str, exclude: Any = ()) -> str | None:
    for match in _QUOTED_RE.finditer(text):
        value = next(group for group in match.groups() if group is not None)
        if value.strip() and value not in exclude:
            return value
    return None


def _place(text: str) -> str | None:
    index = text.rfind(" in ")
    if index < 0:
        return None
    rest = text[index + 4 :]
    cut = min((i for i in (rest.find("?"), rest.find(".")) if i >= 0), default=len(rest))
    value = rest[:cut].strip()
    return value or None


def _resolve(schema: Any, root: Any) -> dict[str, Any]:
    """``schema`` with ``$ref`` resolved and a nullable ``anyOf``/``oneOf``/``allOf`` collapsed."""
    for _ in range(32):
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target: Any = root if ref.startswith("#") else None
            path = ref[1:].strip("/")
            for part in path.split("/") if path and target is not None else ():
                key = part.replace("~1", "/").replace("~0", "~")
                target = target.get(key) if isinstance(target, dict) else None
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, dict) else rest
            continue
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                live = [
                    b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")
                ]
                pick = live[0] if live else branches[0]
                rest = {k: v for k, v in schema.items() if k != key}
                schema = {**rest, **pick} if isinstance(pick, dict) else rest
                break
        else:
            branches = schema.get("allOf")
            if isinstance(branches, list) and branches:
                merged = {k: v for k, v in schema.items() if k != "allOf"}
                for branch in branches:
                    if isinstance(branch, dict):
                        merged.update(_resolve(branch, root))
                schema = merged
                continue
            return schema
    return schema if isinstance(schema, dict) else {}


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _value(name: str, schema: Any, text: str, root: Any, depth: int, siblings: Any) -> Any:
    """A deterministic value for property ``name`` from its schema and the user's text."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = _type_of(schema)
    if kind == "integer":
        match = _INT_RE.search(text)
        return int(match.group()) if match else 0
    if kind == "number":
        match = _NUM_RE.search(text)
        return float(match.group()) if match else 0.0
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "object":
        return _object_args(schema, text, root, depth + 1)
    if kind == "array":
        items = _resolve(schema.get("items"), root)
        item_kind = _type_of(items) if items else ""
        if "enum" in items or "const" in items:
            return []
        if item_kind in ("integer", "number"):
            match = (_INT_RE if item_kind == "integer" else _NUM_RE).search(text)
            if match:
                return [int(match.group()) if item_kind == "integer" else float(match.group())]
        elif item_kind == "string":
            quoted = _quoted(text, siblings)
            if quoted is not None:
                return [quoted]
        return []
    quoted = _quoted(text, siblings)
    if quoted is not None:
        return quoted
    if _PLACE_RE.search(name):
        place = _place(text)
        if place is not None:
            return place
    return _phrase(name, text)


def _mentions(name: str, low: str) -> bool:
    for form in {name.lower(), name.lower().replace("_", " ")}:
        if re.search(r"(?<![a-z0-9])" + re.escape(form) + r"(?![a-z0-9])", low):
            return True
    return False


def _object_args(schema: Any, text: str, root: Any, depth: int = 0) -> dict[str, Any]:
    schema = _resolve(schema, root)
    properties = schema.get("properties")
    if not isinstance(properties, dict) or depth > _MAX_DEPTH:
        return {}
    required = schema.get("required")
    required = set(required) if isinstance(required, list) else set()
    low = text.lower()
    names = set(properties)
    return {
        name: _value(name, sub, text, root, depth, names)
        for name, sub in properties.items()
        if name in required or _mentions(name, low)
    }


def args_for(schema: Any, user_text: str) -> dict[str, Any]:
    """Deterministic arguments for a JSON schema (a tool's parameters or an output schema).

    Every required property is filled, an optional one only when the user's text names it.
    ``$ref`` into ``$defs``/``definitions`` and nullable ``anyOf``/``oneOf`` are resolved.
    integer/number: the first number in the text, else 0; boolean: true; enum: its first
    value; object: recursively; array: empty, or one item when the items are numbers or
    strings and the text has a number or a quoted value; string: a quoted value in the text,
    for a location-like name the text after the last " in ", else "<name> about <topic>".
    A tool (``{"name", "parameters"}`` or OpenAI's ``{"type": "function", "function"}``)
    or a ``{"name", "schema"}`` wrapper is accepted for its schema.
    """
    if isinstance(schema, dict):
        if isinstance(schema.get("function"), dict):
            schema = schema["function"]
        if "properties" not in schema:
            if isinstance(schema.get("parameters"), dict):
                schema = schema["parameters"]
            elif isinstance(schema.get("schema"), dict):
                schema = schema["schema"]
    return _object_args(schema, user_text or "", schema)


def _json_answer(schema: dict[str, Any] | None, text: str, messages: list[Any]) -> str:
    if schema is not None:
        obj: Any = args_for(schema, text)
    else:
        keys = list(dict.fromkeys(_KEY_RE.findall(text)))
        obj = {key: _phrase(key, text) for key in keys} if keys else {"answer": reply_for(messages)}
    return json.dumps(obj, ensure_ascii=False)


def respond(messages: list[dict[str, Any]], body: dict[str, Any] | None = None) -> _Answer:
    """The replica's answer to a conversation, tools and JSON instructions included.

    Returns ``{"text": str}``, or ``{"tool_call": {"name", "arguments"}}`` for a native tool
    call. ``body`` is the "openai" route's request body, whose ``tools``, ``tool_choice``
    and ``response_format`` count (native); ``None`` elsewhere. In order:

    1. the last message is a tool result (native: role ``tool``; emulated: the last user
       message begins with ``Tool result``): ``"The tool returned: <result>."``, or with a
       JSON output instruction a JSON object built from the result (as in 3);
    2. tools present and the choice is not ``none``: a call of the forced tool, or of the
       first tool named in the last user text (whole name, then a word of 4+ letters of the
       name), or with ``required`` the first tool; arguments from :func:`args_for`.
       Emulated, the text is ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``;
    3. a JSON output instruction: one JSON object (from the schema, else from the
       'quoted' keys the user names, else ``{"answer": reply_for(...)}``);
    4. otherwise :func:`reply_for`; on the "openai" route, followed by a description of
       the images of the last user message (:func:`describe_images`).
    """
    messages = messages if isinstance(messages, list) else []
    systems = _system_texts(messages)
    text = _last_user_text(messages)
    last = messages[-1] if messages else None
    wanted, schema = _native_json(body) if body is not None else (False, None)
    if not wanted:
        wanted, schema = _json_instruction(systems)
    result = None
    if body is not None and isinstance(last, dict) and last.get("role") == "tool":
        result = _text_of(last.get("content"))
    elif _RESULT_RE.match(text.lstrip()):
        result = _tool_result(text.lstrip())
    if result is not None:
        if wanted:  # an answer in the requested JSON shape, from the tool's result
            return {"text": _json_answer(schema, result, messages)}
        return {"text": _tool_answer(result)}
    found = _native_tools(body) if body is not None else None
    native = found is not None
    if found is None:
        found = _emulated_tools(systems)
    if found is not None and found[1] != "none":
        tools, choice = found
        tool = _pick_tool(tools, choice, text)
        if tool is not None:
            call: _ToolCall = {
                "name": tool["name"],
                "arguments": args_for(tool["parameters"], text),
            }
            if native:
                return {"tool_call": call}
            return {"text": json.dumps({"tool_calls": [call]}, ensure_ascii=False)}
    if wanted:
        return {"text": _json_answer(schema, text, messages)}
    seen = describe_images(last) if body is not None and isinstance(last, dict) else ""
    return {"text": reply_for(messages) + seen}


# --------------------------------------------------------------------------- images, reasoning


def _image_urls(message: dict[str, Any]) -> list[str]:
    """The ``image_url`` URLs of an OpenAI message, in order; raises ``ValueError`` if malformed."""
    content = message.get("content")
    urls = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "image_url":
            value = part.get("image_url")
            url = value.get("url") if isinstance(value, dict) else value
            if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
                msg = "each image_url part needs an http(s) or data: url"
                raise ValueError(msg)
            urls.append(url)
    return urls


def _describe(url: str) -> str:
    if not url.startswith("data:"):
        return f"an image at {url}"
    head, _, data = url.partition(",")
    digest = hashlib.sha1(data.encode("ascii", "replace"), usedforsecurity=False).hexdigest()[:8]
    return f"an {head[5:].split(';')[0]} image of {len(data)} base64 characters ({digest})"


def describe_images(message: dict[str, Any]) -> str:
    """What the replica says it sees in a message's ``image_url`` parts; empty if none.

    For example ``" I see 2 images: an image at <url>; an image/png image of N base64
    characters (<sha1 prefix>)."``
    """
    urls = _image_urls(message)
    if not urls:
        return ""
    noun = "image" if len(urls) == 1 else "images"
    return f" I see {len(urls)} {noun}: " + "; ".join(_describe(u) for u in urls) + "."


def reasoning_style(model: str) -> str | None:
    """How a model of the "openai" route reasons: ``"field"``, ``"think"`` or None.

    A model whose name contains "reasoner" streams its reasoning in ``reasoning_content``
    fields (``"field"``); one whose name contains "r1" opens its text with a ``<think>``
    section, the tags split across events (``"think"``).
    """
    low = model.lower()
    if "reasoner" in low:
        return "field"
    if "r1" in low:
        return "think"
    return None


def reasoning_for(messages: list[dict[str, Any]]) -> str:
    """The replica's deterministic reasoning about a conversation.

    ``"The user said: <last user text, stripped, first 80 chars>. I will answer in kind."``
    """
    said = _last_user_text(messages).strip()[:80]
    return f"The user said: {said}. I will answer in kind."


#: How a continuation request ends once Aichat has flattened it.
_AICHAT_CONTINUATION = f"\nuser: {CONTINUE_INSTRUCTION}\nassistant:"


def _aichat_conversation(prompt: str) -> list[dict[str, Any]]:
    """The messages of Aichat's flattened prompt the replica answers from.

    The system blocks (a ``system:`` line and its continuation lines, any case), then the
    last user message exactly as :func:`_aichat_messages` recovers it. A continuation
    (the partial answer as the last ``assistant:`` block, then the continuation
    instruction) is recovered as the conversation it continues, the partial answer and
    the instruction, as the other routes receive it.
    """
    if prompt.endswith(_AICHAT_CONTINUATION):
        head = prompt[: -len(_AICHAT_CONTINUATION)]
        cut = head.rfind("\nassistant: ")
        if cut >= 0:
            partial = head[cut + len("\nassistant: ") :]
            return [
                *_aichat_conversation(head[:cut] + "\nassistant:"),
                {"role": "assistant", "content": partial},
                {"role": "user", "content": CONTINUE_INSTRUCTION},
            ]
    systems: list[list[str]] = []
    current: list[str] | None = None
    for line in prompt.split("\n"):
        match = _ROLE_LINE_RE.match(line)
        if match:
            current = None
            if match.group(1).lower() == "system":
                first = line[match.end() :]
                current = [first.removeprefix(" ")]
                systems.append(current)
        elif current is not None:
            current.append(line)
    conversation = [{"role": "system", "content": "\n".join(lines)} for lines in systems]
    return conversation + _aichat_messages(prompt)


def _continued(messages: list[Any]) -> str | None:
    """The partial answer a continuation request continues; None for another request."""
    match messages:
        case [*_, dict() as partial, dict() as ask]:
            if ask.get("role") != "user" or partial.get("role") != "assistant":
                return None
            if _text_of(ask.get("content")).strip() != CONTINUE_INSTRUCTION:
                return None
            return _text_of(partial.get("content"))
    return None


def _split_arguments(arguments: str) -> list[str]:
    """A tool call's arguments JSON in 2 or 3 pieces (3 from 3 characters on)."""
    count = max(1, min(_ARGUMENT_PIECES, len(arguments)))
    cuts = [len(arguments) * k // count for k in range(count + 1)]
    return [arguments[cuts[k] : cuts[k + 1]] for k in range(count)]


def _words(text: str) -> int:
    return len(text.split())


def _apply_limits(pieces: list[str], stop: Any, max_tokens: int | None) -> tuple[list[str], str]:
    """Cut the answer at the first stop string, then to ``max_tokens`` pieces.

    Stop strings apply to the answer only, past a ``<think>`` section that opens the
    text, as reasoning servers do.
    """
    finish = "stop"
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s]
    if stops:
        text = "".join(pieces)
        start = _answer_start(text)
        cut = min((i for i in (text.find(s, start) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            kept: list[str] = []
            used = 0
            for piece in pieces:
                if used + len(piece) >= cut:
                    if cut > used:
                        kept.append(piece[: cut - used])
                    break
                kept.append(piece)
                used += len(piece)
            pieces = kept
    if max_tokens is not None and len(pieces) > max_tokens:
        pieces = pieces[:max_tokens]
        finish = "length"
    return pieces, finish


def _answer_start(text: str) -> int:
    """Where the answer starts: after a ``<think>...</think>`` section that opens the text."""
    if text.lstrip().startswith("<think>"):
        end = text.find("</think>")
        return len(text) if end < 0 else end + len("</think>")
    return 0


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def _chunk(model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-replica",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class _Encoder:
    """Pre-encoded halves of a content event for one model: only the piece is dumped per event."""

    _SENTINEL = "\x00replica-piece\x00"

    def __init__(self, model: str) -> None:
        self.first = self._halves(model, {"role": "assistant", "content": self._SENTINEL})
        self.rest = self._halves(model, {"content": self._SENTINEL})

    def _halves(self, model: str, delta: dict[str, Any]) -> tuple[bytes, bytes]:
        text = json.dumps(_chunk(model, delta, None), ensure_ascii=False)
        head, tail = text.rsplit(json.dumps(self._SENTINEL), 1)
        return b"data: " + head.encode("utf-8"), tail.encode("utf-8") + b"\n\n"

    def frame(self, piece: str, *, first: bool = False) -> bytes:
        head, tail = self.first if first else self.rest
        return _frame(head + json.dumps(piece, ensure_ascii=False).encode("utf-8") + tail)

    def torn(self, piece: str) -> bytes:
        """The start of the event that would carry ``piece``, cut early.

        The cut is after the first byte of its first character (inside it, when that
        character is multi-byte).
        """
        head, tail = self.rest
        data = head + json.dumps(piece, ensure_ascii=False).encode("utf-8") + tail
        cut = len(head) + 2  # the opening quote and the character's first byte
        return b"%x\r\n%b" % (len(data), data[:cut])


def _cut(pieces: list[str], chars: int) -> tuple[list[str], list[str]]:
    """The pieces holding the first ``chars`` characters, and those after them.

    A piece across the cut is split in two.
    """
    used = 0
    for index, piece in enumerate(pieces):
        if used + len(piece) > chars:
            split = chars - used
            head, tail = piece[:split], piece[split:]
            return pieces[:index] + ([head] if head else []), [tail, *pieces[index + 1 :]]
        used += len(piece)
    return list(pieces), []


@functools.lru_cache(maxsize=64)
def _encoder(model: str) -> _Encoder:
    return _Encoder(model)


def _openai_error(
    message: str, type_: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _Headers(dict[str, str]):
    """A plain dict of request headers whose lookups ignore case."""

    def _key(self, key: Any) -> Any:
        if isinstance(key, str) and not dict.__contains__(self, key):
            low = key.lower()
            for name in self:
                if name.lower() == low:
                    return name
        return key

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, self._key(key))

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, self._key(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self, self._key(key), default)


# --------------------------------------------------------------------------- HTTP


class _BadRequestError(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "g4f-replica/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence the access log
        pass

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def _handle(self) -> None:
        try:
            self._dispatch()
        except OSError:  # the client went away, or a fault closed the socket
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    # ------------------------------------------------------------------ plumbing

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError as exc:
                    msg = "bad chunked body"
                    raise _BadRequestError(msg) from exc
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as exc:
            msg = "bad Content-Length"
            raise _BadRequestError(msg) from exc
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, ctype: str, headers: _HeaderPairs = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: Any, headers: _HeaderPairs = ()) -> None:
        self._send(status, _dumps(obj), "application/json", headers)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.server.stop_event.wait(seconds)

    def _abort(self) -> None:
        """Close the socket abruptly (RST): SO_LINGER 0, then close."""
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()  # drop makefile's reference so close() really closes the fd
        sock.close()

    # ------------------------------------------------------------------ routing

    def _dispatch(self) -> None:
        server = self.server
        split = urlsplit(self.path)
        segment, _, rest = re.sub(r"/{2,}", "/", split.path).lstrip("/").partition("/")
        provider = segment.lower()
        subpath = "/" + rest
        try:
            raw = self._read_body()
        except _BadRequestError as exc:
            server.record(self.command, provider or None, subpath, self.headers, None, split.query)
            self.close_connection = True
            self._send_json(400, _openai_error(str(exc)))
            return
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        server.record(self.command, provider or None, subpath, self.headers, body, split.query)

        route = _ROUTES.get(provider)
        if route is None or self.command != "POST" or subpath.rstrip("/") != route:
            self._send_json(404, {"error": {"message": "not found"}})
            return
        fault, opts = server.take_fault(provider)
        if fault == "refuse":  # reached us through replica.url directly: drop the connection
            self._abort()
            return
        if fault == "hang":
            self._wait(opts["delay"])
            self.close_connection = True
            return
        if fault == "rate_limit":
            retry = opts["retry_after"]
            retry = int(retry) if float(retry).is_integer() else retry
            self._send_json(
                429,
                {"error": {"message": "Rate limit reached", "type": "rate_limit"}},
                (("Retry-After", str(retry)),),
            )
            return
        if fault == "http_502":
            self._send(502, _BAD_GATEWAY_HTML, "text/html")
            return
        if fault in _HTTP_ERRORS:
            status, message, type_ = _HTTP_ERRORS[fault]
            self._send_json(status, _openai_error(message, type_))
            return
        if fault == "html":
            self._send(200, _CLOUDFLARE_HTML, "text/html; charset=utf-8")
            return
        if bad_json or not isinstance(body, dict):
            self._send_json(400, _openai_error("We could not parse the JSON body of your request."))
            return
        if provider == "aichat":
            self._aichat(body, fault, opts)
        else:
            self._openai(provider, body, fault, opts)

    # ------------------------------------------------------------------ protocols

    def _aichat(self, body: dict[str, Any], fault: str | None, opts: _FaultOptions) -> None:
        prompt = body.get("message")
        if not isinstance(prompt, str):
            self._send_json(400, {"response": False, "message": "'message' must be a string"})
            return
        pieces, _, _ = self.server.answer("aichat", _aichat_conversation(prompt), None)
        if fault == "error_event":
            obj: dict[str, Any] = {"response": False, "message": _OVERLOADED}
        elif fault == "empty":
            obj = {"response": True, "message": ""}
        else:
            obj = {"response": True, "message": "".join(pieces)}
        self._send_payload(obj, fault, opts)

    def _openai(
        self, provider: str, body: dict[str, Any], fault: str | None, opts: _FaultOptions
    ) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._send_json(400, _openai_error("you must provide a model parameter"))
            return
        served = _MODELS[provider]
        if served is not None and model not in served:
            error = _openai_error(f"The model `{model}` does not exist", code="model_not_found")
            self._send_json(404, error)
            return
        messages = body.get("messages")
        if not isinstance(messages, list):
            self._send_json(400, _openai_error("'messages' must be a list"))
            return
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0
        ):
            self._send_json(400, _openai_error("'max_tokens' must be a non-negative integer"))
            return
        native = body if provider == "openai" else None
        try:
            pieces, benchmark, call = self.server.answer(provider, messages, native)
        except ValueError as exc:
            self._send_json(400, _openai_error(str(exc)))
            return
        if fault == "empty":
            pieces, call = [], None
        pieces, finish = _apply_limits(pieces, body.get("stop"), max_tokens)
        style = reasoning_style(model) if native is not None and call is None else None
        thoughts = _PIECE_RE.findall(reasoning_for(messages)) if style else []
        if style == "think":
            pieces = ["<th", "ink>", *thoughts, "</thi", "nk>\n\n", *pieces]
            thoughts = []
        prompt_tokens = sum(
            _words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        include_usage = (
            provider == "openai"
            and isinstance(body.get("stream_options"), dict)
            and body["stream_options"].get("include_usage") is True
        )
        if call is not None:
            self._tool_call(
                model,
                call,
                prompt_tokens,
                fault,
                opts,
                include_usage=include_usage,
                stream=bool(body.get("stream")),
            )
            return
        if body.get("stream"):
            self._stream(
                model,
                pieces,
                finish,
                prompt_tokens,
                fault,
                opts,
                include_usage=include_usage,
                benchmark=benchmark,
                thoughts=thoughts,
            )
            return
        if fault == "error_event":
            error = {"error": {"message": _OVERLOADED, "type": "server_error"}}
            self._send_payload(error, fault, opts)
            return
        text = "".join(pieces)
        completion_tokens = _words(text)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        obj = {
            "id": "chatcmpl-replica",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        self._send_payload(obj, fault, opts)

    def _send_payload(self, obj: Any, fault: str | None, opts: _FaultOptions) -> None:
        """A non-streaming JSON answer, with the answer-level faults applied."""
        text = json.dumps(obj, ensure_ascii=False)
        if fault == "truncated_json":
            text = text[: len(text) // 2]
        body = text.encode("utf-8")
        if fault == "slow":
            self._wait(opts["delay"])
        if fault not in ("stall", "reset"):
            self._send(200, body, "application/json")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "stall":
            self._wait(opts["delay"])
            self.close_connection = True
        else:
            self.wfile.write(body[: len(body) // 2])
            self._abort()

    def _stream(
        self,
        model: str,
        pieces: list[str],
        finish: str,
        prompt_tokens: int,
        fault: str | None,
        opts: _FaultOptions,
        *,
        include_usage: bool,
        benchmark: bool,
        thoughts: Sequence[str] = (),
    ) -> None:
        """Server-sent events over hand-written chunked transfer encoding, one chunk per event.

        ``thoughts`` go first, each in a ``reasoning_content`` delta.
        """
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        write = self.wfile.write
        for piece in thoughts:
            delta = {"role": "assistant", "content": None, "reasoning_content": piece}
            write(_frame(b"data: " + _dumps(_chunk(model, delta, None)) + b"\n\n"))
        encoder = _encoder(model)
        limit, torn = len(pieces), b""
        if fault in _BREAKS:
            if opts["after_chars"] is not None:
                pieces, rest = _cut(pieces, opts["after_chars"])
                torn = encoder.torn(rest[0]) if rest and fault in ("reset", "stall") else b""
                limit = len(pieces)
            else:
                limit = min(limit, max(0, opts["after_chunks"]))
        delay = opts["delay"] if fault == "slow" else 0.0
        batch = benchmark and fault is None
        cache: dict[str, bytes] = {}
        buffer: list[bytes] = []
        size = 0
        for index in range(limit):
            piece = pieces[index]
            frame = encoder.frame(piece, first=True) if index == 0 else cache.get(piece)
            if frame is None:
                frame = cache[piece] = encoder.frame(piece)
            if batch:
                buffer.append(frame)
                size += len(frame)
                if size >= _BATCH_BYTES:
                    write(b"".join(buffer))
                    buffer.clear()
                    size = 0
            else:
                if delay:
                    self._wait(delay)
                write(frame)
        if buffer:
            write(b"".join(buffer))
        if torn:
            write(torn)
        self._stream_end(
            model,
            finish,
            lambda: _words("".join(pieces)),
            prompt_tokens,
            fault,
            opts,
            include_usage=include_usage,
            batch=batch,
        )

    def _stream_end(
        self,
        model: str,
        finish: str,
        completion_tokens: Callable[[], int],
        prompt_tokens: int,
        fault: str | None,
        opts: _FaultOptions,
        *,
        include_usage: bool,
        batch: bool,
    ) -> None:
        """After the content events: the fault's ending, or finish, usage and ``[DONE]``."""
        write = self.wfile.write
        if fault == "stall":
            self._wait(opts["delay"])
            self.close_connection = True
            return
        if fault == "reset":
            self._abort()
            return
        if fault == "truncated_json":
            write(_frame(b'data: {"choices": [{"delta": {"cont\n\n') + _END)
            return
        if fault == "error_event":
            error = {"error": {"message": _OVERLOADED, "type": "server_error"}}
            write(_frame(b"data: " + _dumps(error) + b"\n\n") + _END)
            return
        tail = [_frame(b"data: " + _dumps(_chunk(model, {}, finish)) + b"\n\n")]
        if include_usage:
            completion = completion_tokens()
            usage = {
                "id": "chatcmpl-replica",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion,
                },
            }
            tail.append(_frame(b"data: " + _dumps(usage) + b"\n\n"))
        tail.append(_frame(b"data: [DONE]\n\n") + _END)
        if batch:
            write(b"".join(tail))
        else:
            for frame in tail:
                write(frame)

    def _tool_call(
        self,
        model: str,
        call: _ToolCall,
        prompt_tokens: int,
        fault: str | None,
        opts: _FaultOptions,
        *,
        include_usage: bool,
        stream: bool,
    ) -> None:
        """A native (OpenAI) tool call, as one completion or as tool-call delta events."""
        name = call["name"]
        arguments = json.dumps(call["arguments"], ensure_ascii=False)
        digest = hashlib.sha1((name + arguments).encode("utf-8"), usedforsecurity=False)
        call_id = "call_" + digest.hexdigest()[:24]
        completion_tokens = _words(arguments)
        if not stream:
            if fault == "error_event":
                error = {"error": {"message": _OVERLOADED, "type": "server_error"}}
                self._send_payload(error, fault, opts)
                return
            tool_call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [tool_call]}
            obj = {
                "id": "chatcmpl-replica",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
            self._send_payload(obj, fault, opts)
            return
        head = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        deltas: list[dict[str, Any]] = [
            {"role": "assistant", "content": None, "tool_calls": [head]},
            *(
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                for piece in _split_arguments(arguments)
            ),
        ]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        limit = len(deltas)
        if fault in ("stall", "reset", "error_event", "truncated_json"):
            limit = min(limit, max(0, opts["after_chunks"]))
        delay = opts["delay"] if fault == "slow" else 0.0
        for delta in deltas[:limit]:
            if delay:
                self._wait(delay)
            self.wfile.write(_frame(b"data: " + _dumps(_chunk(model, delta, None)) + b"\n\n"))
        self._stream_end(
            model,
            "tool_calls",
            lambda: completion_tokens,
            prompt_tokens,
            fault,
            opts,
            include_usage=include_usage,
            batch=False,
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops connections when a hundred
    # clients connect at once (router concurrency tests, benchmarks).
    request_queue_size = 256

    def __init__(
        self,
        address: tuple[str, int],
        *,
        record: Callable[[str, str | None, str, Message, Any, str], None],
        take_fault: Callable[[str], tuple[str | None, _FaultOptions]],
        answer: Callable[
            [str, list[Any], dict[str, Any] | None], tuple[list[str], bool, _ToolCall | None]
        ],
    ) -> None:
        # How the handler talks to its Replica: log a request, take the fault for a request
        # of a provider, answer one.
        self.record, self.take_fault, self.answer = record, take_fault, answer
        self.stop_event = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can be slow.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.socket.getsockname()[:2]

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(sock)
            else:
                self._connections.discard(sock)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError) or self.stop_event.is_set():
            return  # a client disconnect, or shutting down: not worth a traceback
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------- public


class Redirect:
    """The registered seed providers pointed at a replica (see ``redirect_providers``)."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._saved: list[tuple[Provider, str]] = []

    def start(self) -> Redirect:
        """Point the seed providers at the replica; raises if it already has a redirect."""
        if self.replica.redirect is not None:
            msg = "the providers are already redirected to this replica"
            raise RuntimeError(msg)
        self._saved = [
            (p, p.url) for p in providers.all_providers() if p.name.lower() in _SEED_ROUTES
        ]
        self.replica.redirect = self
        self.point()
        return self

    def point(self) -> None:
        """Set each saved provider's URL to the replica's current base URL for it.

        The path comes from the provider's own declared URL, not its current one, which
        may already lead to another replica (a redirect inside another).
        """
        for provider, _ in self._saved:
            path = urlsplit(type(provider).url).path.rstrip("/")
            provider.url = self.replica.base_url(provider.name) + path

    def stop(self) -> None:
        """Give the providers back their own URLs."""
        for provider, url in self._saved:
            provider.url = url
        self._saved = []
        if self.replica.redirect is self:
            self.replica.redirect = None

    def __enter__(self) -> Replica:
        self.start()
        return self.replica

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Replica:
    """A deterministic local server speaking the providers' protocols, with per-provider faults.

    ``requests`` logs every request as ``{"provider", "path", "headers", "json", "query",
    "method"}``: ``path`` is relative to ``base_url(provider)``, ``headers`` a dict with
    case-insensitive lookups, ``json`` the parsed body (or None), ``query`` a dict.
    ``redirect`` is the started :meth:`redirect_providers`, if any.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.redirect: Redirect | None = None
        self._lock = threading.Lock()
        self._faults: dict[str, _Fault] = {}
        self._replies: dict[str | None, list[str]] = {}
        self._repeat: dict[str | None, int] = {}
        self._stream_size: tuple[int, str] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._dead_port: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start serving in a background thread (idempotent); returns self."""
        if self._server is None:
            server = _Server(
                (self.host, self.port),
                record=self._record,
                take_fault=self._take_fault,
                answer=self._answer,
            )
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"g4f-replica:{server.server_address[1]}",
                daemon=True,
            )
            self._server, self._thread = server, thread
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hung or stalled handlers and close every connection."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.stop_event.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=1.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"Replica({state})"

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._server is None:
            msg = "the replica is not running: call start() first"
            raise RuntimeError(msg)
        host, port = self._server.server_name, self._server.server_port
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def base_url(self, provider: str) -> str:
        """The base URL to give a provider; a closed port while its fault is ``refuse``."""
        name = provider.lower()
        with self._lock:
            entry = self._faults.get(name)
            refused = entry is not None and entry.name == "refuse"
        if refused:
            return f"http://127.0.0.1:{self._closed_port()}/{name}"
        return f"{self.url}/{name}"

    def redirect_providers(self) -> Redirect:
        """Point the registered seed providers at the replica, until the block ends.

        For code written against the real endpoints (``ChatG4F(provider="Lockchat")``
        with no ``base_url``): notebooks, examples, users' own offline tests::

            with Replica() as replica, replica.redirect_providers():
                ChatG4F(provider="Lockchat").invoke("Hi")

        The URLs follow later ``set_fault(..., "refuse")`` and ``reset()`` calls.
        ``start()`` / ``stop()`` do the same outside a ``with`` block.
        """
        return Redirect(self)

    def _repoint(self) -> None:
        redirect = self.redirect
        if redirect is not None:
            redirect.point()

    def _closed_port(self) -> int:
        with self._lock:
            if self._dead_port is None:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", 0))
                    self._dead_port = sock.getsockname()[1]
            return self._dead_port

    # ------------------------------------------------------------------ configuration

    @staticmethod
    def _name(provider: str) -> str:
        name = provider.lower()
        if name not in _ROUTES:
            msg = f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}"
            raise ValueError(msg)
        return name

    def set_fault(
        self, provider: str, fault: str | None, *, times: int | None = None, **options: Any
    ) -> None:
        """Inject ``fault`` (one of ``FAULTS``) into a provider's route; ``None`` clears it.

        ``times``: only the next N requests of that provider, then normal answers.
        Options: ``retry_after`` (rate_limit, default 1), ``delay`` (seconds; hang and stall
        default 30, slow default 0.05), ``after_chunks`` (stall, reset, error_event,
        truncated_json: text chunks sent first, default 2), ``after_chars`` (the same
        faults on a streamed text answer: characters of text sent first, instead of
        ``after_chunks``; a ``reset`` or a ``stall`` then also sends the start of the
        next event, cut inside its first character's UTF-8 bytes).
        """
        name = self._name(provider)
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            msg = f"unknown fault option(s): {', '.join(unknown)}"
            raise TypeError(msg)
        if fault is not None and fault not in FAULTS:
            msg = f"unknown fault {fault!r}; known: {', '.join(FAULTS)}"
            raise ValueError(msg)
        if times is not None and times < 0:
            msg = "times must be >= 0"
            raise ValueError(msg)
        if fault is None or times == 0:
            with self._lock:
                self._faults.pop(name, None)
            self._repoint()
            return
        after_chars = options.get("after_chars")
        opts: _FaultOptions = {
            "retry_after": options.get("retry_after", 1),
            "delay": float(options.get("delay", _DEFAULT_DELAY.get(fault, 0.0))),
            "after_chunks": int(options.get("after_chunks", 2)),
            "after_chars": None if after_chars is None else max(0, int(after_chars)),
        }
        with self._lock:
            self._faults[name] = _Fault(fault, times, opts)
        self._repoint()

    def _take_fault(self, name: str) -> tuple[str | None, _FaultOptions]:
        """The fault for this request of ``name``, counting it down atomically."""
        with self._lock:
            entry = self._faults.get(name)
            if entry is None:
                return None, _NO_OPTIONS
            if entry.left is not None:
                if entry.left <= 1:
                    del self._faults[name]
                else:
                    entry.left -= 1
            return entry.name, entry.options

    def set_reply(
        self, provider: str | None, text: str | None, *, chunks: list[str] | None = None
    ) -> None:
        """Script the answer for one provider (``None``: all), overriding :func:`reply_for`.

        ``chunks`` gives the exact stream pieces (and wins over ``text``); ``text`` is split
        into word pieces. Both ``None`` clears the script. A provider's own script wins over
        the all-providers one; scripts win over ``set_stream_size``.
        """
        key = None if provider is None else self._name(provider)
        with self._lock:
            if chunks is not None:
                self._replies[key] = [str(chunk) for chunk in chunks]
            elif text is not None:
                self._replies[key] = _PIECE_RE.findall(text)
            else:
                self._replies.pop(key, None)

    def set_repeat_tail(self, provider: str | None, chars: int) -> None:
        """Make continuations repeat the end of the partial answer first, as models often do.

        A provider's continuations (``None``: every provider's) start with the last
        ``chars`` characters of the partial answer; 0 ends it.

        A continuation is a request whose last message is the user message
        :data:`~langchain_g4f.continuation.CONTINUE_INSTRUCTION` after an assistant
        message holding a partial answer. Its answer is the rest of the answer the
        replica gives to the conversation before those two messages, after the
        partial text.
        """
        if chars < 0:
            msg = "chars must be >= 0"
            raise ValueError(msg)
        key = None if provider is None else self._name(provider)
        with self._lock:
            if chars:
                self._repeat[key] = chars
            else:
                self._repeat.pop(key, None)

    def set_stream_size(self, n_chunks: int | None, chunk_text: str = "tok ") -> None:
        """Benchmark mode: every answer is ``n_chunks`` pieces of ``chunk_text``; None ends it."""
        if n_chunks is not None and n_chunks < 0:
            msg = "n_chunks must be >= 0"
            raise ValueError(msg)
        with self._lock:
            self._stream_size = None if n_chunks is None else (int(n_chunks), chunk_text)

    def reset(self) -> None:
        """Clear faults, scripted replies, repeated tails, benchmark mode and the request log."""
        with self._lock:
            self._faults.clear()
            self._replies.clear()
            self._repeat.clear()
            self._stream_size = None
            self.requests.clear()
        self._repoint()

    # ------------------------------------------------------------------ used by the handler

    def _answer(
        self, name: str, messages: list[Any], body: dict[str, Any] | None
    ) -> tuple[list[str], bool, _ToolCall | None]:
        """A request's answer: text pieces, whether benchmark mode made them, a native call.

        A script (``set_reply``) wins, then benchmark mode, then :func:`respond`. A
        continuation gets the rest of the answer to the conversation it continues.
        """
        partial = _continued(messages)
        if partial is not None:
            return self._continuation(name, messages[:-2], body, partial)
        with self._lock:
            scripted = self._replies.get(name, self._replies.get(None))
            size = self._stream_size
        if scripted is not None:
            return list(scripted), False, None
        if size is not None:
            return [size[1]] * size[0], True, None
        answer = respond(messages, body)
        if "tool_call" in answer:
            return [], False, answer["tool_call"]
        return _PIECE_RE.findall(answer["text"]), False, None

    def _continuation(
        self, name: str, messages: list[Any], body: dict[str, Any] | None, partial: str
    ) -> tuple[list[str], bool, _ToolCall | None]:
        """The rest of the answer to ``messages`` after ``partial``.

        The configured repeat of the partial's tail (``set_repeat_tail``) comes first.
        """
        pieces, benchmark, call = self._answer(name, messages, body)
        if call is not None:
            return pieces, benchmark, call
        answer = "".join(pieces)
        done = 0
        while done < min(len(answer), len(partial)) and answer[done] == partial[done]:
            done += 1
        with self._lock:
            repeat = self._repeat.get(name, self._repeat.get(None, 0))
        tail = partial[len(partial) - min(repeat, len(partial)) :]
        return _PIECE_RE.findall(tail) + _cut(pieces, done)[1], benchmark, None

    def _record(
        self, method: str, provider: str | None, path: str, headers: Message, body: Any, query: str
    ) -> None:
        entry = {
            "provider": provider,
            "path": path,
            "headers": _Headers(headers.items()),
            "json": body,
            "query": dict(parse_qsl(query, keep_blank_values=True)),
            "method": method,
        }
        with self._lock:
            self.requests.append(entry)
