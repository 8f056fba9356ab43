"""The public API, pinned: removing or renaming a public name is a deliberate change here."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import langchain_g4f
from langchain_g4f import errors, providers

PACKAGE = [
    "DISTRIBUTION",
    "ChatG4F",
    "ChatG4FRouter",
    "__version__",
]

PROVIDERS = [
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


def public_modules() -> list[str]:
    """Every module of the package whose dotted path has no part starting with ``_``."""
    found = [
        info.name
        for info in pkgutil.walk_packages(langchain_g4f.__path__, "langchain_g4f.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    return sorted(["langchain_g4f", *found])


def test_the_package_exports_exactly_its_pinned_names() -> None:
    assert sorted(langchain_g4f.__all__) == sorted(PACKAGE)


def test_providers_exports_exactly_its_pinned_names() -> None:
    assert sorted(providers.__all__) == sorted(PROVIDERS)


def test_every_error_class_is_exported() -> None:
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == errors.__name__
    }
    assert classes <= set(errors.__all__)


@pytest.mark.parametrize("name", public_modules())
def test_every_public_module_declares_all_and_each_name_exists(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"


def test_the_lazy_chat_models_are_the_classes_of_their_modules() -> None:
    from langchain_g4f.chat_models import ChatG4F
    from langchain_g4f.router import ChatG4FRouter

    assert langchain_g4f.ChatG4F is ChatG4F
    assert langchain_g4f.ChatG4FRouter is ChatG4FRouter
