"""The sans-I/O provider contract.

A provider never opens a socket. It turns ``(model, messages, options)`` into an
:class:`HTTPRequest`, and turns the bytes of a response into :class:`Delta`
objects through a :class:`ResponseParser`. The transports
(:mod:`langchain_g4f.transport`) do the I/O, so the same provider code serves the
sync and the async path, the cassettes and the live network.

Each provider also keeps the calling contract of the g4f modules it descends
from: ``url``, ``model`` (the list of served models), ``supports_stream``,
``needs_auth``, ``params`` and the generator
``_create_completion(model, messages, stream, **kwargs)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from langchain_core.language_models import ModelProfile

from langchain_g4f._redact import REDACTED, is_secret_name, redact_url
from langchain_g4f.errors import (
    ConfigurationError,
    HTMLResponseError,
    MalformedResponseError,
    UnsupportedModelError,
)

__all__ = [
    "BOM",
    "SHARED_KEY_ENV",
    "AsyncTransportProtocol",
    "BodyParser",
    "Delta",
    "HTTPRequest",
    "Message",
    "Provider",
    "ProviderTransport",
    "ResponseParser",
    "SyncTransportProtocol",
    "check_http_url",
    "error_message",
    "html_error",
    "join_url",
    "load_json",
    "loads",
    "looks_like_html",
]

#: The key every provider that needs one may use (``needs_auth``).
SHARED_KEY_ENV = "G4F_API_KEY"

#: A message as providers see it: ``{"role": ..., "content": ...}`` (OpenAI style).
Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    """Everything a transport needs to send one request."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    #: Whether the request asks the server for an event stream.
    stream: bool

    def __repr__(self) -> str:
        headers = {
            name: REDACTED if is_secret_name(name) else value
            for name, value in self.headers.items()
        }
        return (
            f"HTTPRequest({self.method} {redact_url(self.url)}, headers={headers}, "
            f"body={len(self.body)} bytes, stream={self.stream})"
        )


