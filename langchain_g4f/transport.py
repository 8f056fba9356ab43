"""Transports: the only code that does I/O.

:class:`SyncTransport` sends a provider's :class:`~langchain_g4f.providers.HTTPRequest`
over a ``requests.Session``; :class:`AsyncTransport` does the same over
``httpx.AsyncClient``, natively, so async streaming never hops a thread per
chunk. Both feed the response to the provider's parser and map every failure
(connection, timeout, HTTP status, malformed or oversized body, empty answer)
to one typed error from :mod:`langchain_g4f.errors` that names the provider.

Connection pools are shared by every transport with the same settings
(``timeout``, ``proxy``, ``verify``), per event loop for the async client, so
a model built per request does not pay for a new client, and TLS contexts are
built once. They are closed when the process ends (or by
:func:`close_shared_pools`).

No secret in a URL (``user:pass@``, ``?auth=...``) leaves a transport: the
typed errors describe the failure with the URL redacted and do not chain the
library's exception (whose message carries the URL), and the ``urllib3``,
``httpx`` and ``httpcore`` log records have their URLs redacted.
"""

from __future__ import annotations

import asyncio
import atexit
import email.utils
import functools
import http.client
import logging
import threading
import time
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING

from langchain_g4f._abort import abortable, watched
from langchain_g4f._redact import redact_text, redact_url
from langchain_g4f.errors import (
    AuthenticationError,
    EmptyResponseError,
    MalformedResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseTooLargeError,
)
from langchain_g4f.providers.base import Delta, HTTPRequest, Provider

if TYPE_CHECKING:  # both are imported on first use: keeps `import langchain_g4f` light
    import ssl

    import httpx
    import requests

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "AsyncTransport", "SyncTransport", "close_shared_pools"]

#: Default cap on the bytes of one response (after decompression).
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: How much of an error body is read to explain a non-2xx status.
_ERROR_BODY_BYTES = 64 * 1024
#: The most bytes one read or one decompression step produces.
_READ_BYTES = 65536
#: The content codings the transports ask for, and decode with a bound.
_ACCEPT_ENCODING = "gzip, deflate"


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _success(status: int) -> bool:
    """Whether ``status`` is a 2xx status."""
    return HTTPStatus.OK <= status < HTTPStatus.MULTIPLE_CHOICES


def _status_error(
    provider: Provider, status: int, headers: Mapping[str, str], body: bytes, url: str
) -> ProviderHTTPError:
    """The typed error for a non-2xx answer.

    It names the URL tried, redacted, and gives the server's own explanation.
    """
    name = provider.name
    detail = redact_text(provider.error_text(body))
    text = f"HTTP {status} from {redact_url(url)}" + (f": {detail[:300]}" if detail else "")
    body_text = redact_text(body[:2000].decode("utf-8", "replace"))
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        retry_after = _parse_retry_after(headers.get("retry-after"))
        hint = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        return RateLimitError(
            f"rate limited ({text}){hint}",
            provider=name,
            status=status,
            retry_after=retry_after,
            body=body_text,
        )
    if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return AuthenticationError(
            f"refused the credentials ({text}); check api_key",
            provider=name,
            status=status,
            body=body_text,
        )
    return ProviderHTTPError(text, provider=name, status=status, body=body_text)


# --------------------------------------------------------------------------- log records


#: The loggers of the HTTP libraries, whose records may carry a request's URL.
_HTTP_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)


class _RedactURLs(logging.Filter):
    """Redacts the URLs in a record's message; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record``'s message in place; keep the record."""
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


@functools.cache
def _redact_http_logs() -> None:
    """Attach :class:`_RedactURLs` to the HTTP libraries' loggers (once)."""
    redactor = _RedactURLs()
    for name in _HTTP_LOGGERS:
        logging.getLogger(name).addFilter(redactor)


# --------------------------------------------------------------------------- shared pools


#: The settings a pool is shared by: ``(timeout, proxy, verify)``.
_Settings = tuple[float | None, str | None, bool]


