"""Tool calling for providers with and without native support.

*Native* providers (an OpenAI-compatible endpoint with ``native_tools=True``)
get the OpenAI ``tools`` / ``tool_choice`` fields and answer with ``tool_calls``.
Every other provider is *emulated*: a system instruction describes the tools
and a reply format, and :func:`parse_tool_calls` turns a reply into standard
tool calls. Earlier tool calls and tool results in the history are written in
the same format, so the conversation reads the same way to the model.

Tool-call ids are derived from the call itself (name, arguments, position), so
the same conversation always produces the same request bodies.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal, Protocol

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    InvalidToolCall,
    ToolCall,
    ToolCallChunk,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call as make_invalid_tool_call
from langchain_core.messages.tool import tool_call as make_tool_call
from langchain_core.messages.tool import tool_call_chunk as make_tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import (
    JsonOutputKeyToolsParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import (
    convert_to_json_schema,
    convert_to_openai_tool,
)
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel

from langchain_g4f.errors import ConfigurationError

__all__ = [
    "JSON_MARKER",
    "TOOLS_MARKER",
    "ToolCallingMixin",
    "ToolReplyStream",
    "call_chunks",
    "convert_tools",
    "emulated_call_text",
    "emulated_result_text",
    "json_instruction",
    "native_calls",
    "native_chunks",
    "native_message_calls",
    "native_response_format",
    "native_tool_choice",
    "normalize_tool_choice",
    "parse_tool_calls",
    "response_schema",
    "tool_call_id",
    "tool_instruction",
]

#: The line the tools' JSON follows (the local replica looks for it too).
TOOLS_MARKER = "You can call these tools. Each is described by a JSON schema:"
_TOOL_RESULT_PREFIX = "Tool result"
JSON_MARKER = "Reply with nothing but one JSON object"

_CHOICE_LINES = {
    "auto": "Call a tool only when it helps; otherwise answer in plain text.",
    "required": "You must call at least one tool now.",
}


# --- declaring tools ---------------------------------------------------------


def convert_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """Tools (functions, pydantic models, ``BaseTool``, dicts) in OpenAI form.

    Each description is as :func:`inspect.cleandoc` leaves it: Python 3.13 strips a
    docstring's indentation when it compiles it and earlier Pythons keep it, so a tool
    is sent the same way on every Python.
    """
    return [_clean_description(convert_to_openai_tool(tool)) for tool in tools]


def _clean_description(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("description"), str):
        return tool
    return {
        **tool,
        "function": {**function, "description": inspect.cleandoc(function["description"])},
    }


def normalize_tool_choice(choice: Any, tools: list[dict[str, Any]]) -> str | None:
    """``None``, ``"auto"``, ``"none"``, ``"required"`` or a tool name.

    Accepts LangChain's spellings: ``"any"`` and ``True`` mean required, a
    tool's name or ``{"type": "function", "function": {"name": ...}}`` forces it.
    """
    names = [t["function"]["name"] for t in tools]
    if choice is None or choice == "auto":
        return None if choice is None else "auto"
    if choice is True or choice in ("any", "required"):
        return "required"
    if choice is False or choice == "none":
        return "none"
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if isinstance(choice, str) and choice in names:
        return choice
    msg = (
        f"tool_choice {choice!r} is not 'auto', 'none', 'any', 'required' or the name "
        f"of a bound tool ({', '.join(names) or 'no tools are bound'})"
    )
    raise ConfigurationError(msg)


def native_tool_choice(choice: str | None) -> Any:
    """A normalized choice in the OpenAI wire form."""
    if choice in (None, "auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def tool_instruction(tools: list[dict[str, Any]], choice: str | None) -> str:
    """The system instruction that teaches an emulated provider the tools."""
    described = [
        {
            "name": t["function"]["name"],
            "description": t["function"].get("description", ""),
            "parameters": t["function"].get("parameters", {}),
        }
        for t in tools
    ]
    choice_line = _CHOICE_LINES.get(choice or "auto") or f'You must call the tool "{choice}" now.'
    return (
        "# Tools\n"
        f"{TOOLS_MARKER}\n"
        f"{json.dumps(described, ensure_ascii=False)}\n\n"
        "To call tools, reply with nothing but one JSON object of this form:\n"
        '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}\n'
        f"{choice_line}\n"
        f'Tool results come back in messages that begin with "{_TOOL_RESULT_PREFIX}". '
        "Then answer the user in plain text, or call tools again."
    )


def _json_mode_format(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The ``response_format`` of ``json_mode``: a JSON object, the schema kept for emulation.

    Endpoints with a native JSON mode get ``{"type": "json_object"}`` alone
    (:func:`native_response_format`); the others get the schema in the
    instruction (:func:`response_schema`), so the model knows the keys.
    """
    return {"type": "json_object", **({"schema": schema} if schema is not None else {})}


