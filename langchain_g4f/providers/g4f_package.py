"""Providers of an installed ``g4f`` package, as providers of this package.

g4f's providers do their own I/O (aiohttp, curl_cffi, browser sessions), so they
cannot be sans-I/O like the others: :class:`G4FPackageProvider` brings its own
transport, :class:`G4FPackageTransport`, which runs g4f's
``ChatCompletion.create`` / ``create_async`` instead of sending HTTP. Everything above it is shared:
``ChatG4F`` (retries before the first text, stop sequences, emulated tools,
structured output) and the router (fallback, health, hedging).

``g4f`` is imported when a provider is built, never when ``langchain_g4f`` is
imported; install it with ``pip install "langchain-g4f-router[g4f]"``. On its first call
g4f itself asks PyPI for its latest version unless ``g4f.debug.version_check`` is
``False``.

>>> from langchain_g4f import ChatG4F
>>> from langchain_g4f.providers.g4f_package import G4FPackageProvider
>>> llm = ChatG4F(provider=G4FPackageProvider("Yqcloud"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from http import HTTPStatus
from typing import Any

from langchain_g4f.errors import (
    AuthenticationError,
    ConfigurationError,
    EmptyResponseError,
    G4FError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderResponseError,
    ProviderTimeoutError,
    RateLimitError,
    UnsupportedModelError,
    did_you_mean,
)
from langchain_g4f.providers.base import Delta, HTTPRequest, Message, Provider

__all__ = ["G4FPackageProvider", "G4FPackageTransport"]


def _g4f() -> Any:
    try:
        import g4f
    except ImportError:
        msg = "the g4f package is not installed; pip install 'langchain-g4f-router[g4f]'"
        raise ConfigurationError(msg) from None
    return g4f


def _served(provider: Provider) -> G4FPackageProvider:
    """``provider``, if it is one this transport can serve."""
    if not isinstance(provider, G4FPackageProvider):
        msg = f"G4FPackageTransport serves only a G4FPackageProvider, not {type(provider).__name__}"
        raise ConfigurationError(msg, provider=provider.name)
    return provider


class G4FPackageTransport:
    """The I/O of a :class:`G4FPackageProvider`: g4f's ``ChatCompletion``.

    One batch per piece it yields.
    """

    def batches(self, provider: Provider, request: HTTPRequest) -> Iterator[list[Delta]]:
        """Run g4f's ``ChatCompletion.create``; yield one batch per delta it gives."""
        provider = _served(provider)
        has_text = False
        try:
            for piece in _g4f().ChatCompletion.create(**provider.arguments(request)):
                delta = provider.delta(piece)
                if delta is not None:
                    has_text = has_text or bool(delta.text)
                    yield [delta]
        except G4FError:
            raise
        except Exception as exc:
            raise provider.error(exc) from exc
        if not has_text:
            msg = "answered with no text"
            raise EmptyResponseError(msg, provider=provider.name)

    async def abatches(
        self, provider: Provider, request: HTTPRequest
    ) -> AsyncIterator[list[Delta]]:
        """:meth:`batches` on g4f's async path (with ``stream=True``, an async generator)."""
        provider = _served(provider)
        has_text = False
        try:
            async for piece in _g4f().ChatCompletion.create_async(**provider.arguments(request)):
                delta = provider.delta(piece)
                if delta is not None:
                    has_text = has_text or bool(delta.text)
                    yield [delta]
        except G4FError:
            raise
        except Exception as exc:
            raise provider.error(exc) from exc
        if not has_text:
            msg = "answered with no text"
            raise EmptyResponseError(msg, provider=provider.name)


