"""One error hierarchy for everything that can go wrong talking to a provider.

Every error derives from :class:`G4FError` and names the provider it concerns.
Errors raised *before* a request is sent (bad configuration or input) also derive
from :class:`ValueError`, so code that validates input the usual Python way keeps
working.

``retryable`` tells the router whether trying the same provider again can help:
a timeout or a 503 can heal, a 401 or an unknown model cannot.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

__all__ = [
    "AllProvidersFailedError",
    "AuthenticationError",
    "BudgetExhaustedError",
    "ConfigurationError",
    "EmptyResponseError",
    "G4FError",
    "HTMLResponseError",
    "MalformedResponseError",
    "NoProviderAvailableError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderResponseError",
    "ProviderTimeoutError",
    "RateLimitError",
    "ResponseTooLargeError",
    "StreamInterruptedError",
    "UnknownProviderError",
    "UnsupportedModelError",
    "did_you_mean",
]


class G4FError(Exception):
    """Base class of every error raised by ``langchain_g4f``."""

    #: Whether retrying the same provider may succeed.
    retryable: bool = False

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        self.provider = provider
        self.message = message
        super().__init__(f"{provider}: {message}" if provider else message)


# --- raised before any request is sent -------------------------------------


class ConfigurationError(G4FError, ValueError):
    """The model, provider or input is not valid; nothing was sent."""


class UnknownProviderError(ConfigurationError):
    """No provider is registered under the requested name."""


class UnsupportedModelError(ConfigurationError):
    """The provider does not serve the requested model."""


# --- raised by a provider that was asked --------------------------------------


class ProviderError(G4FError):
    """A provider was asked and did not give a usable answer."""


class ProviderConnectionError(ProviderError):
    """The connection could not be made, or broke while reading."""

    retryable = True


class ProviderTimeoutError(ProviderError):
    """Connecting or reading took longer than the configured timeout."""

    retryable = True


#: Statuses below 500 that a later request may not get: timeout, conflict, too early, 429.
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


class ProviderHTTPError(ProviderError):
    """The provider answered with a non-2xx HTTP status; retryable for 5xx and a few more."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int,
        retry_after: float | None = None,
        body: str = "",
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.retryable = status in _RETRYABLE_STATUSES or status >= HTTPStatus.INTERNAL_SERVER_ERROR
        super().__init__(message, provider=provider)


class RateLimitError(ProviderHTTPError):
    """HTTP 429; ``retry_after`` holds the seconds the server asked to wait."""


class AuthenticationError(ProviderHTTPError):
    """HTTP 401 or 403: the provider wants (other) credentials."""


class MalformedResponseError(ProviderError):
    """The body is not what the provider's protocol promises."""

    retryable = True


class HTMLResponseError(MalformedResponseError):
    """An HTML page came back where JSON or events were expected."""


class ResponseTooLargeError(ProviderError):
    """The response passed the configured ``max_response_bytes``; reading stopped."""


class ProviderResponseError(ProviderError):
    """The provider reported an error inside its body or event stream."""

    retryable = True

    def __init__(self, message: str, *, provider: str | None = None, code: Any = None) -> None:
        self.code = code
        super().__init__(message, provider=provider)


class EmptyResponseError(ProviderError):
    """The provider answered successfully but with no text at all."""

    retryable = True


# --- raised by the router ---------------------------------------------------


class StreamInterruptedError(ProviderError):
    """A stream failed after text had already been yielded to the caller.

    The router raises it when such a stream is not continued on another provider
    (``on_interrupt="raise"``, or no provider could continue it); ``partial_text``
    holds all the text that had been yielded.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        partial_text: str = "",
        cause: BaseException | None = None,
    ) -> None:
        self.partial_text = partial_text
        self.cause = cause
        super().__init__(message, provider=provider)


class BudgetExhaustedError(ProviderError):
    """The provider's declared budget is spent; nothing was sent.

    The budget is ``requests_per_minute`` or ``max_concurrent``; ``retry_after``
    is the wait, in seconds, until a request is expected to fit.
    """

    retryable = True

    def __init__(
        self, message: str, *, provider: str | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, provider=provider)


class AllProvidersFailedError(G4FError):
    """Every provider the router tried failed; ``attempts`` says how."""

    def __init__(self, message: str, *, attempts: list[dict[str, Any]]) -> None:
        self.attempts = attempts
        super().__init__(message)


class NoProviderAvailableError(ConfigurationError):
    """No configured provider serves the request (model, streaming, auth)."""


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """A hint naming up to ``n`` names in ``known`` close to ``name``, or ``""``.

    The hint reads ``" (did you mean 'A' or 'B'?)"``, closest first, case aside.
    """
    by_folded = {candidate.casefold(): candidate for candidate in known}
    close = difflib.get_close_matches(name.casefold(), by_folded, n=n, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {' or '.join(repr(by_folded[c]) for c in close)}?)"