@dataclass(slots=True)
class Delta:
    """One piece of an answer, as parsed from the wire.

    ``text`` is new answer text and ``reasoning`` new reasoning text (a
    ``reasoning_content`` field, for example); ``finish_reason``, ``usage`` and
    ``model`` are set only when the server sent them. ``usage`` holds integer
    ``input_tokens``/``output_tokens``/``total_tokens``.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    model: str | None = None
    #: Native tool-call fragments, as the OpenAI protocol sends them.
    tool_calls: list[dict[str, Any]] | None = None
    reasoning: str = ""


class ResponseParser(Protocol):
    """Consumes the body of a 2xx response, bytes in, deltas out.

    A parser that knows the answer is complete before the body ends (an event
    stream's ``[DONE]``) may say so with a true ``done`` attribute: the
    transport then stops reading.
    """

    def feed(self, data: bytes) -> list[Delta]:
        """Take the next bytes of the body; return the deltas they complete."""

    def close(self) -> list[Delta]:
        """The body has ended; return what remains or raise if it is incomplete."""


#: The UTF-8 byte order mark some servers put before a body.
BOM = b"\xef\xbb\xbf"
#: How many bytes of a body's head tell an HTML page by its first tag.
_HTML_HEAD_BYTES = 15
#: The field that starts each event of an event stream.
_DATA_FIELD = b"data:"


@runtime_checkable
class SyncTransportProtocol(Protocol):
    """What sends a request and reads its answer, blocking.

    :class:`~langchain_g4f.transport.SyncTransport` is one; ``_create_completion``
    takes any as its ``transport`` argument.
    """

    def batches(self, provider: Provider, request: HTTPRequest) -> Iterator[list[Delta]]:
        """Send ``request``; yield the answer's deltas, one non-empty list per read."""


@runtime_checkable
class AsyncTransportProtocol(Protocol):
    """What sends a request and reads its answer, natively async.

    :class:`~langchain_g4f.transport.AsyncTransport` is one.
    """

    def abatches(self, provider: Provider, request: HTTPRequest) -> AsyncIterator[list[Delta]]:
        """Send ``request``; yield the answer's deltas, one non-empty list per read."""


@runtime_checkable
class ProviderTransport(SyncTransportProtocol, AsyncTransportProtocol, Protocol):
    """The I/O a provider brings itself (its ``transport``): both paths.

    ``ChatG4F`` calls :meth:`batches` on the sync path and :meth:`abatches` on
    the async one; each may return any iterator, not only a generator.
    """


def looks_like_html(data: bytes) -> bool:
    """Whether ``data`` starts, after a byte order mark and whitespace, as an HTML page."""
    head = data.removeprefix(BOM).lstrip()[:_HTML_HEAD_BYTES].lower()
    return head.startswith((b"<!doctype", b"<html", b"<head", b"<body"))


def html_error(provider: str, data: bytes) -> HTMLResponseError:
    """The error for an HTML page where an answer was expected, quoting its start."""
    return HTMLResponseError(
        "returned an HTML page instead of an answer (the endpoint may be down, "
        f"moved, or behind a bot check): {data[:120]!r}",
        provider=provider,
    )


def loads(data: bytes) -> Any:
    """``json.loads`` that also refuses nesting too deep to parse.

    Raises :class:`ValueError` (a ``RecursionError`` becomes one), so callers
    handle every unreadable body in one ``except``.
    """
    try:
        return json.loads(data.removeprefix(BOM))
    except RecursionError:
        msg = "JSON nested too deeply"
        raise ValueError(msg) from None


def load_json(provider: str, data: bytes) -> Any:
    """:func:`loads` that raises the project's typed errors."""
    try:
        return loads(data)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        if looks_like_html(data):
            raise html_error(provider, data) from None
        msg = f"sent a body that is not valid JSON ({exc}): {data[:120]!r}"
        raise MalformedResponseError(
            msg,
            provider=provider,
        ) from None


def check_http_url(url: str, field: str = "base_url", provider: str | None = None) -> str:
    """``url`` if it is an absolute ``http(s)://host...`` URL, else a ConfigurationError."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        msg = (
            f"{field} must be an absolute http:// or https:// URL with a host, "
            f"not {redact_url(url)!r} (for example 'http://localhost:8080')"
        )
        raise ConfigurationError(
            msg,
            provider=provider,
        )
    return url


def join_url(base: str, path: str) -> str:
    """``path`` appended to the path of ``base``, before any query string it carries.

    >>> join_url("http://h/x/?auth=1", "/v1/chat/completions")
    'http://h/x/v1/chat/completions?auth=1'
    """
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path, fragment=""))


def error_message(error: Any) -> str:
    """The human text of an ``error`` value, however the server shaped it."""
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    if isinstance(error, str):
        return error
    try:
        return json.dumps(error, ensure_ascii=False)[:300]
    except (ValueError, RecursionError):
        return f"an unreadable {type(error).__name__}"


class BodyParser:
    """Collects a whole body, then hands it to ``parse`` (for non-stream answers)."""

    __slots__ = ("_chunks", "_parse")

    def __init__(self, parse: Callable[[bytes], list[Delta]]) -> None:
        self._chunks: list[bytes] = []
        self._parse = parse

    def feed(self, data: bytes) -> list[Delta]:
        """Keep ``data``; nothing is parsed before the body ends."""
        self._chunks.append(data)
        return []

    def close(self) -> list[Delta]:
        """Parse the whole body."""
        return self._parse(b"".join(self._chunks))


#: Content types a streaming answer is trusted to be.
_STREAM_MEDIA_TYPES = frozenset(
    {
        "text/event-stream",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/json-seq",
    }
)


class _SniffingParser:
    """Reads a body by what it is, not by the content type a server gave it.

    Free providers mislabel their answers: an event stream as
    ``application/json`` or ``text/html``, a JSON answer as ``text/html``. The
    first bytes decide (after an optional byte order mark and whitespace): one
    that starts with ``data:`` is an event stream, one that starts with ``{``
    or ``[`` is a JSON body, an HTML page is refused; anything else goes to
    ``fallback``, the parser the content type names.
    """

    __slots__ = ("_chosen", "_fallback", "_head", "_provider")

    def __init__(self, provider: Provider, fallback: ResponseParser) -> None:
        self._provider = provider
        self._fallback = fallback
        self._head = b""
        self._chosen: ResponseParser | None = None

    def feed(self, data: bytes) -> list[Delta]:
        """Feed the chosen parser, once the head of the body has chosen one."""
        if self._chosen is not None:
            return self._chosen.feed(data)
        self._head += data
        chosen = self._choose(final=False)
        if chosen is None:
            return []
        self._chosen = chosen
        return chosen.feed(self._head)

    def close(self) -> list[Delta]:
        """Close the chosen parser (choosing one now if the body was too short to)."""
        if self._chosen is None:
            self._chosen = self._choose(final=True) or self._fallback
            deltas = self._chosen.feed(self._head)
            return deltas + self._chosen.close()
        return self._chosen.close()

    @property
    def done(self) -> bool:
        """Whether the chosen parser has the whole answer."""
        return getattr(self._chosen, "done", False)

    def _choose(self, *, final: bool) -> ResponseParser | None:
        """The parser the head of the body calls for; ``None`` to read more first."""
        head = self._head.removeprefix(BOM).lstrip()
        if not head or (not final and BOM.startswith(self._head)):
            return None
        if head[:1] in (b"{", b"["):
            return BodyParser(self._provider.parse_body)
        if head[:1] == b"<":
            if not final and len(head) < _HTML_HEAD_BYTES:
                return None
            return (
                BodyParser(self._provider.raise_html) if looks_like_html(head) else self._fallback
            )
        if not final and len(head) < len(_DATA_FIELD) and _DATA_FIELD.startswith(head):
            return None
        if head.startswith(_DATA_FIELD):
            return self._provider.stream_parser()
        return self._fallback


class Provider:
    """Base class of every provider: declarations plus the protocol hooks.

    Subclasses set the class attributes and implement :meth:`build_payload`,
    :meth:`parse_body` and, when they can stream, :meth:`stream_parser`.
    Instances are cheap and stateless; ``url`` may be set per instance.
    """

    #: Registry name, e.g. ``"Lockchat"``.
    name: str = ""
    #: Default base URL; every request can override it.
    url: str = ""
    #: Path appended to the base URL.
    path: str = ""
    #: Query string sent with the provider's own ``url`` (Lockchat's seed token):
    #: part of the public protocol, never a secret (cassettes keep it). A
    #: ``base_url``, or another ``url`` on the instance, replaces url and query.
    query: str = ""
    #: Models the provider serves (the seed attribute ``model``).
    model: list[str] = []
    supports_stream: bool = False
    needs_auth: bool = False
    #: An environment variable holding this provider's API key, besides
    #: ``G4F_<NAME>_API_KEY`` (read by ``ChatG4F`` when no ``api_key`` is passed).
    api_key_env: str | None = None
    #: Whether a model outside ``model`` is passed through instead of refused.
    accepts_any_model: bool = False
    #: Whether the endpoint understands the OpenAI ``tools`` field natively.
    native_tools: bool = False
    #: The transport of a provider that does its own I/O, such as those of the
    #: ``g4f`` package (:mod:`langchain_g4f.providers.g4f_package`); ``None``
    #: for sans-I/O providers, which the chat model's transports serve.
    transport: ProviderTransport | None = None
    headers: dict[str, str] = {"Content-Type": "application/json"}
    #: What the provider can do, as a LangChain model profile (see
    #: :mod:`langchain_g4f.profiles`); ``model_profiles`` adds per-model entries
    #: such as each model's ``max_input_tokens``. A capability left out is not
    #: offered: no request with images goes to a profile without ``image_inputs``.
    profile: ModelProfile = {"text_inputs": True, "text_outputs": True}
    model_profiles: dict[str, ModelProfile] = {}

    def __init__(self, url: str | None = None) -> None:
        if url is not None:
            self.url = url

    def __repr__(self) -> str:
        return f"<provider {self.name} {redact_url(self.url)}>"

    def key_variables(self) -> list[str]:
        """The environment variables a key for this provider is read from, in order.

        Its ``api_key_env``, then ``G4F_<NAME>_API_KEY``, then, for a provider that
        needs a key, the shared ``G4F_API_KEY``.
        """
        named = [self.api_key_env] if self.api_key_env else []
        named.append(f"G4F_{re.sub(r'[^A-Z0-9]+', '_', self.name.upper()).strip('_')}_API_KEY")
        if self.needs_auth:
            named.append(SHARED_KEY_ENV)
        return named

    def endpoint(self, base_url: str | None = None) -> str:
        """The URL requests go to: ``path`` joined to ``base_url``, or to ``url``.

        A query string in the base URL stays at the end:
        ``http://h/?auth=X`` becomes ``http://h/v1/chat/completions?auth=X``.
        """
        if base_url:
            return join_url(check_http_url(base_url, provider=self.name), self.path)
        url = join_url(self.url, self.path)
        if self.query and self.url == type(self).url:
            url += ("&" if urlsplit(url).query else "?") + self.query
        return url

    # -- validation ---------------------------------------------------------

    def check_model(self, model: str) -> None:
        """Raise :class:`UnsupportedModelError` unless this provider serves ``model``."""
        if not self.accepts_any_model and model not in self.model:
            msg = f"does not serve model {model!r}; it serves: {', '.join(self.model)}"
            raise UnsupportedModelError(
                msg,
                provider=self.name,
            )

    def profile_for(self, model: str | None) -> ModelProfile:
        """The provider's profile, with ``model``'s own entries on top."""
        return {**self.profile, **self.model_profiles.get(model or "", {})}

    # -- request ------------------------------------------------------------

    def build_request(
        self,
        model: str,
        messages: Sequence[Message],
        *,
        stream: bool,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> HTTPRequest:
        """Describe the HTTP request for one completion. Raises before any I/O."""
        self.check_model(model)
        if not messages:
            msg = "no messages to send"
            raise ConfigurationError(msg, provider=self.name)
        if self.needs_auth and not api_key:
            variables = " or ".join(f"${name}" for name in self.key_variables())
            msg = f"needs an API key: set {variables}, or pass api_key=..."
            raise ConfigurationError(msg, provider=self.name)
        url = self.endpoint(base_url)
        if api_key and urlsplit(url).username is not None:
            msg = (
                "has both an api_key and user:password credentials in its URL; both "
                "would go in the Authorization header (the URL's would win): pass one"
            )
            raise ConfigurationError(
                msg,
                provider=self.name,
            )
        wire_stream = self.wire_stream(stream=stream)
        payload = self.build_payload(
            model,
            messages,
            stream=wire_stream,
            temperature=temperature,
            max_tokens=max_tokens,
            stop=stop,
        )
        if extra:
            payload.update(extra)
        headers = dict(self.headers)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return HTTPRequest(
            method="POST",
            url=url,
            headers=headers,
            body=json.dumps(payload, ensure_ascii=False).encode(),
            stream=wire_stream,
        )

    def wire_stream(self, *, stream: bool) -> bool:
        """Whether to ask the server for an event stream for this call."""
        return stream and self.supports_stream

    def build_payload(
        self,
        model: str,
        messages: Sequence[Message],
        *,
        stream: bool,
        temperature: float | None,
        max_tokens: int | None,
        stop: list[str] | None,
    ) -> dict[str, Any]:
        """The JSON body of one completion request."""
        raise NotImplementedError

    # -- response -----------------------------------------------------------

    def parser(self, request: HTTPRequest, content_type: str) -> ResponseParser:
        """Pick the parser for a 2xx response.

        A stream labelled as one (an event stream, newline-delimited JSON) goes
        straight to :meth:`stream_parser`; any other label is checked against
        the body's first bytes (:class:`_SniffingParser`), since free providers
        mislabel both ways.
        """
        media = content_type.split(";", maxsplit=1)[0].strip().lower()
        if request.stream and media in _STREAM_MEDIA_TYPES:
            return self.stream_parser()
        return _SniffingParser(self, self._labelled_parser(request, media))

    def _labelled_parser(self, request: HTTPRequest, media: str) -> ResponseParser:
        """The parser the content type alone calls for."""
        if "html" in media:
            return BodyParser(self.raise_html)
        whole_json = media in ("application/json", "text/json") or media.endswith("+json")
        if request.stream and not whole_json:  # NDJSON, plain text...
            return self.stream_parser()
        return BodyParser(self.parse_body)

    def raise_html(self, data: bytes) -> list[Delta]:
        """Refuse a body that is an HTML page (a parse hook for one)."""
        raise html_error(self.name, data)

    def parse_body(self, data: bytes) -> list[Delta]:
        """Parse a whole (non-stream) body."""
        raise NotImplementedError

    def stream_parser(self) -> ResponseParser:
        """A fresh parser for an event-stream body."""
        return BodyParser(self.parse_body)

    def error_text(self, body: bytes) -> str:
        """The server's own explanation in the body of a non-2xx answer.

        The default reads an ``error`` or ``detail`` field of a JSON object
        (a string, or an object with a ``message``), else the start of the
        body as text; an HTML page is named as one.
        """
        if looks_like_html(body):
            return "an HTML error page"
        try:
            obj = loads(body)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and (obj.get("error") or obj.get("detail")):
            return error_message(obj.get("error") or obj.get("detail"))
        return body[:200].decode("utf-8", "replace").strip()

    # -- the seed contract ----------------------------------------------------

    @property
    def params(self) -> str:
        """The seed modules' description of ``_create_completion``'s parameters."""
        return (
            f"langchain_g4f.providers.{self.name} supports: "
            "(model: str, messages: list[dict[str, str]], stream: bool)"
        )

    def _create_completion(
        self, model: str, messages: Sequence[Message], stream: bool, **kwargs: Any
    ) -> Iterator[str]:
        """Yield the answer's text pieces, as the g4f provider modules did.

        Keyword arguments are those of :meth:`build_request` (``base_url``,
        ``api_key``, ``temperature``, ...) plus ``transport``, the
        :class:`SyncTransportProtocol` to use instead of the provider's own or a
        shared :class:`~langchain_g4f.transport.SyncTransport`.
        """
        if stream and not self.supports_stream:
            msg = "cannot stream; call with stream=False"
            raise ConfigurationError(msg, provider=self.name)
        transport: SyncTransportProtocol = (
            kwargs.pop("transport", None) or self.transport or _sync_transport()
        )
        request = self.build_request(model, messages, stream=stream, **kwargs)
        for batch in transport.batches(self, request):
            for delta in batch:
                if delta.text:
                    yield delta.text


def _sync_transport() -> SyncTransportProtocol:
    """The seed contract's default transport.

    Imported here, on a call, so that the provider modules never depend on
    the transport module (the arrows run chat model -> transport -> provider).
    """
    from langchain_g4f.transport import SyncTransport

    return SyncTransport()
