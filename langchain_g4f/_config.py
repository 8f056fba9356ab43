"""Constructor checks and API-key rules shared by ``ChatG4F`` and ``ChatG4FRouter``.

Bad arguments raise :class:`~langchain_g4f.errors.ConfigurationError` naming the
field, never a raw pydantic ``ValidationError``; a misspelled argument is refused
with the closest real one as a hint.

API keys from the environment follow these rules (a key passed as ``api_key=``
goes where the caller sends it, plain ``http://`` included):

1. a variable named for the provider, ``G4F_<PROVIDER>_API_KEY`` (upper case,
   other characters as ``_``), or the one the provider declares in
   ``api_key_env``, is sent to that provider;
2. ``G4F_API_KEY`` is sent only to providers that need a key (``needs_auth``);
3. no key from the environment is sent over plain ``http://``, except to a
   loopback address (``localhost``, ``127.0.0.0/8``, ``::1``): that is a
   :class:`ConfigurationError` before any request.
"""

from __future__ import annotations

import ipaddress
import math
import os
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ValidationError

from langchain_g4f._redact import redact_text, redact_url
from langchain_g4f.errors import ConfigurationError, did_you_mean
from langchain_g4f.providers.base import Provider

__all__ = [
    "MAX_SECONDS",
    "check_call_values",
    "check_env_key_destination",
    "check_proxy_url",
    "env_api_key",
    "init_model",
]

#: The longest wait the platform's timers accept (``threading.TIMEOUT_MAX``, about 292
#: years): a longer timeout would fail deep inside the HTTP library, so it is refused.
MAX_SECONDS = threading.TIMEOUT_MAX


#: Fields whose values are never shown in an error message, and those shown redacted.
_SECRET_FIELDS = frozenset({"api_key"})
_URL_FIELDS = frozenset({"base_url", "proxy"})
#: How much of an invalid value an error message shows.
_SHOWN_CHARS = 60


# --- constructor arguments -------------------------------------------------------


def _accepted_arguments(cls: type[BaseModel]) -> set[str]:
    """Every keyword ``cls(...)`` takes: field names and their aliases."""
    names = set()
    for name, field in cls.model_fields.items():
        names.add(name)
        if field.alias:
            names.add(field.alias)
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(a for a in alias.choices if isinstance(a, str))
    return names


def _check_arguments(cls: type[BaseModel], kwargs: dict[str, Any]) -> None:
    """Refuse keywords ``cls`` does not take, suggesting the closest real one."""
    accepted = _accepted_arguments(cls)
    unknown = [name for name in kwargs if name not in accepted]
    if not unknown:
        return
    problems = [f"{name!r}{did_you_mean(name, sorted(accepted), n=1)}" for name in unknown]
    msg = f"{cls.__name__} got unknown argument(s): {', '.join(problems)}"
    raise ConfigurationError(msg, provider=_provider_name(kwargs))


def _provider_name(kwargs: dict[str, Any]) -> str | None:
    provider = kwargs.get("provider")
    if isinstance(provider, str):
        return provider
    return getattr(provider, "name", None) or None


def _shown(field: str, value: Any) -> str:
    if field in _SECRET_FIELDS:
        return ""
    if field in _URL_FIELDS and isinstance(value, str):
        return f" (got {redact_url(value)!r})"
    text = redact_text(repr(value))
    shown = text[:_SHOWN_CHARS]
    return f" (got {shown}{'...' if len(text) > _SHOWN_CHARS else ''})"


def _describe(cls: type[BaseModel], error: ValidationError) -> str:
    """One line per invalid field: its name, what is wrong, the value (secrets hidden)."""
    # One entry per field: a value that fits no member of a union (a number or "auto")
    # fails once per member, under pydantic's names for them; they are joined with "or".
    fields: dict[str, tuple[list[str], str]] = {}
    for item in error.errors(include_url=False, include_input=True):
        loc = item.get("loc") or ("?",)
        field = str(loc[0])
        where = field if field in cls.model_fields else ".".join(str(part) for part in loc)
        message = item.get("msg", "invalid")
        if item.get("type") == "value_error":  # our own check; its message says it all
            message, shown = message.removeprefix("Value error, "), ""
        else:
            shown = _shown(field, item.get("input"))
        messages, _ = fields.setdefault(where, ([], shown))
        if message not in messages:
            messages.append(message)
    lines = [f"{where}: {' or '.join(msgs)}{shown}" for where, (msgs, shown) in fields.items()]
    return f"invalid {cls.__name__} argument(s): " + "; ".join(lines)


def init_model(init: Callable[..., None], cls: type[BaseModel], kwargs: dict[str, Any]) -> None:
    """Run a pydantic ``__init__`` with typed errors: unknown names, then bad values.

    The pydantic error is neither chained nor left as the context: its text
    repeats the inputs, secrets included.
    """
    _check_arguments(cls, kwargs)
    try:
        init(**kwargs)
    except ValidationError as exc:
        error = ConfigurationError(_describe(cls, exc), provider=_provider_name(kwargs))
    else:
        return
    raise error


# --- value checks used by field validators ----------------------------------------

_PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


def check_proxy_url(url: str) -> str:
    """``url`` if it is a proxy URL with a scheme and a host, else a ``ValueError``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme.lower() not in _PROXY_SCHEMES or not host:
        msg = (
            f"proxy must be a URL such as 'http://host:3128' or 'socks5://host:1080' "
            f"({', '.join(_PROXY_SCHEMES)}), not {redact_url(url)!r}"
        )
        raise ValueError(msg)
    return url


def check_call_values(kwargs: dict[str, Any], provider: str) -> None:
    """Per-call ``temperature`` and ``max_tokens``, checked as the fields are."""
    temperature = kwargs.get("temperature")
    if temperature is not None and not (
        _is_number(temperature) and math.isfinite(temperature) and temperature >= 0
    ):
        msg = f"temperature must be a number >= 0, not {temperature!r}"
        raise ConfigurationError(msg, provider=provider)
    max_tokens = kwargs.get("max_tokens")
    if max_tokens is not None and not (
        isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1
    ):
        msg = f"max_tokens must be an integer >= 1, not {max_tokens!r}"
        raise ConfigurationError(msg, provider=provider)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- API keys from the environment -------------------------------------------------


def env_api_key(provider: Provider) -> tuple[str, str] | None:
    """``(variable, key)`` from the environment that may go to ``provider``, if any."""
    for variable in provider.key_variables():
        if os.environ.get(variable):
            return variable, os.environ[variable]
    return None


def _is_plain_http_to_another_host(url: str) -> bool:
    """Whether ``url`` is ``http://`` to a host other than this machine's loopback."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def check_env_key_destination(variable: str, url: str, provider: str) -> None:
    """Refuse to send a key from the environment over plain HTTP to another host."""
    if _is_plain_http_to_another_host(url):
        msg = (
            f"will not send the API key from ${variable} over plain http to "
            f"{redact_url(url)}; use an https:// base_url, or pass api_key=... "
            "explicitly to send it there anyway"
        )
        raise ConfigurationError(msg, provider=provider)
