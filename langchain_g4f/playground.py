"""Where the seed providers' names lead: the offline playground, or live endpoints.

The seed providers' public endpoints went offline long ago. Code written against
them (``ChatG4F(provider="Lockchat")``, a router over the seed names, the
notebooks in ``notebooks/``) runs unchanged against one of these, chosen by
:func:`connect`, usually from the ``LANGCHAIN_G4F_ENDPOINTS`` environment variable:

- ``"offline"`` (the default): the playground. A local replica of the seed
  protocols (:class:`langchain_g4f.testing.Replica`) starts on 127.0.0.1 and
  every seed provider is pointed at it; answers are deterministic.
- ``"live"``: the providers' own URLs, as registered.
- ``"http://host:port/v1"``: an OpenAI-compatible server (g4f's API server,
  Ollama, vLLM, LM Studio, a hosted API) answers under every seed name. The
  ``G4F_API_KEY`` environment variable, if set, is its bearer token; ``model``
  replaces the models the seed names ask for.
- ``"g4f:Yqcloud"``: a provider of the installed g4f package (the ``g4f`` extra)
  answers under every seed name.

>>> from langchain_g4f import playground
>>> endpoints = playground.connect("offline")  # doctest: +SKIP
>>> print(endpoints)  # doctest: +SKIP
offline: the seed providers are served by the local replica at http://127.0.0.1:40123
>>> endpoints.close()  # the providers as they were; the replica stops  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlsplit

from langchain_g4f import providers
from langchain_g4f._redact import redact_url
from langchain_g4f.errors import ConfigurationError
from langchain_g4f.providers.base import Provider
from langchain_g4f.providers.g4f_package import G4FPackageProvider
from langchain_g4f.testing import Replica

__all__ = ["ENV", "SEEDS", "Endpoints", "connect"]

#: The environment variable :func:`connect` reads when given no choice.
ENV = "LANGCHAIN_G4F_ENDPOINTS"
#: The provider names the choice applies to.
SEEDS = ("Aichat", "Gravityengine", "Lockchat", "Mishalsgpt")


class Endpoints:
    """What :func:`connect` set up; ``close()`` puts the registry back as it was.

    Only one is open at a time: :func:`connect` closes the one before, so running a
    notebook's first cell again starts afresh. ``close()`` may be called more than once.
    """

    def __init__(
        self, mode: str, where: str, replaced: list[Provider], replica: Replica | None
    ) -> None:
        self.mode = mode
        self.where = where
        self.replica = replica
        self._replaced = replaced
        self._redirect = replica.redirect_providers().start() if replica is not None else None

    def __str__(self) -> str:
        return f"{self.mode}: {self.where}"

    def __repr__(self) -> str:
        return f"Endpoints({self})"

    def close(self) -> None:
        """Restore the seed providers; stop the replica if one was started."""
        if _Connection.current is self:
            _Connection.current = None
        if self._redirect is not None:
            self._redirect.stop()
            self._redirect = None
        if self.replica is not None:
            self.replica.stop()
            self.replica = None
        for provider in self._replaced:
            providers.register(provider, replace=True)
        self._replaced = []


class _Connection:
    """The endpoints :func:`connect` opened last, until they are closed."""

    current: Endpoints | None = None


def connect(choice: str | None = None, *, model: str | None = None) -> Endpoints:
    """Point the seed provider names at the playground or at live endpoints.

    ``choice``: ``"offline"``, ``"live"``, an ``http(s)://`` URL of an
    OpenAI-compatible API root, or ``"g4f:<provider>"``; ``None`` reads
    ``LANGCHAIN_G4F_ENDPOINTS`` (default ``"offline"``). ``model`` (URL and g4f
    choices only): the one model every seed name asks for. The endpoints opened
    by an earlier call are closed first (after the new choice is checked), so
    calling it again, as a notebook's first cell run twice does, is safe.
    """
    build = _chosen(choice, model)  # a bad choice raises here and changes nothing
    if _Connection.current is not None:
        _Connection.current.close()
    _Connection.current = build()
    return _Connection.current


def _chosen(choice: str | None, model: str | None) -> Callable[[], Endpoints]:
    """The checked choice, as what opens its endpoints."""
    choice = (choice if choice is not None else os.environ.get(ENV, "")).strip() or "offline"
    if choice == "offline":
        if model is not None:
            msg = "model= applies to an endpoint URL or a g4f provider"
            raise ConfigurationError(msg)
        return _offline
    if choice == "live":
        return lambda: Endpoints("live", "the seed providers' own endpoints", [], None)
    if choice.startswith("g4f:"):
        g4f = _g4f_stand_in(choice[len("g4f:") :])
        return lambda: _replace_seeds(g4f, model)
    parts = urlsplit(choice)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = (
            f"{ENV} must be 'offline', 'live', an http(s):// URL of an OpenAI-compatible "
            f"API or 'g4f:<provider>', not {redact_url(choice)!r}"
        )
        raise ConfigurationError(msg)
    openai = _openai_stand_in(choice)
    return lambda: _replace_seeds(openai, model)


def _offline() -> Endpoints:
    replica = Replica().start()
    where = f"the seed providers are served by the local replica at {replica.url}"
    return Endpoints("offline", where, [], replica)


#: Builds the provider that answers under a seed's name, given the seed and ``model``.
_StandIn = Callable[[Provider, "str | None"], Provider]


def _openai_stand_in(url: str) -> tuple[str, _StandIn]:
    def make(seed: Provider, model: str | None) -> Provider:
        # The server is asked for the models the seed names ask for (gpt-4 for Lockchat...)
        models = [model] if model else list(seed.model)
        key = bool(os.environ.get("G4F_API_KEY"))
        return providers.OpenAICompatible(seed.name, url, models=models, needs_auth=key)

    return redact_url(url), make


def _g4f_stand_in(g4f_name: str) -> tuple[str, _StandIn]:
    g4f_class = G4FPackageProvider(g4f_name).g4f_provider  # fails early on a wrong name

    def make(seed: Provider, model: str | None) -> Provider:
        provider = G4FPackageProvider(g4f_class, name=seed.name)
        if model:  # otherwise the g4f provider's own models
            provider.model, provider.accepts_any_model = [model], False
        return provider

    return f"g4f's {g4f_class.__name__}", make


def _replace_seeds(stand_in: tuple[str, _StandIn], model: str | None) -> Endpoints:
    """Register a stand-in under each seed name; keep the seeds to restore them."""
    where, make = stand_in
    replaced = []
    for name in SEEDS:
        seed = providers.get(name)
        providers.register(make(seed, model), replace=True)
        replaced.append(seed)
    return Endpoints("live", f"every seed provider is served by {where}", replaced, None)
