"""LangChain chat models for gpt4free-style providers.

- :class:`ChatG4F`: one provider as a chat model.
- :class:`ChatG4FRouter`: several providers as one, with fallback and health.
- :mod:`langchain_g4f.providers`: the sans-I/O providers and their registry.
- :mod:`langchain_g4f.transport`: the sync (requests) and async (httpx) I/O.
- :mod:`langchain_g4f.errors`: one typed error hierarchy.
- :mod:`langchain_g4f.testing`: a local replica of the providers' protocols.
- :mod:`langchain_g4f.playground`: the seed provider names served offline by that
  replica, or by live endpoints.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_g4f.chat_models import ChatG4F
    from langchain_g4f.router import ChatG4FRouter

#: The name this package is installed under (``pip install langchain-g4f-router``);
#: the import name is ``langchain_g4f``.
DISTRIBUTION = "langchain-g4f-router"

try:
    __version__ = metadata.version(DISTRIBUTION)
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["DISTRIBUTION", "ChatG4F", "ChatG4FRouter", "__version__"]

_LAZY = {
    "ChatG4F": "langchain_g4f.chat_models",
    "ChatG4FRouter": "langchain_g4f.router",
}


def __getattr__(name: str) -> Any:
    """``ChatG4F`` and ``ChatG4FRouter``, imported on first use (they pull in langchain-core)."""
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'langchain_g4f' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
