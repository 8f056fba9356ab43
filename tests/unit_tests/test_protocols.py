"""The seed protocols as the original modules had them: Lockchat's URL, Aichat's headers."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, ChatMessage, HumanMessage, SystemMessage

from langchain_g4f import ChatG4F
from langchain_g4f.errors import ConfigurationError
from langchain_g4f.providers import Aichat, Gravityengine, Lockchat, Mishalsgpt
from langchain_g4f.providers.aichat import Aichat as AichatClass
from langchain_g4f.providers.base import join_url
from langchain_g4f.providers.lockchat import Lockchat as LockchatClass

MESSAGES = [{"role": "user", "content": "Hi"}]
SEED_URL = "http://super.lockchat.app/v1/chat/completions?auth=FnMNPlwZEnGFqvEc9470Vw=="


def lockchat_url(**kwargs: object) -> str:
    return Lockchat.build_request("gpt-4", MESSAGES, stream=True, **kwargs).url  # type: ignore[arg-type]


def test_lockchat_sends_the_seed_endpoint_by_default() -> None:
    assert lockchat_url() == SEED_URL
    assert (
        ChatG4F(provider="Lockchat")
        ._prepare([HumanMessage("Hi")], None, stream=True, kwargs={})
        .request.url
        == SEED_URL
    )


def test_lockchat_later_form_has_no_query() -> None:
    assert lockchat_url(base_url="http://supertest.lockchat.app") == (
        "http://supertest.lockchat.app/v1/chat/completions"
    )


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("http://h/?auth=X", "http://h/v1/chat/completions?auth=X"),
        ("http://h?auth=X", "http://h/v1/chat/completions?auth=X"),
        ("http://h/proxy/?auth=X&b=2", "http://h/proxy/v1/chat/completions?auth=X&b=2"),
        ("http://h:8080/p//?a=1", "http://h:8080/p/v1/chat/completions?a=1"),
        ("http://h/p#frag", "http://h/p/v1/chat/completions"),
        ("https://u:p@h/p", "https://u:p@h/p/v1/chat/completions"),
        ("http://h", "http://h/v1/chat/completions"),
    ],
)
def test_a_base_url_query_goes_after_the_path(base_url: str, expected: str) -> None:
    assert lockchat_url(base_url=base_url) == expected


def test_join_url_for_every_provider_path() -> None:
    for provider in (Mishalsgpt, Gravityengine, Aichat):
        url = provider.build_request(
            provider.model[0], MESSAGES, stream=False, base_url="http://h/x/?k=v"
        ).url
        assert url == f"http://h/x{provider.path}?k=v"
    assert join_url("http://h", "/a") == "http://h/a"


def test_the_seed_query_belongs_to_the_seed_url_only() -> None:
    # Another URL on the instance, as a redirect to a replica sets, replaces it.
    moved = LockchatClass("http://127.0.0.1:9/lockchat")
    assert moved.build_request("gpt-4", MESSAGES, stream=True).url == (
        "http://127.0.0.1:9/lockchat/v1/chat/completions"
    )
    redirected = LockchatClass()
    redirected.url = "http://127.0.0.1:9/lockchat"
    assert "auth=" not in redirected.endpoint()


@pytest.mark.parametrize(
    "base_url", ["localhost:8080", "127.0.0.1:8080/v1", "ftp://h/x", "http://", "/v1"]
)
def test_a_base_url_without_scheme_or_host_is_refused_before_any_request(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url"):
        Lockchat.build_request("gpt-4", MESSAGES, stream=True, base_url=base_url)


AICHAT_HEADERS = [
    ("authority", "chat-gpt.org"),
    ("accept", "*/*"),
    ("cache-control", "no-cache"),
    ("content-type", "application/json"),
    ("origin", "https://chat-gpt.org"),
    ("pragma", "no-cache"),
    ("referer", "https://chat-gpt.org/chat"),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", '"macOS"'),
    ("sec-fetch-dest", "empty"),
    ("sec-fetch-mode", "cors"),
    ("sec-fetch-site", "same-origin"),
    (
        "user-agent",
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
            "(KHTML, like Gecko) Chrome/113.0.0.0 Safari/537.36"
        ),
    ),
]


def test_aichat_sends_the_original_headers_in_order() -> None:
    request = Aichat.build_request("gpt-3.5-turbo", MESSAGES, stream=False)
    assert list(request.headers.items()) == AICHAT_HEADERS


def test_aichat_headers_with_a_key_keep_their_order() -> None:
    request = Aichat.build_request("gpt-3.5-turbo", MESSAGES, stream=False, api_key="k")
    assert list(request.headers.items()) == [*AICHAT_HEADERS, ("Authorization", "Bearer k")]


@pytest.mark.loopback
def test_aichat_headers_reach_the_server(replica: object) -> None:
    replica.reset()  # type: ignore[attr-defined]
    llm = ChatG4F(provider="Aichat", base_url=replica.base_url("Aichat"))  # type: ignore[attr-defined]
    llm.invoke("Hi")
    (logged,) = [r for r in replica.requests if r["provider"] == "aichat"]  # type: ignore[attr-defined]
    for name, value in AICHAT_HEADERS:
        assert logged["headers"][name] == value


def test_aichat_flattens_roles_exactly_as_given() -> None:
    llm = ChatG4F(provider="Aichat")
    messages = [
        SystemMessage("Be brief."),
        HumanMessage("Hi"),
        AIMessage("Hello!"),
        ChatMessage(role="Narrator", content="It was late."),
        HumanMessage("Bye"),
    ]
    body = json.loads(llm._prepare(messages, None, stream=False, kwargs={}).request.body)
    assert body == {
        "message": "system: Be brief.\nuser: Hi\nassistant: Hello!\n"
        "Narrator: It was late.\nuser: Bye\nassistant:",
        "temperature": 1,
        "presence_penalty": 0,
        "top_p": 1,
        "frequency_penalty": 0,
    }


def test_aichat_docs_describe_the_roles_as_sent() -> None:
    import pathlib

    import langchain_g4f.providers.aichat as module

    assert "lower case" not in (module.__doc__ or "")
    assert "exactly as given" in (module.__doc__ or "")
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text()
    assert "roles in lower" not in text
    assert AichatClass.headers["user-agent"].endswith("Chrome/113.0.0.0 Safari/537.36")