def native_response_format(response_format: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` as an OpenAI endpoint takes it (json_mode carries no schema)."""
    if response_format.get("type") == "json_object":
        return {"type": "json_object"}
    return response_format


def response_schema(response_format: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a ``response_format`` asks for, if it names one."""
    if response_format.get("type") == "json_object":
        return response_format.get("schema")
    return (response_format.get("json_schema") or {}).get("schema")


def json_instruction(schema: dict[str, Any] | None) -> str:
    """The system instruction for JSON output (json_mode / json_schema)."""
    if schema is None:
        return f"# Output format\n{JSON_MARKER}."
    return (
        f"# Output format\n{JSON_MARKER} that matches this JSON schema:\n"
        f"{json.dumps(schema, ensure_ascii=False)}"
    )


# --- history -------------------------------------------------------------------


def tool_call_id(name: str, args: Any, index: int) -> str:
    """A deterministic id for a tool call."""
    digest = hashlib.sha1(
        f"{index}:{name}:{json.dumps(args, sort_keys=True, ensure_ascii=False)}".encode(),
        usedforsecurity=False,
    ).hexdigest()
    return f"call_{digest[:24]}"


def emulated_call_text(message: AIMessage, content: str) -> str:
    """An earlier assistant turn with tool calls, in the emulated reply format."""
    calls = [{"name": c["name"], "arguments": c["args"]} for c in message.tool_calls]
    block = json.dumps({"tool_calls": calls}, ensure_ascii=False)
    return f"{content}\n{block}" if content else block


def emulated_result_text(
    message: ToolMessage, name: str | None, position: int | None, content: str
) -> str:
    """A tool result, as an emulated provider reads it.

    The emulated call format carries no ids, so a result points at its call
    by name and by position in the assistant turn ("call 2"). That also keeps
    request bodies free of random ids.
    """
    status = " [error]" if message.status == "error" else ""
    where = f" (call {position})" if position is not None else ""
    return f"{_TOOL_RESULT_PREFIX} for {name or 'tool'}{where}{status}:\n{content}"


def native_calls(message: AIMessage) -> list[dict[str, Any]]:
    """An assistant turn's tool calls in the OpenAI wire form."""
    return [
        {
            "id": call["id"],
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": json.dumps(call["args"], ensure_ascii=False),
            },
        }
        for call in message.tool_calls
    ]


# --- parsing an emulated reply -------------------------------------------------

_FENCE = "```"
#: A fence's opening: the backticks, a ``json`` tag, blank space; its body follows.
_FENCE_OPEN = re.compile(r"```(?:json|JSON)?\s*")

# JSON as ``json``'s decoder reads it (NaN and Infinity included), cut into the steps
# :class:`_JSONObjects` takes. The last character of a step says what it ended on.
_WS = r"[ \t\n\r]*"
_STRING = r'"(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"'
_ATOM = (
    rf"(?:{_STRING}|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
    r"|true|false|null|NaN|Infinity|-Infinity)"
)
_MEMBER = rf"{_STRING}{_WS}:{_WS}{_ATOM}{_WS}"
#: An object or array that holds no object or array.
_FLAT = (
    rf"\{{{_WS}(?:}}|{_MEMBER}(?:,{_WS}{_MEMBER})*}})"
    rf"|\[{_WS}(?:]|{_ATOM}{_WS}(?:,{_WS}{_ATOM}{_WS})*])"
)
#: A value: a flat one and the separator after it, or the opening of containers:
#: ``[``s one inside the other, then the last ``[``, or a ``{`` and its first key.
_VALUE = (
    rf"(?:(?P<flat>{_FLAT})|{_ATOM}){_WS}[,}}\]]"
    rf"|(?P<arrays>(?:\[{_WS})*)(?:(?P<array>\[)|(?P<object>\{{){_WS}{_STRING}{_WS}:)"
)
_STEPS = {  # what may come next -> the step that reads it
    "value": re.compile(rf"{_WS}(?:{_VALUE})"),
    "first value": re.compile(rf"{_WS}(?:{_VALUE}|])"),
    "key": re.compile(rf"{_WS}{_STRING}{_WS}:"),
    "first key": re.compile(rf"{_WS}(?:}}|{_STRING}{_WS}:)"),
    "separator": re.compile(rf"{_WS}[,}}\]]"),
}
_FLAT_OBJECT = re.compile(_FLAT)
#: A ``{`` that may open an object: then a key and its colon, or the closing brace.
_OBJECT_START = re.compile(rf"\{{(?={_WS}(?:}}|{_STRING}{_WS}:))")
#: Deeper objects are no tool calls: ``json``'s decoder recurses once per level and
#: fails on them with a RecursionError (at a depth below Python's recursion limit).
_MAX_DEPTH = 500


class _JSONObjects:
    """Where the JSON object that opens at a ``{`` of ``text`` ends, for any ``{``.

    :meth:`end` agrees with ``json.JSONDecoder().raw_decode(text, start)`` for
    objects nested up to :data:`_MAX_DEPTH` deep, in time linear in the text
    however many starts are asked about: each object is parsed once and its end
    (or failure) kept, and a parse that meets an object parsed before jumps over it.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        #: object start -> (end, depth); end -1: no object opens there, or one too deep
        self.parsed: dict[int, tuple[int, int]] = {}

    def end(self, start: int) -> int:
        """The end of the object that opens at ``start``, or -1 if none does."""
        if start not in self.parsed:
            flat = _FLAT_OBJECT.match(self.text, start)
            if flat is None:
                self._parse(start)
            else:
                self.parsed[start] = (flat.end(), 1)
        return self.parsed[start][0]

    def _parse(self, start: int) -> None:
        """Parse the object at ``start``, keeping its outcome and every inner object's."""
        text, parsed, steps = self.text, self.parsed, _STEPS
        # The open containers, outermost first, in three lists of ints (no garbage for
        # the collector to walk): where each starts (-1 for arrays), how many nested
        # arrays it stands for (1 for an object), the depth of the innermost of them
        # from what it holds so far.
        starts, counts, depths = [start], [1], [1]
        expect, pos = "first key", start + 1
        while True:
            read = steps[expect].match(text, pos)
            if read is None:
                break
            pos, opened = read.end(), read.lastgroup
            if opened in ("array", "object"):
                run, inner = read.span("arrays")  # an object opens where the run ends
                arrays = (run < inner and text.count("[", run, inner)) + (opened == "array")
                if arrays:
                    starts.append(-1)
                    counts.append(arrays)
                    depths.append(1)
                    expect = "first value"
                if opened == "object":
                    known = parsed.get(inner)
                    if known is None:
                        starts.append(inner)
                        counts.append(1)
                        depths.append(1)
                        expect = "value"  # its first key is read
                        continue
                    pos, depth = known
                    if pos < 0:
                        break
                    depths[-1] = max(depths[-1], depth + 1)
                    expect = "separator"
                continue
            last, is_object = text[pos - 1], starts[-1] >= 0
            if opened == "flat":
                depths[-1] = max(depths[-1], 2)
            if last == ":":
                expect = "value"
            elif last == ",":
                expect = "key" if is_object else "value"
            elif (last == "}") != is_object:  # a bracket that closes nothing open
                break
            else:
                depth = depths[-1]
                counts[-1] -= 1
                if counts[-1]:  # the next array out holds the one that closed
                    depths[-1] = depth + 1
                else:
                    closed = starts.pop()
                    counts.pop()
                    depths.pop()
                    if closed >= 0:
                        parsed[closed] = (pos if depth <= _MAX_DEPTH else -1, depth)
                    if not starts:
                        return
                    depths[-1] = max(depths[-1], depth + 1)
                expect = "separator"
        failed = (-1, 0)  # a syntax error inside each open container
        parsed.update((container, failed) for container in starts if container >= 0)


def _json_objects(text: str) -> Iterator[tuple[int, int, str]]:
    """``(begin, end, body)`` of the JSON objects found from each ``{`` on.

    As ``raw_decode`` tried at each ``{`` finds them: the search goes on after
    the end of an object, and at the next ``{`` where none opens.
    """
    objects, after = _JSONObjects(text), 0
    for opening in _OBJECT_START.finditer(text):
        start = opening.start()
        if start >= after:
            end = objects.end(start)
            if end >= 0:
                yield start, end, text[start:end]
                after = end


def _fenced_blocks(text: str) -> Iterator[tuple[int, int, str]]:
    """``(begin, end, body)`` of each fenced code block (a fence, then the next fence)."""
    opening = _FENCE_OPEN.search(text)
    while opening is not None:
        close = text.find(_FENCE, opening.end())
        if close == -1:  # no later fence has a closing one either
            return
        yield opening.start(), close + len(_FENCE), text[opening.end() : close]
        opening = _FENCE_OPEN.search(text, close + len(_FENCE))


def _may_hold_calls(body: str) -> bool:
    r"""Whether JSON ``body`` may have a "name" or "tool_calls" key (perhaps \u-escaped)."""
    return '"name"' in body or '"tool_calls"' in body or "\\u" in body


def _calls_in(obj: Any, names: set[str]) -> list[tuple[str, dict[str, Any]]] | None:
    """``(name, args)`` pairs if ``obj`` is a tool-call object naming bound tools."""
    if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
        items = obj["tool_calls"]
    elif isinstance(obj, dict) and "name" in obj:
        items = [obj]
    else:
        return None
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        if item["name"] not in names:
            return None
        args = item.get("arguments", item.get("args", item.get("parameters", {})))
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except (ValueError, RecursionError):
                return None
        if not isinstance(args, dict):
            return None
        calls.append((item["name"], args))
    return calls or None


def parse_tool_calls(text: str, names: set[str]) -> tuple[str, list[ToolCall]] | None:
    """Find a tool-call object in a reply: ``(the text around it, the calls)``.

    Accepts ``{"tool_calls": [{"name", "arguments"}]}`` or a single
    ``{"name", "arguments"}``, bare or in a fenced code block, with text
    around it. Returns ``None`` when the reply is plain text. The time taken
    is linear in the length of the reply, whatever it holds.
    """
    if not _may_hold_calls(text):  # no object in it can name a call: one scan of the text
        return None
    for begin, end, body in sorted([*_fenced_blocks(text), *_json_objects(text)]):
        if not _may_hold_calls(body):
            continue
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            continue
        calls = _calls_in(obj, names)
        if calls:
            rest = (text[:begin] + text[end:]).strip()
            return rest, [
                make_tool_call(name=name, args=args, id=tool_call_id(name, args, i))
                for i, (name, args) in enumerate(calls)
            ]
    return None


class ToolReplyStream:
    """Streams an emulated reply: prose goes out as it comes, a possible tool call is held.

    From the first ``{`` or code fence on, the text is held back until the end.
    """

    __slots__ = ("_held", "_holding", "names")

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self._held: list[str] = []  # pieces, joined once at the end: no quadratic copying
        self._holding = False

    def push(self, text: str) -> str:
        """Take the next text; return what can be shown now."""
        if self._holding:
            self._held.append(text)
            return ""
        held = "".join(self._held) + text
        cut = min((i for i in (held.find("{"), held.find(_FENCE)) if i >= 0), default=-1)
        if cut < 0:
            # Keep back a trailing "`" or "``": it may open a fence.
            keep = min(len(held) - len(held.rstrip("`")), 2)
            self._held = [held[len(held) - keep :]] if keep else []
            return held[: len(held) - keep]
        self._holding = True
        self._held = [held[cut:]]
        return held[:cut]

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The rest of the text, and the tool calls it held, if any."""
        held, self._held = "".join(self._held), []
        found = parse_tool_calls(held, self.names) if held else None
        if found is None:
            return held, []
        return found


def call_chunks(calls: list[ToolCall]) -> list[ToolCallChunk]:
    """Tool calls as indexed ``tool_call_chunks`` for the last stream chunk."""
    return [
        make_tool_call_chunk(
            name=call["name"],
            args=json.dumps(call["args"], ensure_ascii=False),
            id=call["id"],
            index=i,
        )
        for i, call in enumerate(calls)
    ]


def native_chunks(fragments: list[dict[str, Any]]) -> list[ToolCallChunk]:
    """OpenAI streamed ``tool_calls`` fragments as ``tool_call_chunks``."""
    out = []
    for fragment in fragments:
        function = fragment.get("function") or {}
        out.append(
            make_tool_call_chunk(
                name=function.get("name"),
                args=function.get("arguments"),
                id=fragment.get("id"),
                index=fragment.get("index", 0),
            )
        )
    return out


def native_message_calls(
    raw: list[dict[str, Any]],
) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """A whole OpenAI ``message.tool_calls`` as (valid calls, invalid calls)."""
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for i, item in enumerate(raw):
        function = item.get("function") or {}
        name = function.get("name")
        arguments = function.get("arguments") or "{}"
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except (ValueError, RecursionError) as exc:
            args, error = None, f"arguments are not valid JSON: {exc}"
        else:
            error = f"arguments are a JSON {type(args).__name__}, not an object"
        if not isinstance(name, str):
            name, error = None, "the call names no function"
        elif isinstance(args, dict):
            call_id = item.get("id") or tool_call_id(name, args, i)
            calls.append(make_tool_call(name=name, args=args, id=call_id))
            continue
        invalid.append(
            make_invalid_tool_call(
                name=name, args=str(arguments)[:1000], id=item.get("id"), error=error
            )
        )
    return calls, invalid


# --- the chat-model methods --------------------------------------------------


_Tools = Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool]


class _ChatModel(Protocol):
    """What :class:`ToolCallingMixin` needs of the chat model it is mixed into."""

    def bind(self, **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """A runnable that calls the model with ``kwargs`` as call options."""
        ...

    def bind_tools(
        self,
        tools: _Tools,
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """See :meth:`ToolCallingMixin.bind_tools`."""
        ...


class ToolCallingMixin:
    """``bind_tools`` and ``with_structured_output`` for ChatG4F and the router.

    Both only bind call options (``tools``, ``tool_choice``, ``response_format``);
    each provider's chat model turns them into native fields or an instruction.
    """

    def bind_tools(
        self: _ChatModel,
        tools: _Tools,
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: natively where the provider has them, emulated elsewhere.

        ``tool_choice``: a tool's name (call it), ``"any"``/``"required"``/``True``
        (call one), ``"auto"`` (may call) or ``"none"`` (do not call).
        """
        formatted = convert_tools(tools)
        normalize_tool_choice(tool_choice, formatted)  # fail early
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self: _ChatModel,
        schema: dict[str, Any] | type,
        *,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Answers parsed into ``schema`` (pydantic model, TypedDict or JSON schema).

        ``function_calling`` forces a tool named after the schema;
        ``json_mode`` asks for a JSON object; ``json_schema`` asks for a JSON
        object that matches the schema. Natively where the provider supports
        it, by instruction elsewhere; in json_mode the instruction carries the
        schema, so the model knows the keys (a native JSON mode takes none).
        With ``include_raw=True`` the result is ``{"raw", "parsed",
        "parsing_error"}`` instead of raising when the reply does not validate.
        """
        if kwargs:
            msg = f"unexpected arguments: {', '.join(kwargs)}"
            raise ConfigurationError(msg)
        is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
        output_format = {"kwargs": {"method": method}, "schema": schema}
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            llm = self.bind_tools(
                [schema], tool_choice=name, ls_structured_output_format=output_format
            )
            parser: Runnable[Any, Any] = (
                # pydantic.v1 models work too, though the parsers are typed for v2 ones
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_model
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_mode", "json_schema"):
            if method == "json_mode":
                response_format: dict[str, Any] = _json_mode_format(
                    convert_to_json_schema(schema) if schema is not None else None
                )
            else:
                json_schema = convert_to_json_schema(schema)
                response_format = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": json_schema.get("title", "output"),
                        "schema": json_schema,
                        **({"strict": strict} if strict is not None else {}),
                    },
                }
            llm = self.bind(
                response_format=response_format, ls_structured_output_format=output_format
            )
            parser = (
                # pydantic.v1 models work too, though the parser is typed for v2 ones
                PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
                if is_model
                else JsonOutputParser()
            )
        else:
            msg = f"method must be 'function_calling', 'json_mode' or 'json_schema', not {method!r}"
            raise ConfigurationError(msg)
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks(
            [no_parse], exception_key="parsing_error"
        )
