"""Bad constructor and call arguments: a typed ConfigurationError naming the field."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.rate_limiters import InMemoryRateLimiter
from pydantic import ValidationError

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.errors import ConfigurationError

BAD = [
    ({"timeout": -1}, "timeout"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": "soon"}, "timeout"),
    ({"base_url": "localhost:8080"}, "base_url"),
    ({"base_url": "127.0.0.1:8080/v1"}, "base_url"),
    ({"base_url": "ftp://h/x"}, "base_url"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": -0.5}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_retries": -1}, "max_retries"),
    ({"proxy": "proxy.local:3128"}, "proxy"),
    ({"api_key": 12345}, "api_key"),
    ({"stop": 5}, "stop"),
]


def raised(build: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        build()  # type: ignore[operator]
    error = info.value
    assert isinstance(error, ValueError)
    assert not isinstance(error, ValidationError)
    return error


@pytest.mark.parametrize(("kwargs", "field"), BAD)
def test_chat_model_bad_values(kwargs: dict, field: str) -> None:
    error = raised(lambda: ChatG4F(provider="Lockchat", **kwargs))
    assert field in str(error)
    assert error.provider == "Lockchat"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [b for b in BAD if b[1] in ("timeout", "temperature", "max_tokens", "max_retries", "stop")],
)
def test_router_bad_values(kwargs: dict, field: str) -> None:
    error = raised(lambda: ChatG4FRouter(providers=["Lockchat"], **kwargs))
    assert field in str(error)


def test_pydantic_errors_are_neither_chained_nor_kept_as_context() -> None:
    error = raised(lambda: ChatG4F(provider="Lockchat", temperature="hot"))
    assert error.__cause__ is None
    assert error.__context__ is None


@pytest.mark.parametrize(
    ("typo", "hint"),
    [
        ("temprature", "temperature"),
        ("max_token", "max_tokens"),
        ("base_uri", "base_url"),
        ("timout", "timeout"),
        ("stop_sequence", "stop_sequences"),
    ],
)
def test_misspelled_arguments_are_refused_with_a_hint(typo: str, hint: str) -> None:
    error = raised(lambda: ChatG4F(provider="Lockchat", **{typo: 0.5}))
    assert f"{typo!r} (did you mean {hint!r}?)" in str(error)


def test_unknown_argument_without_a_close_name() -> None:
    error = raised(lambda: ChatG4F(provider="Lockchat", zzzqqq=1))
    assert "'zzzqqq'" in str(error)
    assert "did you mean" not in str(error)


def test_router_misspelled_argument() -> None:
    error = raised(lambda: ChatG4FRouter(providers=["Lockchat"], hedge_afterr=1.0))
    assert "did you mean 'hedge_after'?" in str(error)


class _Handler(BaseCallbackHandler):
    pass


BASE_FIELDS = {
    "callbacks": [_Handler()],
    "tags": ["t"],
    "metadata": {"m": 1},
    "rate_limiter": InMemoryRateLimiter(requests_per_second=100),
    "output_version": "v1",
    "disable_streaming": "tool_calling",
    "cache": False,
    "verbose": False,
    "name": "mine",
}


def test_langchain_base_fields_and_aliases_are_accepted() -> None:
    llm = ChatG4F(provider="Lockchat", model="gpt-4", stop_sequences=["x"], **BASE_FIELDS)
    assert llm.model_name == "gpt-4"
    assert llm.stop == ["x"]
    assert llm.tags == ["t"]
    assert llm.output_version == "v1"
    llm = ChatG4F(provider="Lockchat", model_name="gpt-3.5-turbo", stop=["y"])
    assert llm.model_name == "gpt-3.5-turbo"
    assert llm.stop == ["y"]
    router = ChatG4FRouter(
        providers=["Lockchat"], model="gpt-4", stop_sequences=["x"], **BASE_FIELDS
    )
    assert router.model_name == "gpt-4"
    assert router.stop == ["x"]


def test_valid_urls_are_kept() -> None:
    for url in ("http://localhost:8080", "https://h.example/v1?x=1", "http://[::1]:8080/p"):
        assert ChatG4F(provider="Lockchat", base_url=url).base_url == url
    assert ChatG4F(provider="Lockchat", proxy="socks5h://127.0.0.1:1080").proxy


@pytest.mark.parametrize(
    ("option", "field"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
    ],
)
def test_bad_call_options_fail_before_any_request(option: dict, field: str) -> None:
    # No server at this address: a request would end in a connection error.
    llm = ChatG4F(provider="Lockchat", base_url="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(ConfigurationError, match=field):
        llm.invoke("hi", **option)


@pytest.mark.parametrize("seconds", [float("inf"), 1e12])
@pytest.mark.parametrize(
    ("model", "field"),
    [
        (ChatG4F, "timeout"),
        (ChatG4FRouter, "timeout"),
        (ChatG4FRouter, "hedge_after"),
        (ChatG4FRouter, "stall_after"),
        (ChatG4FRouter, "cooldown"),
    ],
)
def test_waits_longer_than_the_platform_accepts_are_refused_up_front(
    model: type, field: str, seconds: float
) -> None:
    kwargs = {"provider": "Lockchat"} if model is ChatG4F else {"providers": ["Lockchat"]}
    with pytest.raises(ConfigurationError) as raised:
        model(**kwargs, **{field: seconds})
    assert f"{field}: Input should be less than or equal to 9223372036" in str(raised.value)


def test_a_value_that_fits_no_form_of_a_field_is_one_plain_message() -> None:
    with pytest.raises(ConfigurationError) as raised:
        ChatG4FRouter(providers=["Lockchat"], hedge_after=-1)
    assert str(raised.value) == (
        "invalid ChatG4FRouter argument(s): hedge_after: Input should be greater than or equal "
        "to 0 or Input should be 'auto' (got -1)"
    )
    assert "constrained" not in str(raised.value)
    assert "literal[" not in str(raised.value)


def test_an_openai_compatible_url_is_checked_when_it_is_built() -> None:
    from langchain_g4f.providers import OpenAICompatible

    with pytest.raises(ConfigurationError, match="url must be an absolute http"):
        OpenAICompatible("Local", "localhost:11434/v1")
