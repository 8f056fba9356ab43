"""Free tiers of OpenAI-compatible APIs, and local servers, known by a short name.

Each :class:`CatalogEntry` says where the endpoint is, which environment
variables hold its key, whether it is keyless or on this machine, a free model to
start with, and the documentation page those facts were read from (and when).
Facts the page did not confirm are said in ``note``.

>>> from langchain_g4f.providers import CATALOG, OpenAICompatible
>>> CATALOG["groq"].base_url
'https://api.groq.com/openai/v1'
>>> groq = OpenAICompatible.from_catalog("groq")  # its key from $GROQ_API_KEY

``ChatG4FRouter(providers="catalog")`` routes over every entry whose key is
set, plus the keyless ones. ``CATALOG`` is a plain dict: add entries of your own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from langchain_g4f.errors import UnknownProviderError, did_you_mean

__all__ = ["CATALOG", "CHECKED", "CatalogEntry", "available", "entry"]

#: The day every entry below was checked against its source.
CHECKED = "2026-12-07"


@dataclass(frozen=True)
class CatalogEntry:
    """One OpenAI-compatible endpoint: where it is and how to reach it."""

    #: The catalog name, also the provider's name (``"groq"``).
    name: str
    #: The API root that ``/chat/completions`` is appended to.
    base_url: str
    #: Environment variables that hold its key, the first set one wins; none: keyless.
    key_env: tuple[str, ...]
    #: A model to start with (free on the free tier where the source says so);
    #: ``None``: the server serves what you loaded, pass ``model=``.
    model: str | None
    #: The documentation page the facts come from.
    source: str
    #: Whether the server runs on this machine.
    local: bool = False
    #: What the source did not confirm.
    note: str = ""
    #: When the facts were checked.
    checked: str = CHECKED

    @property
    def keyless(self) -> bool:
        """Whether it answers without a key."""
        return not self.key_env

    def key_variable(self) -> str | None:
        """The variable its key is read from: the first one set, else the first named."""
        for variable in self.key_env:
            if os.environ.get(variable):
                return variable
        return self.key_env[0] if self.key_env else None

    def has_key(self) -> bool:
        """Whether one of its key variables is set."""
        return any(os.environ.get(variable) for variable in self.key_env)


def _entries(*entries: CatalogEntry) -> dict[str, CatalogEntry]:
    return {entry.name: entry for entry in entries}


#: The known endpoints by name. Facts and sources as of :data:`CHECKED`.
CATALOG: dict[str, CatalogEntry] = _entries(
    CatalogEntry(
        "groq",
        "https://api.groq.com/openai/v1",
        ("GROQ_API_KEY",),
        "llama-3.1-8b-instant",
        "https://console.groq.com/docs/openai",
        note=(
            "model id not confirmed on Groq's own models page "
            "(https://console.groq.com/docs/models, whose table could not be read); "
            "it is the model Groq-based guides name for the free plan"
        ),
    ),
    CatalogEntry(
        "openrouter",
        "https://openrouter.ai/api/v1",
        ("OPENROUTER_API_KEY",),
        "openrouter/free",
        "https://openrouter.ai/docs/guides/routing/routers/free-models-router",
        note="base URL and key variable from https://openrouter.ai/docs/community/openai-sdk",
    ),
    CatalogEntry(
        "cerebras",
        "https://api.cerebras.ai/v1",
        ("CEREBRAS_API_KEY",),
        "gpt-oss-120b",
        "https://inference-docs.cerebras.ai/resources/openai",
        note=(
            "key variable and model from https://inference-docs.cerebras.ai/api-reference/"
            "chat-completions; that the model is on the free tier is not stated there"
        ),
    ),
    CatalogEntry(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        ("GEMINI_API_KEY",),
        "gemini-3.8-flash",
        "https://ai.google.dev/gemini-api/docs/openai",
        note="Google AI Studio key; that this model is on the free tier is not stated there",
    ),
    CatalogEntry(
        "mistral",
        "https://api.mistral.ai/v1",
        ("MISTRAL_API_KEY",),
        "mistral-small-latest",
        "https://docs.mistral.ai/api",
        note="the free plan's terms are not on that page",
    ),
    CatalogEntry(
        "github",
        "https://models.github.ai/inference",
        ("GITHUB_TOKEN",),
        "openai/gpt-4.1",
        "https://docs.github.com/en/github-models/quickstart",
        note=(
            "a token with the models scope; model id format from "
            "https://docs.github.com/en/rest/models/inference; free usage and $GITHUB_TOKEN "
            "from https://github.com/github/models-ai-sdk"
        ),
    ),
    CatalogEntry(
        "nvidia",
        "https://integrate.api.nvidia.com/v1",
        ("NVIDIA_API_KEY",),
        "meta/llama-3.1-8b-instruct",
        "https://build.nvidia.com/",
        note=(
            "model id from NVIDIA's NIM docs (docs.nvidia.com/nemo/microservices), "
            "not confirmed in the hosted catalog"
        ),
    ),
    CatalogEntry(
        "pollinations",
        "https://gen.pollinations.ai/v1",
        ("POLLINATIONS_API_KEY",),
        "openai",
        "https://enter.pollinations.ai/api/docs/llm.txt",
        note=(
            "no longer keyless: the source says every generation request needs a key "
            "(from enter.pollinations.ai); the variable name is this package's, "
            "Pollinations names none"
        ),
    ),
    CatalogEntry(
        "ollama",
        "http://localhost:11434/v1",
        (),
        None,
        "https://docs.ollama.com/openai",
        local=True,
    ),
    CatalogEntry(
        "lmstudio",
        "http://localhost:1234/v1",
        (),
        None,
        "https://lmstudio.ai/docs/api/openai-api",
        local=True,
        note="keyless unless the server's Require Authentication setting is on",
    ),
    CatalogEntry(
        "g4f-api",
        "http://localhost:1337/v1",
        (),
        None,
        "https://g4f.dev/docs/interference-api.html",
        local=True,
        note="g4f's own API server: `g4f api`",
    ),
)


def entry(name: str) -> CatalogEntry:
    """The catalog entry ``name`` (case-insensitive); unknown: :class:`UnknownProviderError`."""
    found = CATALOG.get(name) or next(
        (value for key, value in CATALOG.items() if key.lower() == name.lower()), None
    )
    if found is None:
        names = sorted(CATALOG)
        msg = (
            f"no catalog entry named {name!r}{did_you_mean(name, names)}; known: {', '.join(names)}"
        )
        raise UnknownProviderError(msg)
    return found


def available() -> list[CatalogEntry]:
    """The entries a router can use now: those whose key is set, and the keyless ones."""
    return [item for item in CATALOG.values() if item.keyless or item.has_key()]
