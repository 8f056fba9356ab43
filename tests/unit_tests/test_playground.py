"""The playground switch: the seed provider names served offline by the replica, or live."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from langchain_g4f import ChatG4F, ChatG4FRouter, playground, providers
from langchain_g4f.errors import ConfigurationError, ProviderConnectionError
from langchain_g4f.testing import Replica, reply_for

pytestmark = pytest.mark.loopback

SEEDS = list(playground.SEEDS)


@pytest.fixture
def restored() -> Iterator[list[playground.Endpoints]]:
    """Endpoints opened by a test, closed after it; then the registry is as it was."""
    before = {name: (providers.get(name), providers.get(name).url) for name in SEEDS}
    opened: list[playground.Endpoints] = []
    yield opened
    for endpoints in opened:
        endpoints.close()
    assert {name: (providers.get(name), providers.get(name).url) for name in SEEDS} == before


def test_offline_by_default_every_seed_answers_from_the_replica(
    restored: list[playground.Endpoints], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(playground.ENV, raising=False)
    endpoints = playground.connect()
    restored.append(endpoints)
    assert endpoints.mode == "offline"
    assert endpoints.replica is not None
    assert str(endpoints) == (
        f"offline: the seed providers are served by the local replica at {endpoints.replica.url}"
    )
    for name in SEEDS:
        assert ChatG4F(provider=name).invoke("Hi").content == reply_for(
            [{"role": "user", "content": "Hi"}]
        )
    assert {r["provider"] for r in endpoints.replica.requests} == {n.lower() for n in SEEDS}
    url = endpoints.replica.url
    endpoints.close()
    assert all(url not in providers.get(name).url for name in SEEDS)


def test_an_openai_compatible_server_answers_under_every_seed_name(
    replica: Replica, restored: list[playground.Endpoints], monkeypatch: pytest.MonkeyPatch
) -> None:
    replica.reset()
    api = replica.base_url("openai") + "/v1"
    monkeypatch.setenv(playground.ENV, api)
    monkeypatch.setenv("G4F_API_KEY", "sk-live")
    restored.append(playground.connect())
    message = ChatG4FRouter(providers=["Mishalsgpt", "Lockchat"], strategy="priority").invoke("Hi")
    assert message.response_metadata["provider"] == "Mishalsgpt"
    assert ChatG4F(provider="Aichat").invoke("Hi").content == reply_for(
        [{"role": "user", "content": "Hi"}]
    )
    sent = [(r["provider"], r["path"], r["json"]["model"]) for r in replica.requests]
    assert sent == [
        ("openai", "/v1/chat/completions", "gpt-3.5-turbo-16k-0613"),  # the seed's own model
        ("openai", "/v1/chat/completions", "gpt-3.5-turbo"),
    ]
    assert all(r["headers"]["Authorization"] == "Bearer sk-live" for r in replica.requests)


def test_one_model_for_every_seed_name(
    replica: Replica, restored: list[playground.Endpoints]
) -> None:
    replica.reset()
    endpoints = playground.connect(replica.base_url("openai") + "/v1", model="llama3.2")
    restored.append(endpoints)
    assert (
        str(endpoints) == f"live: every seed provider is served by {replica.base_url('openai')}/v1"
    )
    ChatG4F(provider="Lockchat").invoke("Hi")
    assert replica.requests[-1]["json"]["model"] == "llama3.2"


def test_a_g4f_provider_answers_under_every_seed_name(
    restored: list[playground.Endpoints], monkeypatch: pytest.MonkeyPatch
) -> None:
    g4f = pytest.importorskip("g4f")
    from tests.unit_tests.test_g4f_package import Echo

    monkeypatch.setattr(g4f.Provider, "Echo", Echo, raising=False)
    endpoints = playground.connect("g4f:Echo")
    restored.append(endpoints)
    assert str(endpoints) == "live: every seed provider is served by g4f's Echo"
    assert ChatG4F(provider="Lockchat").invoke("hi").content == "echo-1 says: hi "


def test_live_keeps_the_providers_own_urls(restored: list[playground.Endpoints]) -> None:
    restored.append(playground.connect("live"))
    assert str(restored[0]) == "live: the seed providers' own endpoints"
    assert providers.get("Lockchat").url.startswith("http://super.lockchat.app")


@pytest.mark.parametrize(
    ("choice", "model", "message"),
    [
        ("localhost:11434", None, "must be 'offline', 'live', an http(s):// URL"),
        ("ftp://bob:hunter2@host/v1", None, "not 'ftp://bob:***@host/v1'"),
        ("offline", "gpt-4", "model= applies to an endpoint URL or a g4f provider"),
        ("g4f:Blackbox", None, "no provider named 'Blackbox'"),
    ],
)
def test_bad_choices_are_configuration_errors(
    restored: list[playground.Endpoints], choice: str, model: str | None, message: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        playground.connect(choice, model=model)
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_the_offline_replica_stops_with_close(restored: list[playground.Endpoints]) -> None:
    endpoints = playground.connect("offline")
    redirected = providers.get("Lockchat").url
    endpoints.close()
    with pytest.raises(ProviderConnectionError):
        ChatG4F(provider="Lockchat", base_url=redirected.rsplit("/v1", 1)[0], max_retries=0).invoke(
            "Hi"
        )


@pytest.mark.parametrize("second", ["offline", "live", "url"])
def test_connecting_again_replaces_the_last_connection(
    replica: Replica, restored: list[playground.Endpoints], second: str
) -> None:
    """A notebook's first cell run twice: the seed names keep answering, nothing nests."""
    first = playground.connect("offline")
    restored.append(first)
    assert first.replica is not None
    old = first.replica.url
    choice = replica.base_url("openai") + "/v1" if second == "url" else second
    again = playground.connect(choice)
    restored.append(again)
    assert first.replica is None  # closed: its replica stopped
    assert all(old not in providers.get(name).url for name in SEEDS)
    if second == "live":
        assert providers.get("Lockchat").url.startswith("http://super.lockchat.app")
        return
    for name in SEEDS:
        assert ChatG4F(provider=name).invoke("Hi").content == reply_for(
            [{"role": "user", "content": "Hi"}]
        )
    if second == "offline":
        assert again.replica is not None
        url = providers.get("Lockchat").url
        assert url.startswith(again.replica.base_url("lockchat"))
        assert "/lockchat/lockchat" not in url


