"""Secrets: API keys go only where they belong; secrets in URLs show nowhere."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumpd, dumps
from langchain_core.messages import HumanMessage

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.errors import ConfigurationError, G4FError
from langchain_g4f.providers import OpenAICompatible

KEY = "sk-env-key-0123456789SECRET"
URL_SECRET = "url-secret-0123456789"
PASSWORD = "pw-0123456789SECRET"
SEEDS = ["Mishalsgpt", "Gravityengine", "Lockchat", "Aichat"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "G4F_API_KEY",
        "G4F_MISHALSGPT_API_KEY",
        "G4F_GRAVITYENGINE_API_KEY",
        "G4F_LOCKCHAT_API_KEY",
        "G4F_AICHAT_API_KEY",
        "G4F_SECURE_API_KEY",
        "MY_SECURE_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


def authorization(llm: ChatG4F) -> str | None:
    headers = llm._prepare([HumanMessage("hi")], None, stream=False, kwargs={}).request.headers
    return {k.lower(): v for k, v in headers.items()}.get("authorization")


def secure(**kwargs: Any) -> OpenAICompatible:
    return OpenAICompatible("secure", "https://api.example/v1", models=["m"], **kwargs)


# --- API keys -----------------------------------------------------------------


@pytest.mark.parametrize("name", SEEDS)
def test_the_shared_env_key_never_goes_to_keyless_providers(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("G4F_API_KEY", KEY)
    llm = ChatG4F(provider=name)
    assert authorization(llm) is None
    assert llm.api_key is None


def test_the_shared_env_key_goes_to_providers_that_need_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("G4F_API_KEY", KEY)
    assert authorization(ChatG4F(provider=secure(needs_auth=True))) == f"Bearer {KEY}"


def test_a_key_named_for_the_provider_goes_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G4F_GRAVITYENGINE_API_KEY", KEY)
    assert authorization(ChatG4F(provider="Gravityengine")) == f"Bearer {KEY}"
    assert authorization(ChatG4F(provider="Mishalsgpt")) is None


def test_the_providers_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECURE_KEY", KEY)
    assert authorization(ChatG4F(provider=secure(api_key_env="MY_SECURE_KEY"))) == f"Bearer {KEY}"
    assert authorization(ChatG4F(provider=secure())) is None


def test_a_named_key_wins_over_the_shared_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G4F_API_KEY", "shared")
    monkeypatch.setenv("G4F_SECURE_API_KEY", KEY)
    assert authorization(ChatG4F(provider=secure(needs_auth=True))) == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("variable", "provider"),
    [("G4F_LOCKCHAT_API_KEY", "Lockchat"), ("G4F_API_KEY", None)],
)
def test_no_env_key_over_plain_http(
    variable: str, provider: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, KEY)
    target = provider or OpenAICompatible(
        "plain", "http://api.example/v1", models=["m"], needs_auth=True
    )
    with pytest.raises(ConfigurationError, match=rf"\${variable} over plain http") as info:
        ChatG4F(provider=target)
    assert KEY not in str(info.value)


def test_no_env_key_over_plain_http_through_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G4F_GRAVITYENGINE_API_KEY", KEY)
    with pytest.raises(ConfigurationError, match="plain http"):
        ChatG4F(provider="Gravityengine", base_url="http://mirror.example")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:8080/v1", "http://[::1]:8080"]
)
def test_env_keys_may_go_over_http_to_loopback(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G4F_LOCKCHAT_API_KEY", KEY)
    assert authorization(ChatG4F(provider="Lockchat", base_url=url)) == f"Bearer {KEY}"


def test_a_key_moved_to_plain_http_after_construction_is_refused_before_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("G4F_GRAVITYENGINE_API_KEY", KEY)
    llm = ChatG4F(provider="Gravityengine").model_copy(update={"base_url": "http://mirror.example"})
    with pytest.raises(ConfigurationError, match="plain http"):
        llm.invoke("hi")


def test_an_explicit_key_goes_where_the_user_sends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G4F_API_KEY", "shared")
    assert authorization(ChatG4F(provider="Lockchat", api_key=KEY)) == f"Bearer {KEY}"
    remote = ChatG4F(provider="Mishalsgpt", base_url="http://mirror.example", api_key=KEY)
    assert authorization(remote) == f"Bearer {KEY}"


def test_a_key_and_url_credentials_together_are_refused_before_the_request() -> None:
    # Both would be the Authorization header, and the HTTP clients let the URL's win.
    llm = ChatG4F(provider="Lockchat", base_url=f"http://bob:{PASSWORD}@127.0.0.1:9", api_key=KEY)
    with pytest.raises(ConfigurationError, match="user:password") as info:
        llm.invoke("hi")
    assert_clean(str(info.value))


def test_an_explicit_none_turns_env_keys_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G4F_GRAVITYENGINE_API_KEY", KEY)
    assert authorization(ChatG4F(provider="Gravityengine", api_key=None)) is None


def test_routers_built_from_names_follow_the_same_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("G4F_API_KEY", KEY)
    router = ChatG4FRouter(providers=SEEDS)
    assert all(authorization(entry.chat) is None for entry in router._entries)


# --- secrets in URLs and keys: every channel ---------------------------------------

SECRET_URL = f"http://bob:{PASSWORD}@127.0.0.1:9/lockchat/?auth={URL_SECRET}&lang=en"
SECRETS = (URL_SECRET, PASSWORD, KEY)


def secret_model(**kwargs: Any) -> ChatG4F:
    return ChatG4F(
        provider="Lockchat",
        base_url=SECRET_URL,
        api_key=KEY,
        proxy=f"http://proxyuser:{PASSWORD}@127.0.0.1:3128",
        **kwargs,
    )


def assert_clean(value: Any) -> None:
    text = value if isinstance(value, str) else repr(value)
    for secret in SECRETS:
        assert secret not in text


def test_repr_str_and_dumps_hide_url_secrets() -> None:
    llm = secret_model()
    assert_clean(repr(llm))
    assert_clean(str(llm))
    assert "127.0.0.1:9/lockchat/?auth=***&lang=en" in repr(llm)
    assert_clean(llm.model_dump())
    assert_clean(llm.model_dump_json())
    assert_clean(dumps(llm))
    assert_clean(dumpd(llm))
    # The model keeps the real values for its requests.
    assert llm.base_url == SECRET_URL


def test_traced_params_hide_url_secrets() -> None:
    llm = secret_model(temperature=0.5)
    assert_clean(llm._identifying_params)
    assert (
        llm._identifying_params["base_url"]
        == "http://bob:***@127.0.0.1:9/lockchat/?auth=***&lang=en"
    )
    assert_clean(llm._get_ls_params())
    assert_clean(llm._get_invocation_params(stop=None))
    assert_clean(llm.asdict())


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.seen.append((serialized, kwargs))

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        self.seen.append((response, kwargs))

    def on_llm_error(self, error: BaseException, **kwargs: Any) -> None:
        self.seen.append((repr(error), str(error), kwargs))


@pytest.mark.loopback
@pytest.mark.parametrize("credentials", ["userinfo", "api_key"])
def test_callbacks_see_no_secret_in_a_real_call(replica: Any, credentials: str) -> None:
    replica.reset()
    url = replica.base_url("Lockchat") + f"/?auth={URL_SECRET}"
    options: dict[str, Any] = {"api_key": KEY}
    if credentials == "userinfo":
        url, options = url.replace("://", f"://bob:{PASSWORD}@", 1), {}
    recorder = Recorder()
    llm = ChatG4F(provider="Lockchat", base_url=url, callbacks=[recorder], **options)
    assert llm.invoke("hi").content
    (logged,) = replica.requests
    assert logged["query"] == {"auth": URL_SECRET}  # sent as given...
    if credentials == "api_key":
        assert logged["headers"]["authorization"] == f"Bearer {KEY}"
    (serialized, kwargs), _end = recorder.seen
    assert serialized["type"] == "not_implemented"
    assert "auth=***" in serialized["repr"]
    assert_clean(recorder.seen)  # ...and shown nowhere
    assert "ls_provider" in kwargs["metadata"]
    assert "invocation_params" in kwargs


@pytest.mark.loopback
def test_router_repr_dumps_and_callbacks_hide_url_secrets() -> None:
    recorder = Recorder()
    router = ChatG4FRouter(providers=[secret_model(max_retries=0)], callbacks=[recorder], timeout=1)
    assert_clean(repr(router))
    assert_clean(dumps(router))
    assert_clean(router._identifying_params)
    with pytest.raises(G4FError) as info:  # nothing listens at 127.0.0.1:9
        router.invoke("hi")
    assert_clean(str(info.value))
    assert recorder.seen
    assert_clean(
        [
            (item[0], item[1].get("invocation_params"))
            for item in recorder.seen
            if isinstance(item[1], dict)
        ]
    )


def test_configuration_errors_hide_url_secrets() -> None:
    messages = []
    for kwargs in (
        {"base_url": f"bob:{PASSWORD}@h.example/v1?key={URL_SECRET}"},
        {"base_url": f"ftp://bob:{PASSWORD}@h/?token={URL_SECRET}"},
        {"proxy": f"bob:{PASSWORD}@proxy:3128"},
        {"base_url": f"https://h/?auth={URL_SECRET}", "timeout": "x"},
        {"api_key": ["not", "a", KEY]},
    ):
        with pytest.raises(ConfigurationError) as info:
            ChatG4F(provider="Lockchat", **kwargs)
        messages.append(str(info.value))
    assert_clean(messages)


def test_provider_repr_hides_url_secrets() -> None:
    provider = OpenAICompatible("mine", f"https://h.example/v1?key={URL_SECRET}", models=["m"])
    assert_clean(repr(provider))
    assert_clean(repr(ChatG4F(provider=provider)))


def test_request_repr_hides_keys_and_url_secrets() -> None:
    llm = ChatG4F(
        provider="Lockchat", base_url=SECRET_URL.replace(f"bob:{PASSWORD}@", ""), api_key=KEY
    )
    request = llm._prepare([HumanMessage("hi")], None, stream=True, kwargs={}).request
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert URL_SECRET in request.url
    assert_clean(repr(request))
    assert "Authorization': '***'" in repr(request)
    assert "auth=***" in repr(request)


def test_a_missing_key_names_the_variables_it_is_read_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("GROQ_API_KEY", "G4F_GROQ_API_KEY", "G4F_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    groq = OpenAICompatible(
        "Groq", "https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY", needs_auth=True
    )
    with pytest.raises(ConfigurationError) as raised:
        ChatG4F(provider=groq, model="llama-3.1-8b-instant").invoke("hi")
    assert str(raised.value) == (
        "Groq: needs an API key: set $GROQ_API_KEY or $G4F_GROQ_API_KEY or $G4F_API_KEY, "
        "or pass api_key=..."
    )
