"""Transports: the only code that does I/O.

:class:`SyncTransport` sends a provider's :class:`~langchain_g4f.providers.HTTPRequest`
over a reused ``requests.Session``; :class:`AsyncTransport` does the same over
``httpx.AsyncClient``, natively, so async streaming never hops a thread per
chunk. Both feed the response to the provider's parser and map every failure
(connection, timeout, HTTP status, malformed or oversized body, empty answer)
to one typed error from :mod:`langchain_g4f.errors` that names the provider.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from langchain_g4f._abort import abortable, watched
from langchain_g4f.errors import (
    AuthenticationError,
    EmptyResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseTooLargeError,
)
from langchain_g4f.providers.base import Delta, HTTPRequest, Provider, looks_like_html

if TYPE_CHECKING:  # both are imported on first use: keeps `import langchain_g4f` light
    import httpx
    import requests

#: Default cap on the bytes of one response.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: How much of an error body is read to explain a non-2xx status.
_ERROR_BODY_BYTES = 64 * 1024


def parse_retry_after(value: str | None) -> float | None:
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


def status_error(
    provider: str, status: int, headers: Any, body: bytes
) -> ProviderHTTPError:
    """The typed error for a non-2xx answer, with the server's own explanation."""
    detail = ""
    if looks_like_html(body):
        detail = "an HTML error page"
    elif body:
        try:
            obj = json.loads(body)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and (obj.get("error") or obj.get("detail")):
            from langchain_g4f.providers.openai import error_message

            detail = error_message(obj.get("error") or obj.get("detail"))
        else:
            detail = body[:200].decode("utf-8", "replace").strip()
    text = f"HTTP {status}" + (f": {detail[:300]}" if detail else "")
    body_text = body[:2000].decode("utf-8", "replace")
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"))
        hint = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        return RateLimitError(
            f"rate limited ({text}){hint}",
            provider=provider,
            status=status,
            retry_after=retry_after,
            body=body_text,
        )
    if status in (401, 403):
        return AuthenticationError(
            f"refused the credentials ({text}); check api_key",
            provider=provider,
            status=status,
            body=body_text,
        )
    return ProviderHTTPError(text, provider=provider, status=status, body=body_text)


class _BodyReader:
    """What both transports do with the bytes of a 2xx body.

    Feeds the provider's parser, enforces the size limit, and raises
    :class:`EmptyResponseError` when the body ends with no text and no tool call.
    """

    __slots__ = ("_provider", "_parser", "_limit", "_size", "_seen")

    def __init__(
        self, provider: Provider, request: HTTPRequest, content_type: str, limit: int
    ) -> None:
        self._provider = provider.name
        self._parser = provider.parser(request, content_type)
        self._limit = limit
        self._size = 0
        self._seen = False

    def feed(self, data: bytes) -> list[Delta]:
        self._size += len(data)
        if self._size > self._limit:
            raise ResponseTooLargeError(
                f"sent more than {self._limit} bytes; reading stopped "
                "(raise max_response_bytes if this answer is expected)",
                provider=self._provider,
            )
        deltas = self._parser.feed(data)
        if deltas and not self._seen:
            self._seen = any(d.text or d.tool_calls for d in deltas)
        return deltas

    def close(self) -> list[Delta]:
        deltas = self._parser.close()
        if not self._seen and not any(d.text or d.tool_calls for d in deltas):
            raise EmptyResponseError("answered with no text", provider=self._provider)
        return deltas