class G4FPackageProvider(Provider):
    """One provider of the installed ``g4f`` package.

    ``provider`` is a g4f provider class, or its name in ``g4f.Provider``. The
    models are the ones the class declares (``models``, else ``default_model``);
    a class that declares none takes any model. ``name`` defaults to
    ``"g4f:<class name>"``.
    """

    transport = G4FPackageTransport()

    def __init__(self, provider: type | str, *, name: str | None = None) -> None:
        g4f = _g4f()
        if isinstance(provider, str):
            found = getattr(g4f.Provider, provider, None)
            if not isinstance(found, type):
                known = [name for name in dir(g4f.Provider) if not name.startswith("_")]
                msg = f"g4f has no provider named {provider!r}{did_you_mean(provider, known)}"
                raise ConfigurationError(msg)
            provider = found
        self.g4f_provider = provider
        super().__init__(getattr(provider, "url", None) or f"g4f://{provider.__name__}")
        self.name = name or f"g4f:{provider.__name__}"
        models = [m for m in (getattr(provider, "models", None) or []) if isinstance(m, str)]
        default = getattr(provider, "default_model", None)
        if default and default not in models:
            models.insert(0, default)
        self.model = models
        self.accepts_any_model = not models
        self.supports_stream = bool(getattr(provider, "supports_stream", False))
        self.needs_auth = bool(getattr(provider, "needs_auth", False))

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
        """The call as g4f's arguments (a JSON body); no HTTP is described.

        ``needs_auth`` is g4f's to check: many such providers read cookies or
        HAR files rather than a key.
        """
        if base_url is not None:
            msg = "a g4f provider finds its own endpoints; base_url does not apply"
            raise ConfigurationError(
                msg,
                provider=self.name,
            )
        self.check_model(model)
        if not messages:
            msg = "no messages to send"
            raise ConfigurationError(msg, provider=self.name)
        options = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "stop": stop,
            "api_key": api_key,
        }
        body: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            **(extra or {}),
            **{key: value for key, value in options.items() if value is not None},
        }
        return HTTPRequest("POST", self.url, {}, json.dumps(body).encode(), stream)

    # -- the provider's own I/O ----------------------------------------------------

    def arguments(self, request: HTTPRequest) -> dict[str, Any]:
        """The keyword arguments of g4f's ``ChatCompletion`` for ``request``."""
        payload = json.loads(request.body)
        arguments = {**payload, "provider": self.g4f_provider, "stream": True}
        if not self.supports_stream:
            # still an iterator of pieces: the whole answer as one
            arguments["ignore_stream"] = True
        return arguments

    def delta(self, piece: Any) -> Delta | None:
        """A piece g4f yielded as a delta, or ``None`` for one that carries no answer.

        Text is text, reasoning tokens reasoning, a finish reason one; g4f's
        other responses (status lines, titles, sources...) are not text.
        """
        if isinstance(piece, BaseException):
            raise self.error(piece)
        if isinstance(piece, str):
            return Delta(text=piece) if piece else None
        token = getattr(piece, "token", None)
        if type(piece).__name__ == "Reasoning" and isinstance(token, str) and token:
            return Delta(reasoning=token)
        reason = getattr(piece, "reason", None)
        if type(piece).__name__ == "FinishReason" and isinstance(reason, str):
            return Delta(finish_reason=reason)
        return None

    def error(self, exc: BaseException) -> ProviderError | ConfigurationError:
        """A g4f (or network) exception as this package's typed error."""
        kind = type(exc).__name__
        text = f"{kind}: {exc}" if str(exc) else kind
        if kind in ("ModelNotFoundError", "ModelNotAllowedError", "ModelNotSupportedError"):
            return UnsupportedModelError(text, provider=self.name)
        if kind in (
            "ProviderNotWorkingError",
            "MissingRequirementsError",
            "StreamNotSupportedError",
        ):
            return ConfigurationError(text, provider=self.name)
        if kind == "RateLimitError":
            return RateLimitError(text, provider=self.name, status=429)
        if kind in ("MissingAuthError", "PaymentRequiredError"):
            return AuthenticationError(text, provider=self.name, status=401)
        status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
        if isinstance(status, int) and status >= HTTPStatus.BAD_REQUEST:
            return ProviderHTTPError(text, provider=self.name, status=status)
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in kind:
            return ProviderTimeoutError(text, provider=self.name)
        if isinstance(exc, (ConnectionError, OSError)) or "Connect" in kind:
            return ProviderConnectionError(text, provider=self.name)
        return ProviderResponseError(text, provider=self.name)
