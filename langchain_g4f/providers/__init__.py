"""Providers: the four seed providers, the OpenAI-compatible one, and a registry.

>>> from langchain_g4f import providers
>>> providers.names()
['Aichat', 'Gravityengine', 'Lockchat', 'Mishalsgpt']
>>> providers.Lockchat.model
['gpt-4', 'gpt-3.5-turbo']

``register(provider)`` adds a provider of your own (any :class:`Provider`
instance, for example an :class:`OpenAICompatible`); ``ChatG4F(provider=name)``
and the router then find it by name. ``"g4f:<Name>"`` names a provider of the
installed ``g4f`` package (the ``g4f`` extra). :data:`CATALOG` knows free tiers
of OpenAI-compatible APIs and local servers (``OpenAICompatible.from_catalog``).
"""

from __future__ import annotations

import threading

from langchain_g4f.errors import ConfigurationError, UnknownProviderError, did_you_mean
from langchain_g4f.providers import catalog, g4f_package
from langchain_g4f.providers.aichat import Aichat as _Aichat
from langchain_g4f.providers.base import Delta, HTTPRequest, Provider, ResponseParser
from langchain_g4f.providers.catalog import CATALOG
from langchain_g4f.providers.gravityengine import Gravityengine as _Gravityengine
from langchain_g4f.providers.lockchat import Lockchat as _Lockchat
from langchain_g4f.providers.mishalsgpt import Mishalsgpt as _Mishalsgpt
from langchain_g4f.providers.openai import OpenAICompatible, OpenAIProtocol, SSEParser

#: The seed providers as instances, the way the g4f modules were used.
Mishalsgpt = _Mishalsgpt()
Gravityengine = _Gravityengine()
Lockchat = _Lockchat()
Aichat = _Aichat()

_lock = threading.Lock()
_registry: dict[str, Provider] = {p.name: p for p in (Mishalsgpt, Gravityengine, Lockchat, Aichat)}


def register(provider: Provider, *, replace: bool = False) -> Provider:
    """Make ``provider`` available by its name; returns it."""
    given: object = provider  # checked for callers without a type checker
    if not isinstance(given, Provider):
        msg = f"expected a Provider instance, got {type(given).__name__}"
        raise TypeError(msg)
    if not provider.name:
        msg = "a provider needs a non-empty name"
        raise ValueError(msg)
    with _lock:
        if provider.name in _registry and not replace:
            msg = (
                f"a provider named {provider.name!r} is already registered; "
                "pass replace=True to replace it"
            )
            raise ValueError(msg)
        _registry[provider.name] = provider
    return provider


def unregister(name: str) -> None:
    """Remove a registered provider (a seed provider can be removed too)."""
    with _lock:
        _registry.pop(name, None)


def names() -> list[str]:
    """The registered provider names, sorted."""
    return sorted(_registry)


def all_providers() -> list[Provider]:
    """The registered providers, in name order."""
    return [_registry[name] for name in names()]


def get(name: str) -> Provider:
    """The registered provider ``name`` (case-insensitive), or ``"g4f:<Name>"``.

    An unknown name raises :class:`UnknownProviderError` naming the close
    registered names (``'Lockchat'`` for ``"lockchatt"``) and all of them;
    ``"g4f:<Name>"`` looks among the installed g4f's providers instead
    (:class:`~langchain_g4f.errors.ConfigurationError` saying how to install g4f
    when it is missing).
    """
    provider = _registry.get(name)
    if provider is not None:
        return provider
    for key, value in _registry.items():
        if key.lower() == name.lower():
            return value
    if name[:4].lower() == "g4f:" and name[4:] != "*":
        return g4f_package.G4FPackageProvider(name[4:])
    msg = (
        f"no provider named {name!r}{did_you_mean(name, names())}; registered: {', '.join(names())}"
    )
    raise UnknownProviderError(msg)


def discover(spec: str, model: str | None) -> list[Provider]:
    """The providers a router's ``providers="g4f:*"`` or ``providers="catalog"`` means.

    ``"g4f:*"``: every g4f provider that g4f marks working, serves ``model`` and
    needs no key unless one of its own is set (see
    :func:`~langchain_g4f.providers.g4f_package.discover`); it needs ``model``.
    ``"catalog"``: every :data:`CATALOG` entry whose key is set, and the keyless ones.
    """
    if spec.lower() == g4f_package.EVERY:
        if model is None:
            msg = "providers='g4f:*' needs model=...: g4f's providers serve different models"
            raise ConfigurationError(msg)
        found: list[Provider] = list(g4f_package.discover(model))
        if not found:
            msg = f"no g4f provider that g4f marks working serves model {model!r} without a key"
            raise ConfigurationError(msg)
        return found
    if spec.lower() == "catalog":
        entries = catalog.available()
        if model is None and not any(entry.model for entry in entries):
            keys = ", ".join(f"${name}" for entry in CATALOG.values() for name in entry.key_env)
            msg = (
                "no catalog entry can answer: set the key of one "
                f"({keys}), or pass model=... for the local servers"
            )
            raise ConfigurationError(msg)
        return [OpenAICompatible.from_catalog(entry.name) for entry in entries]
    msg = (
        "providers must be a list of chat models or provider names, 'g4f:*' or 'catalog', "
        f"not {spec!r}"
    )
    raise ConfigurationError(msg)


__all__ = [
    "CATALOG",
    "Aichat",
    "Delta",
    "Gravityengine",
    "HTTPRequest",
    "Lockchat",
    "Mishalsgpt",
    "OpenAICompatible",
    "OpenAIProtocol",
    "Provider",
    "ResponseParser",
    "SSEParser",
    "all_providers",
    "discover",
    "get",
    "names",
    "register",
    "unregister",
]