@functools.cache
def _ssl_context(*, verify: bool) -> ssl.SSLContext:
    """One TLS context per ``verify`` setting (building one takes ~20 ms)."""
    import httpx

    return httpx.create_ssl_context(verify=verify)


class _Pools:
    """The ``requests`` sessions and ``httpx`` clients shared by transports.

    Keyed by the transport settings; async clients also by event loop, since
    an httpx client must not be used from another loop. A client whose loop is
    closed is dropped when the next client is looked up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[_Settings, requests.Session] = {}
        #: Keyed by the settings and the ``id`` of the loop.
        self._clients: dict[
            tuple[float | None, str | None, bool, int],
            tuple[asyncio.AbstractEventLoop, httpx.AsyncClient],
        ] = {}

    def session(self, key: _Settings) -> requests.Session:
        """The session of these settings."""
        session = self._sessions.get(key)
        if session is None:
            with self._lock:
                session = self._sessions.get(key)
                if session is None:
                    session = self._sessions[key] = _new_session()
        return session

    def client(self, key: _Settings, loop: asyncio.AbstractEventLoop) -> httpx.AsyncClient:
        """The client of these settings on ``loop``."""
        loop_key = (*key, id(loop))
        entry = self._clients.get(loop_key)
        if entry is not None and entry[0] is loop and not entry[1].is_closed:
            return entry[1]
        with self._lock:
            self._drop_closed_loops()
            client = _new_client(key)
            self._clients[loop_key] = (loop, client)
        return client

    def _drop_closed_loops(self) -> None:
        for key, (loop, _client) in list(self._clients.items()):
            if loop.is_closed():
                del self._clients[key]

    def close(self) -> None:
        """Close every session, and every client whose loop can still run it."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
            clients, self._clients = list(self._clients.values()), {}
        for session in sessions:
            session.close()
        for loop, client in clients:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(_aclose(client))


async def _aclose(client: httpx.AsyncClient) -> None:
    """Close ``client`` on its idle loop at exit.

    The loop's pending tasks (async generators being finalised, which may still
    read from the client) may finish first and after, for at most a second in all.
    """
    deadline = asyncio.get_running_loop().time() + 1.0
    await _settle(deadline)
    await client.aclose()
    await _settle(deadline)


async def _settle(deadline: float) -> None:
    """Wait for the running loop's other tasks, including those they start."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0)  # callbacks scheduled while the loop was idle run first
    while (pending := asyncio.all_tasks() - {asyncio.current_task()}) and (
        left := deadline - loop.time()
    ) > 0:
        await asyncio.wait(pending, timeout=left)
        await asyncio.sleep(0)


_POOLS = _Pools()
atexit.register(_POOLS.close)


def close_shared_pools() -> None:
    """Close the connection pools shared by transports (done at exit anyway).

    Async clients are closed when their event loop is not running; the rest
    are dropped. Transports open new pools on their next request.
    """
    _POOLS.close()


def _new_session() -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = abortable(HTTPAdapter(pool_maxsize=32))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _new_client(settings: _Settings) -> httpx.AsyncClient:
    import httpx

    timeout, proxy, verify = settings
    return httpx.AsyncClient(
        timeout=timeout,
        proxy=proxy,
        verify=_ssl_context(verify=verify),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        headers={"Accept-Encoding": _ACCEPT_ENCODING},
    )


# --------------------------------------------------------------------------- bodies


class _Decoder:
    """Decodes a gzip or deflate body in steps of at most ``_READ_BYTES``.

    Decompressed bytes are produced as the reader asks for them, so the size
    limit stops a decompression bomb before it fills memory. A "deflate" body
    without its zlib header (as many servers send it) is read as raw deflate.
    """

    __slots__ = ("_provider", "_unsure", "_zlib")

    def __init__(self, provider: str, coding: str) -> None:
        self._provider = provider
        #: For "deflate": the input so far, until the first bytes decode with
        #: the zlib header; ``None`` once the format is known.
        self._unsure: bytes | None = None
        if coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._zlib = zlib.decompressobj()
            self._unsure = b""
        else:
            msg = f"sent a body in a content coding it was not offered: {coding!r}"
            raise MalformedResponseError(
                msg,
                provider=provider,
            )

    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in steps of at most ``_READ_BYTES``."""
        if self._unsure is not None:
            self._unsure += data
        while data:
            try:
                out = self._zlib.decompress(data, _READ_BYTES)
            except zlib.error as exc:
                if self._unsure is None:
                    msg = f"sent a body that does not decompress: {exc}"
                    raise MalformedResponseError(msg, provider=self._provider) from None
                data, self._unsure = self._unsure, None
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            data = self._zlib.unconsumed_tail
            if out:
                self._unsure = None
                yield out

    def flush(self) -> bytes:
        """What remains decoded once the body has ended."""
        return self._zlib.flush()