class SyncTransport:
    """Blocking I/O on one reused ``requests.Session``.

    ``timeout`` bounds connecting and each wait for bytes (seconds, ``None``
    for no bound); ``proxy`` is one proxy URL for every scheme; TLS
    certificates are verified unless ``verify=False``.
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
        self._session = session

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            adapter = abortable(HTTPAdapter(pool_maxsize=32))
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def deltas(self, provider: Provider, request: HTTPRequest) -> Iterator[Delta]:
        """Send ``request`` and yield the deltas of its answer as they arrive."""
        for batch in self.batches(provider, request):
            yield from batch

    def batches(self, provider: Provider, request: HTTPRequest) -> Iterator[list[Delta]]:
        """Send ``request``; yield the deltas of each read, as a non-empty list.

        One list per network read rather than one item per delta keeps the
        per-delta cost of the generator machinery out of the hot path.
        """
        import requests
        import urllib3.exceptions

        name = provider.name
        try:
            response = self.session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                stream=True,
                timeout=self.timeout,
                proxies=self.proxies,
                verify=self.verify,
            )
        except requests.exceptions.RequestException as exc:
            raise _requests_error(name, exc, self.timeout) from exc
        with response, watched(response):
            try:
                raw = response.raw
                raw.decode_content = True  # gzip/deflate bodies come out decoded
                if not 200 <= response.status_code < 300:
                    body = raw.read(_ERROR_BODY_BYTES) or b""
                    raise status_error(name, response.status_code, response.headers, body)
                reader = _BodyReader(
                    provider,
                    request,
                    response.headers.get("content-type", ""),
                    self.max_response_bytes,
                )
                read1 = _reader(response)
                while data := read1(65536):
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
                raise _requests_error(name, exc, self.timeout) from exc


def _reader(response: requests.Response) -> Any:
    """The fastest ``read1`` that still decodes the body.

    With no content encoding, the standard library's response underneath urllib3
    is read directly (it returns each event as soon as it arrives, with chunked
    framing removed); urllib3's own ``read1`` costs a few microseconds per event.
    """
    raw = response.raw
    fp = getattr(raw, "_fp", None)
    if isinstance(fp, http.client.HTTPResponse) and not response.headers.get(
        "content-encoding"
    ):
        return fp.read1
    return raw.read1


def _requests_error(name: str, exc: BaseException, timeout: float | None) -> ProviderError:
    import requests
    import urllib3.exceptions

    if isinstance(
        exc,
        (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError),
    ):
        what = "connecting" if isinstance(exc, requests.exceptions.ConnectTimeout) else "waiting for the answer"
        return ProviderTimeoutError(f"timed out {what} (timeout={timeout}s)", provider=name)
    if isinstance(exc, requests.exceptions.SSLError):
        return ProviderConnectionError(f"TLS failed: {_reason(exc)}", provider=name)
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
        exc, requests.exceptions.ChunkedEncodingError
    ):
        reason = _reason(exc)
        if "timed out" in reason.lower():
            return ProviderTimeoutError(
                f"timed out waiting for the answer (timeout={timeout}s)", provider=name
            )
        return ProviderConnectionError(f"could not connect: {reason}", provider=name)
    return ProviderConnectionError(
        f"the connection broke while reading: {_reason(exc)}", provider=name
    )


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _reason(exc: BaseException) -> str:
    """The innermost useful description of a requests/urllib3 error."""
    while exc.args and isinstance(exc.args[0], BaseException):
        exc = exc.args[0]
    reason = getattr(exc, "reason", None)
    return str(reason or exc) or type(exc).__name__


class AsyncTransport:
    """Native async I/O on ``httpx.AsyncClient``, one client per event loop.

    A client is bound to the loop it was created on, and notebooks and tests
    run several loops: the client is looked up by the running loop.
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
        self._clients: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def client(self) -> httpx.AsyncClient:
        import asyncio

        import httpx

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                timeout=self.timeout,
                proxy=self.proxy,
                verify=self.verify,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the client of the running loop."""
        import asyncio

        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def adeltas(
        self, provider: Provider, request: HTTPRequest
    ) -> AsyncIterator[Delta]:
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
    ) -> AsyncIterator[list[Delta]]:
        """Send ``request``; yield the deltas of each read, as a non-empty list."""
        import httpx

        name = provider.name
        try:
            async with self.client().stream(
                request.method, request.url, content=request.body, headers=request.headers
            ) as response:
                if not 200 <= response.status_code < 300:
                    body = b""
                    async for data in response.aiter_bytes():
                        body += data
                        if len(body) >= _ERROR_BODY_BYTES:
                            break
                    raise status_error(name, response.status_code, response.headers, body)
                reader = _BodyReader(
                    provider,
                    request,
                    response.headers.get("content-type", ""),
                    self.max_response_bytes,
                )
                # aiter_raw skips httpx's decoder layer when there is nothing to decode.
                chunks = (
                    response.aiter_bytes()
                    if response.headers.get("content-encoding")
                    else response.aiter_raw()
                )
                async for data in chunks:
                    if batch := reader.feed(data):
                        yield batch
                if batch := reader.close():
                    yield batch
        except ProviderError:
            raise
        except httpx.TimeoutException as exc:
            what = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for the answer"
            raise ProviderTimeoutError(
                f"timed out {what} (timeout={self.timeout}s)", provider=name
            ) from exc
        except httpx.ConnectError as exc:
            raise ProviderConnectionError(
                f"could not connect: {_describe(exc)}", provider=name
            ) from exc
        except (httpx.TransportError, httpx.DecodingError, OSError) as exc:
            raise ProviderConnectionError(
                f"the connection broke while reading: {_describe(exc)}",
                provider=name,
            ) from exc