def test_connecting_after_close_serves_the_seed_names(
    restored: list[playground.Endpoints],
) -> None:
    playground.connect("offline").close()
    endpoints = playground.connect("offline")
    restored.append(endpoints)
    assert ChatG4F(provider="Lockchat").invoke("Hi").content.endswith("you said: Hi")
    endpoints.close()
    endpoints.close()  # twice is fine


def test_a_bad_choice_keeps_the_open_connection(restored: list[playground.Endpoints]) -> None:
    endpoints = playground.connect("offline")
    restored.append(endpoints)
    with pytest.raises(ConfigurationError):
        playground.connect("ftp://nowhere")
    assert endpoints.replica is not None
    assert ChatG4F(provider="Lockchat").invoke("Hi").content.endswith("you said: Hi")


def test_a_redirect_inside_another_does_not_nest_paths(replica: Replica) -> None:
    """The demo under LANGCHAIN_G4F_ENDPOINTS=offline: a replica redirect inside another."""
    replica.reset()
    with Replica() as inner:
        outer_url = {name: providers.get(name).url for name in SEEDS}
        with replica.redirect_providers(), inner.redirect_providers():
            for name in SEEDS:
                assert providers.get(name).url.startswith(inner.base_url(name))
                assert ChatG4F(provider=name).invoke("Hi").content.endswith("you said: Hi")
        assert {name: providers.get(name).url for name in SEEDS} == outer_url