def _decoder_for(provider: str, headers: Mapping[str, str]) -> _Decoder | None:
    """The decoder of a response's content coding (``None`` for none)."""
    codings = [
        c.strip().lower()
        for c in headers.get("content-encoding", "").split(",")
        if c.strip() and c.strip().lower() != "identity"
    ]
    if len(codings) > 1:
        msg = f"sent a body in several content codings: {', '.join(codings)}"
        raise MalformedResponseError(msg, provider=provider)
    return _Decoder(provider, codings[0]) if codings else None


class _BodyReader:
    """What both transports do with the raw bytes of a 2xx body.

    Decodes its content coding a bounded step at a time (:class:`_Decoder`),
    feeds the provider's parser, enforces the size limit on the decoded bytes
    as they are produced, and raises :class:`EmptyResponseError` when the body
    ends with no text and no tool call.
    """

    __slots__ = ("_decoder", "_limit", "_parser", "_provider", "_seen", "_size")

    def __init__(
        self, provider: Provider, request: HTTPRequest, headers: Mapping[str, str], limit: int
    ) -> None:
        self._provider = provider.name
        self._decoder = _decoder_for(provider.name, headers)
        self._parser = provider.parser(request, headers.get("content-type", ""))
        self._limit = limit
        self._size = 0
        self._seen = False

    def feed(self, data: bytes) -> list[Delta]:
        """The deltas of the next raw bytes of the body."""
        if self._decoder is None:
            return self._feed(data)
        out: list[Delta] = []
        for piece in self._decoder.decode(data):
            out += self._feed(piece)
            if self.done:
                break
        return out

    def _feed(self, data: bytes) -> list[Delta]:
        self._size += len(data)
        if self._size > self._limit:
            msg = (
                f"sent more than {self._limit} bytes; reading stopped "
                "(raise max_response_bytes if this answer is expected)"
            )
            raise ResponseTooLargeError(
                msg,
                provider=self._provider,
            )
        deltas = self._parser.feed(data)
        if deltas and not self._seen:
            self._seen = any(d.text or d.tool_calls for d in deltas)
        return deltas

    @property
    def done(self) -> bool:
        """Whether the parser has the whole answer (the rest of the body is not read)."""
        return getattr(self._parser, "done", False)

    def close(self) -> list[Delta]:
        """The last deltas, once the body has ended; raises if it had no answer."""
        deltas = (
            self._feed(self._decoder.flush()) if self._decoder is not None and not self.done else []
        )
        deltas += self._parser.close()
        if not self._seen and not any(d.text or d.tool_calls for d in deltas):
            msg = "answered with no text"
            raise EmptyResponseError(msg, provider=self._provider)
        return deltas


class _ErrorBody:
    """The start of a non-2xx body, decoded: enough to explain the status."""

    __slots__ = ("_decoder", "data")

    def __init__(self, provider: Provider, headers: Mapping[str, str]) -> None:
        self._decoder = _decoder_for(provider.name, headers)
        self.data = b""

    def add(self, data: bytes) -> bool:
        """Take the next raw bytes; whether enough has been read."""
        try:
            pieces = self._decoder.decode(data) if self._decoder is not None else (data,)
            for piece in pieces:
                self.data += piece
                if len(self.data) >= _ERROR_BODY_BYTES:
                    return True
        except MalformedResponseError:
            return True  # the status explains the failure; what decoded is kept
        return False


