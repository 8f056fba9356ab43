"""The provider registry: lookups by name, and what an unknown name says."""

from __future__ import annotations

import sys

import pytest

from langchain_g4f import ChatG4F, providers
from langchain_g4f.errors import ConfigurationError, UnknownProviderError


def test_names_are_case_insensitive() -> None:
    assert providers.get("lockchat") is providers.get("Lockchat") is providers.Lockchat


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        ("Lockchatt", "(did you mean 'Lockchat'?)"),
        ("lokchat", "(did you mean 'Lockchat' or 'Aichat'?)"),  # the closest first
        ("gravity-engine", "(did you mean 'Gravityengine'?)"),
        ("Mishalgpt", "(did you mean 'Mishalsgpt'?)"),
    ],
)
def test_an_unknown_name_lists_the_close_ones(typed: str, suggested: str) -> None:
    with pytest.raises(UnknownProviderError) as raised:
        ChatG4F(provider=typed)
    message = str(raised.value)
    assert f"no provider named {typed!r} {suggested}; registered:" in message
    assert "registered: Aichat, Gravityengine, Lockchat, Mishalsgpt" in message


def test_a_name_close_to_nothing_suggests_nothing() -> None:
    with pytest.raises(UnknownProviderError) as raised:
        providers.get("NoSuchProvider")
    assert "did you mean" not in str(raised.value)
    assert "registered: Aichat, Gravityengine, Lockchat, Mishalsgpt" in str(raised.value)


def test_several_close_names_are_all_offered() -> None:
    for name in ("local-a", "local-b"):
        providers.register(providers.OpenAICompatible(name, "http://127.0.0.1:9/v1"))
    try:
        with pytest.raises(
            UnknownProviderError, match="did you mean 'local-b' or 'local-a' or 'Lockchat'"
        ):
            providers.get("local")
    finally:
        for name in ("local-a", "local-b"):
            providers.unregister(name)


def test_a_g4f_name_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "g4f", None)  # as if g4f were not installed
    with pytest.raises(ConfigurationError, match=r'pip install "langchain-g4f-router\[g4f\]"'):
        providers.get("g4f:Yqcloud")


def test_g4f_star_is_a_routers_discovery_not_a_provider() -> None:
    with pytest.raises(UnknownProviderError, match="no provider named 'g4f:\\*'"):
        providers.get("g4f:*")


def test_a_registered_name_wins_over_g4fs(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = providers.OpenAICompatible("g4f:Mine", "http://127.0.0.1:9/v1")
    providers.register(mine)
    try:
        monkeypatch.setitem(sys.modules, "g4f", None)  # never asked
        assert providers.get("g4f:mine") is mine
    finally:
        providers.unregister("g4f:Mine")
