"""Providers of an installed ``g4f`` package, as providers of this package.

g4f's providers do their own I/O (aiohttp, curl_cffi, browser sessions), so they
cannot be sans-I/O like the others: :class:`G4FPackageProvider` brings its own
transport, :class:`G4FPackageTransport`, which runs g4f's
``ChatCompletion.create`` / ``create_async`` instead of sending HTTP. Everything above it is shared:
``ChatG4F`` (retries before the first text, stop sequences, emulated tools,
structured output) and the router (fallback, health, hedging).

``g4f`` is imported when a provider is built, never when ``langchain_g4f`` is
imported; install it with ``pip install "langchain-g4f-router[g4f]"``. g4f is kept
quiet: its version check (a request to PyPI whose answer it prints on stdout) is
turned off, and what it prints while importing or loading a provider goes to this
module's debug log. Its failures become this package's typed errors naming the
provider (``g4f:<Name>``).

>>> from langchain_g4f import ChatG4F
>>> llm = ChatG4F(provider="g4f:Yqcloud")  # doctest: +SKIP

:func:`discover` finds every provider g4f marks working that serves a model:
``ChatG4FRouter(providers="g4f:*", model=...)`` routes over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
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
    UnknownProviderError,
    UnsupportedModelError,
    did_you_mean,
)
from langchain_g4f.providers.base import SHARED_KEY_ENV, Delta, HTTPRequest, Message, Provider

__all__ = ["G4FPackageProvider", "G4FPackageTransport", "discover", "g4f_error", "g4f_names"]

_log = logging.getLogger(__name__)

#: What the router's ``providers`` says to route over every usable g4f provider.
EVERY = "g4f:*"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """What g4f prints on stdout meanwhile goes to the debug log instead."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        if printed.getvalue().strip():
            _log.debug("g4f printed: %s", printed.getvalue().strip())


def _g4f(provider: str | None = None) -> Any:
    """The ``g4f`` package, imported quietly, with its version check off."""
    try:
        with _quiet():
            import g4f
    except ImportError:
        msg = 'the g4f package is not installed; pip install "langchain-g4f-router[g4f]"'
        raise ConfigurationError(msg, provider=provider) from None
    except Exception as exc:
        msg = f"the g4f package failed to import ({type(exc).__name__}: {exc})"
        raise ConfigurationError(msg, provider=provider) from exc
    # On its first call g4f asks PyPI for its latest version, from a thread that
    # prints the answer on stdout: a request nobody asked for, and output nobody can catch.
    g4f.debug.version_check = False
    return g4f


def g4f_names() -> list[str]:
    """The provider names the installed g4f lists (its routers, such as AnyProvider, aside)."""
    module = _g4f().Provider
    others = set(getattr(module, "__others__", ()))
    return [name for name in dir(module) if not name.startswith("_") and name not in others]


def _g4f_class(name: str) -> type:
    """g4f's provider class ``name`` (case-insensitive), loaded quietly; typed errors.

    A name g4f does not list is still looked up in ``g4f.Provider`` as given (a
    class set there by hand).
    """
    module = _g4f(f"g4f:{name}").Provider
    known = g4f_names()
    canonical = next((listed for listed in known if listed.lower() == name.lower()), name)
    provider = f"g4f:{canonical}"
    try:
        with _quiet():
            found = getattr(module, canonical)
    except AttributeError as exc:
        if canonical not in known:
            msg = f"g4f has no provider named {name!r}{did_you_mean(name, known)}"
            raise UnknownProviderError(msg, provider=provider) from None
        msg = f"g4f lists {canonical!r} but cannot load it ({exc})"
        raise ConfigurationError(msg, provider=provider) from exc
    except Exception as exc:  # g4f reaches the network to build some providers
        raise g4f_error(provider, exc) from exc
    if not isinstance(found, type):
        msg = f"g4f's {canonical!r} is not a provider class but a {type(found).__name__}"
        raise ConfigurationError(msg, provider=provider)
    return found


def discover(model: str) -> list[G4FPackageProvider]:
    """Every g4f provider that g4f marks working, serves ``model`` and needs no key.

    A provider that declares no models is taken to serve any. One that needs a
    key is taken only when a key of its own is set (``G4F_G4F_<NAME>_API_KEY``;
    the shared ``G4F_API_KEY`` is not one). Those that can stream come first,
    the others serve ``invoke`` and stand behind them in a stream. A provider
    g4f cannot load (offline, some fetch their settings) is left out and logged.
    """
    found = []
    for name in g4f_names():
        try:
            provider = G4FPackageProvider(name)
        except G4FError as exc:
            _log.info("%s leaves out g4f:%s: %s", EVERY, name, exc)
            continue
        if provider.working and provider.serves(model) and _keyed_if_needed(provider):
            found.append(provider)
    return sorted(found, key=lambda provider: not provider.supports_stream)


def _keyed_if_needed(provider: Provider) -> bool:
    """Whether ``provider`` needs no key, or a key of its own is set."""
    own = [name for name in provider.key_variables() if name != SHARED_KEY_ENV]
    return not provider.needs_auth or any(os.environ.get(name) for name in own)


def g4f_error(provider: str, exc: BaseException) -> ProviderError | ConfigurationError:
    """A g4f (or network) exception as this package's typed error naming ``provider``."""
    kind = type(exc).__name__
    text = f"{kind}: {exc}" if str(exc) else kind
    if kind in ("ModelNotFoundError", "ModelNotAllowedError", "ModelNotSupportedError"):
        return UnsupportedModelError(text, provider=provider)
    if kind in (
        "ProviderNotWorkingError",
        "MissingRequirementsError",
        "StreamNotSupportedError",
    ):
        return ConfigurationError(text, provider=provider)
    if kind == "RateLimitError":
        return RateLimitError(text, provider=provider, status=429)
    if kind in ("MissingAuthError", "PaymentRequiredError"):
        return AuthenticationError(text, provider=provider, status=401)
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= HTTPStatus.BAD_REQUEST:
        return ProviderHTTPError(text, provider=provider, status=status)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "Timeout" in kind:
        return ProviderTimeoutError(text, provider=provider)
    if isinstance(exc, (ConnectionError, OSError)) or "Connect" in kind:
        return ProviderConnectionError(text, provider=provider)
    return ProviderResponseError(text, provider=provider)


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

    ``provider`` is a g4f provider class, or its name in ``g4f.Provider``
    (case-insensitive; ``ChatG4F(provider="g4f:<Name>")`` builds one). The
    models are the ones the class declares (``models``, else ``default_model``);
    a class that declares none takes any model. ``name`` defaults to
    ``"g4f:<class name>"``.
    """

    transport = G4FPackageTransport()

    def __init__(self, provider: type | str, *, name: str | None = None) -> None:
        if isinstance(provider, str):
            provider = _g4f_class(provider)
        else:
            _g4f()
        self.g4f_provider = provider
        #: Whether g4f marks the provider as working.
        self.working = bool(getattr(provider, "working", False))
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
        return g4f_error(self.name, exc)

    def serves(self, model: str) -> bool:
        """Whether this provider takes ``model``."""
        return self.accepts_any_model or model in self.model