class SyncTransport:
    """Blocking I/O on a ``requests.Session``.

    ``timeout`` bounds connecting and each wait for bytes (seconds, ``None``
    for no bound); ``proxy`` is one proxy URL for every scheme; TLS
    certificates are verified unless ``verify=False``. The session is shared
    with every transport of the same settings unless one is given.
    """

    def __init__(
        self,
        *,
        timeout: float | None = 60.0,
        proxy: str | None = None,
        verify: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        session: requests.Session | None = None,
    ) -> None:
        self.timeout = timeout
        self.proxies = {"http": proxy, "https": proxy} if proxy else None
        self.verify = verify
        self.max_response_bytes = max_response_bytes
        self._key = (timeout, proxy, verify)
        self._session = session
        _redact_http_logs()

    @property
    def session(self) -> requests.Session:
        """The session requests go through: the one given, else the shared one."""
        return self._session if self._session is not None else _POOLS.session(self._key)

    def close(self) -> None:
        """Close a session given to this transport; a shared one stays open for others."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def deltas(self, provider: Provider, request: HTTPRequest) -> Iterator[Delta]:
        """Send ``request`` and yield the deltas of its answer as they arrive."""
        for batch in self.batches(provider, request):
            yield from batch

    def batches(
        self, provider: Provider, request: HTTPRequest
    ) -> Generator[list[Delta], None, None]:
        """Send ``request``; yield the deltas of each read, as a non-empty list.

        One list per network read rather than one item per delta keeps the
        per-delta cost of the generator machinery out of the hot path.
        """
        response = self._send(provider, request)
        with response, watched(response):
            yield from self._read(provider, request, response)

    def _send(self, provider: Provider, request: HTTPRequest) -> requests.Response:
        import requests

        try:
            return self.session.request(
                request.method,
                request.url,
                data=request.body,
                headers={"Accept-Encoding": _ACCEPT_ENCODING, **request.headers},
                stream=True,
                timeout=self.timeout,
                proxies=self.proxies,
                verify=self.verify,
            )
        except requests.exceptions.RequestException as exc:
            error = _requests_error(provider.name, exc, self.timeout, request.url)
        raise error  # outside the handler: the library's error (and its URL) is not chained

    def _read(
        self, provider: Provider, request: HTTPRequest, response: requests.Response
    ) -> Iterator[list[Delta]]:
        import requests
        import urllib3.exceptions

        try:
            read1 = _raw_reader(response)
            if not _success(response.status_code):
                body = _ErrorBody(provider, response.headers)
                while (data := read1(_READ_BYTES)) and not body.add(data):
                    pass
                raise _status_error(
                    provider, response.status_code, response.headers, body.data, request.url
                )
            reader = _BodyReader(provider, request, response.headers, self.max_response_bytes)
            while not reader.done and (data := read1(_READ_BYTES)):
                if batch := reader.feed(data):
                    yield batch
            if batch := reader.close():
                yield batch
        except ProviderError:
            raise
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
        ) as exc:
            error = _requests_error(provider.name, exc, self.timeout, request.url)
        else:
            return
        raise error  # outside the handler, as in _send


def _raw_reader(response: requests.Response) -> Callable[[int], bytes]:
    """A ``read1`` of the body's bytes as sent (content coding not decoded).

    The standard library's response underneath urllib3 is read directly when
    it is there (it returns each event as soon as it arrives, with chunked
    framing removed); urllib3's own ``read1`` costs a few microseconds per event.
    """
    raw = response.raw
    raw.decode_content = False  # decoded by _BodyReader, a bounded step at a time
    fp = getattr(raw, "_fp", None)
    if isinstance(fp, http.client.HTTPResponse):
        return fp.read1
    return raw.read1


def _requests_error(
    name: str, exc: BaseException, timeout: float | None, url: str
) -> ProviderError:
    """The typed error for a requests/urllib3 failure, its description redacted."""
    import requests
    import urllib3.exceptions

    where = redact_url(url)
    reason = redact_text(_reason(exc))
    if isinstance(
        exc,
        (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError),
    ) or (isinstance(exc, requests.exceptions.ConnectionError) and "timed out" in reason.lower()):
        what = (
            "connecting to"
            if isinstance(exc, requests.exceptions.ConnectTimeout)
            else "waiting for the answer from"
        )
        return ProviderTimeoutError(f"timed out {what} {where} (timeout={timeout}s)", provider=name)
    if isinstance(exc, requests.exceptions.SSLError):
        return ProviderConnectionError(f"TLS failed with {where}: {reason}", provider=name)
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
        exc, requests.exceptions.ChunkedEncodingError
    ):
        return ProviderConnectionError(f"could not connect to {where}: {reason}", provider=name)
    return ProviderConnectionError(
        f"the connection to {where} broke while reading: {reason}", provider=name
    )


def _reason(exc: BaseException) -> str:
    """The innermost useful description of a requests/urllib3 error, with its type."""
    while exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        exc = reason
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _httpx_error(name: str, exc: BaseException, timeout: float | None, url: str) -> ProviderError:
    """The typed error for an httpx failure, its description redacted."""
    import httpx

    where = redact_url(url)
    reason = redact_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        what = (
            "connecting to"
            if isinstance(exc, httpx.ConnectTimeout)
            else "waiting for the answer from"
        )
        return ProviderTimeoutError(f"timed out {what} {where} (timeout={timeout}s)", provider=name)
    if isinstance(exc, httpx.ConnectError):
        return ProviderConnectionError(f"could not connect to {where}: {reason}", provider=name)
    return ProviderConnectionError(
        f"the connection to {where} broke while reading: {reason}", provider=name
    )


class AsyncTransport:
    """Native async I/O on ``httpx.AsyncClient``, one client per event loop.

    A client is bound to the loop it was created on, and notebooks and tests
    run several loops: the client is looked up by the running loop, and shared
    with every transport of the same settings on that loop.
    """

    def __init__(
        self,
        *,
        timeout: float | None = 60.0,
        proxy: str | None = None,
        verify: bool = True,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.timeout = timeout
        self.proxy = proxy
        self.verify = verify
        self.max_response_bytes = max_response_bytes
        self._key = (timeout, proxy, verify)
        _redact_http_logs()

    def client(self) -> httpx.AsyncClient:
        """The shared client of this transport's settings on the running loop."""
        return _POOLS.client(self._key, asyncio.get_running_loop())

    async def aclose(self) -> None:
        """Nothing to release: the client is shared (see :func:`close_shared_pools`)."""

    async def adeltas(self, provider: Provider, request: HTTPRequest) -> AsyncIterator[Delta]:
        """Send ``request`` and yield the deltas of its answer as they arrive."""
        batches = self.abatches(provider, request)
        try:
            async for batch in batches:
                for delta in batch:
                    yield delta
        finally:
            await batches.aclose()

    async def abatches(
        self, provider: Provider, request: HTTPRequest
    ) -> AsyncGenerator[list[Delta], None]:
        """Send ``request``; yield the deltas of each read, as a non-empty list."""
        import httpx

        try:
            async with self.client().stream(
                request.method, request.url, content=request.body, headers=request.headers
            ) as response:
                async for batch in self._aread(provider, request, response):
                    yield batch
        except ProviderError:
            raise
        except (httpx.TransportError, httpx.DecodingError, OSError) as exc:
            error = _httpx_error(provider.name, exc, self.timeout, request.url)
        else:
            return
        raise error  # outside the handler: the library's error (and its URL) is not chained

    async def _aread(
        self, provider: Provider, request: HTTPRequest, response: httpx.Response
    ) -> AsyncIterator[list[Delta]]:
        """The body as sent, decoded by :class:`_BodyReader` a bounded step at a time."""
        if not _success(response.status_code):
            body = _ErrorBody(provider, response.headers)
            async for data in response.aiter_raw():
                if body.add(data):
                    break
            raise _status_error(
                provider, response.status_code, response.headers, body.data, request.url
            )
        reader = _BodyReader(provider, request, response.headers, self.max_response_bytes)
        async for data in response.aiter_raw():
            if batch := reader.feed(data):
                yield batch
            if reader.done:
                break
        if batch := reader.close():
            yield batch
