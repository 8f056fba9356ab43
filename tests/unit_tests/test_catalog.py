"""The catalog of free tiers and local servers: its entries, from_catalog, the router's
``providers="catalog"`` and ``langchain-g4f providers --catalog``.

Loopback servers (the replica's OpenAI-compatible route) stand in for the entries.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from langchain_g4f import ChatG4F, ChatG4FRouter, providers
from langchain_g4f.cli import main
from langchain_g4f.errors import ConfigurationError, UnknownProviderError
from langchain_g4f.providers import CATALOG, OpenAICompatible, catalog
from langchain_g4f.providers.catalog import CatalogEntry
from langchain_g4f.testing import Replica

KEY = "sk-test-catalog-0123456789"


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for entry in CATALOG.values():
        for variable in entry.key_env:
            monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("G4F_API_KEY", raising=False)


def stand_in(replica: Replica) -> str:
    return replica.base_url("openai") + "/v1"


def test_the_catalog_has_the_well_known_free_tiers_and_local_servers() -> None:
    assert {
        "groq",
        "openrouter",
        "cerebras",
        "gemini",
        "mistral",
        "github",
        "nvidia",
        "pollinations",
        "ollama",
        "lmstudio",
        "g4f-api",
    } <= set(CATALOG)
    assert providers.CATALOG is catalog.CATALOG


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_entry_says_where_its_facts_come_from(name: str) -> None:
    entry = CATALOG[name]
    assert entry.name == name
    assert entry.checked == "2026-12-07"
    assert entry.source.startswith("https://")
    parts = urlsplit(entry.base_url)
    if entry.local:
        assert (parts.scheme, parts.hostname) == ("http", "localhost")
        assert entry.keyless
        assert entry.model is None  # a local server serves what its user loaded
    else:
        assert parts.scheme == "https"
        assert entry.key_env
        assert all(v.isupper() for v in entry.key_env)
        assert entry.model


def test_from_catalog_builds_the_entry() -> None:
    groq = OpenAICompatible.from_catalog("groq")
    assert (groq.name, groq.url, groq.api_key_env) == (
        "groq",
        "https://api.groq.com/openai/v1",
        "GROQ_API_KEY",
    )
    assert groq.needs_auth
    assert groq.endpoint() == "https://api.groq.com/openai/v1/chat/completions"
    assert groq.model == ["llama-3.1-8b-instant"]  # the default...
    groq.check_model("any-other-model")  # ...while any model passes through
    assert ChatG4F(provider=groq).model_name == "llama-3.1-8b-instant"
    ollama = OpenAICompatible.from_catalog("Ollama")  # case-insensitive
    assert not ollama.needs_auth
    assert ollama.api_key_env is None
    with pytest.raises(ConfigurationError, match="serves any model; pass model"):
        ChatG4F(provider=ollama)


def test_from_catalog_takes_overrides() -> None:
    mine = OpenAICompatible.from_catalog("groq", name="my-groq", models=["a", "b"])
    assert (mine.name, mine.model, mine.accepts_any_model) == ("my-groq", ["a", "b"], False)


def test_an_unknown_catalog_name_lists_the_close_ones() -> None:
    with pytest.raises(UnknownProviderError, match=r"no catalog entry named 'grok' \(did you"):
        OpenAICompatible.from_catalog("grok")


@pytest.mark.loopback
def test_the_key_comes_from_the_entrys_own_variable(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica.reset()
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    llm = ChatG4F(provider=OpenAICompatible.from_catalog("groq", url=stand_in(replica)))
    assert llm.invoke("hi").content
    sent = replica.requests[-1]
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"
    assert sent["json"]["model"] == "llama-3.1-8b-instant"
    assert KEY not in repr(llm)


def test_the_key_never_goes_over_plain_http_to_another_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    elsewhere = OpenAICompatible.from_catalog("groq", url="http://192.0.2.7/v1")
    with pytest.raises(ConfigurationError, match=r"will not send the API key from \$GROQ_API_KEY"):
        ChatG4F(provider=elsewhere)


@pytest.mark.loopback
def test_a_keyless_local_entry_gets_no_key(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica.reset()
    monkeypatch.setenv("G4F_API_KEY", KEY)  # for providers that need a key: not this one
    local = OpenAICompatible.from_catalog("ollama", url=stand_in(replica))
    assert ChatG4F(provider=local, model="llama3.2").invoke("hi").content
    assert "authorization" not in replica.requests[-1]["headers"]


@pytest.fixture
def stand_ins(replica: Replica, monkeypatch: pytest.MonkeyPatch) -> Replica:
    """A catalog of four loopback entries: keyed (key set), keyed (no key), keyless, local."""
    replica.reset()
    url = stand_in(replica)
    entries = [
        CatalogEntry("keyed", url, ("KEYED_TEST_KEY",), "model-k", "https://example.test/k"),
        CatalogEntry("unset", url, ("UNSET_TEST_KEY",), "model-u", "https://example.test/u"),
        CatalogEntry("open", url, (), "model-o", "https://example.test/o"),
        CatalogEntry("box", url, (), None, "https://example.test/b", local=True),
    ]
    monkeypatch.setattr(catalog, "CATALOG", {entry.name: entry for entry in entries})
    monkeypatch.setenv("KEYED_TEST_KEY", KEY)
    monkeypatch.delenv("UNSET_TEST_KEY", raising=False)
    return replica


@pytest.mark.loopback
def test_a_catalog_router_takes_entries_with_a_key_set_and_keyless_ones(
    stand_ins: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="langchain_g4f.router"):
        router = ChatG4FRouter(providers="catalog", strategy="priority")
    # "box" serves only what its user loaded, and no model was named: left out, said once
    assert router.provider_names == ["keyed", "open"]
    assert "router leaves out provider box" in caplog.text
    message = router.invoke("hi")
    assert message.response_metadata["provider"] == "keyed"
    assert stand_ins.requests[-1]["json"]["model"] == "model-k"
    assert stand_ins.requests[-1]["headers"]["authorization"] == f"Bearer {KEY}"
    stats = router.stats()
    assert (stats["keyed"]["successes"], stats["open"]["successes"]) == (1, 0)


@pytest.mark.loopback
def test_a_catalog_router_with_a_model_asks_every_entry_for_it(stand_ins: Replica) -> None:
    router = ChatG4FRouter(providers="catalog", model="shared-model", strategy="priority")
    assert router.provider_names == ["keyed", "open", "box"]
    stand_ins.set_fault("openai", "http_503", times=1)  # the first entry fails over
    message = router.invoke("hi")
    assert message.response_metadata["provider"] == "open"
    assert [a["provider"] for a in message.response_metadata["attempts"]] == ["keyed"]
    assert {r["json"]["model"] for r in stand_ins.requests} == {"shared-model"}
    stats = router.stats()
    assert (stats["keyed"]["failures"], stats["open"]["successes"]) == (1, 1)


def test_a_catalog_router_with_no_key_and_no_model_says_what_to_do() -> None:
    # only the local servers are left, and they serve what their user loaded
    with pytest.raises(ConfigurationError, match=r"set the key of one \(\$GROQ_API_KEY, "):
        ChatG4FRouter(providers="catalog")
    assert ChatG4FRouter(providers="catalog", model="llama3.2").provider_names == [
        "ollama",
        "lmstudio",
        "g4f-api",
    ]


def test_an_unknown_providers_string_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'g4f:\\*' or 'catalog', not 'catalogue'"):
        ChatG4FRouter(providers="catalogue")


def test_the_cli_lists_the_catalog_and_which_keys_are_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", KEY)
    assert main(["providers", "--catalog"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(CATALOG)
    assert " set " in rows["groq"]
    assert "$GROQ_API_KEY" in rows["groq"]
    assert "not set" in rows["mistral"]
    assert "none needed" in rows["ollama"]
    assert "http://localhost:11434/v1" in rows["ollama"]
    assert KEY not in out


def test_an_entry_added_by_the_user_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = replace(CATALOG["groq"], name="groq-eu", base_url="https://eu.example.test/v1")
    monkeypatch.setitem(CATALOG, "groq-eu", mine)
    assert OpenAICompatible.from_catalog("groq-eu").url == "https://eu.example.test/v1"
