"""Every transport failure, sync and async, mapped to its typed error.

The replica (:mod:`langchain_g4f.testing`) runs on 127.0.0.1 and injects each
fault; the transports are driven directly through ``provider.build_request``,
and ``ChatG4F`` on top for retries and secrets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import operator
import socket
import subprocess
import sys
import threading
import time
import traceback
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from langchain_g4f import ChatG4F, ChatG4FRouter, providers
from langchain_g4f import chat_models as chat_models_module
from langchain_g4f import transport as transport_module
from langchain_g4f.errors import (
    AllProvidersFailedError,
    AuthenticationError,
    EmptyResponseError,
    G4FError,
    HTMLResponseError,
    MalformedResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderResponseError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseTooLargeError,
    UnsupportedModelError,
)
from langchain_g4f.providers import OpenAICompatible, Provider
from langchain_g4f.providers.base import (
    AsyncTransportProtocol,
    Delta,
    HTTPRequest,
    ProviderTransport,
    SyncTransportProtocol,
)
from langchain_g4f.testing import Replica, reply_for
from langchain_g4f.transport import AsyncTransport, SyncTransport

pytestmark = pytest.mark.loopback

SEEDS = ["Mishalsgpt", "Gravityengine", "Lockchat", "Aichat"]
MESSAGES = [{"role": "user", "content": "Grüße — how are you?"}]
ANSWER = reply_for(MESSAGES)
TIMEOUT = 0.3
#: Longer than TIMEOUT, short enough that hung handlers are released quickly.
DELAY = 1.0
API_KEY = "sk-replica-SECRET-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean(replica: Replica) -> Iterator[None]:
    replica.reset()
    yield
    replica.reset()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without the backoff sleep: the policy is not under test here."""
    monkeypatch.setattr(chat_models_module, "backoff_delay", lambda attempt, error: 0.0)


# --------------------------------------------------------------------------- helpers


@dataclass
class Outcome:
    deltas: list[Delta] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)


def request_for(replica: Replica, provider: Provider, *, stream: bool, model: str | None = None):
    return provider.build_request(
        model or provider.model[0],
        MESSAGES,
        stream=stream,
        base_url=replica.base_url(provider.name),
    )


def run_sync(replica: Replica, name: str, *, stream: bool, **transport_options: Any) -> Outcome:
    provider = providers.get(name)
    request = request_for(replica, provider, stream=stream)
    transport = SyncTransport(**{"timeout": TIMEOUT, **transport_options})
    outcome = Outcome()
    try:
        for delta in transport.deltas(provider, request):
            outcome.deltas.append(delta)
    except Exception as exc:  # the outcome is inspected by the test
        outcome.error = exc
    finally:
        transport.close()
    return outcome


async def run_async(
    replica: Replica, name: str, *, stream: bool, **transport_options: Any
) -> Outcome:
    provider = providers.get(name)
    request = request_for(replica, provider, stream=stream)
    transport = AsyncTransport(**{"timeout": TIMEOUT, **transport_options})
    outcome = Outcome()
    try:
        async for delta in transport.adeltas(provider, request):
            outcome.deltas.append(delta)
    except Exception as exc:
        outcome.error = exc
    finally:
        await transport.aclose()
    return outcome


def expect(outcome: Outcome, cls: type[G4FError], provider: str) -> Any:
    """The outcome failed with exactly ``cls``, naming ``provider``; returns the error."""
    error = outcome.error
    assert error is not None, f"expected {cls.__name__}, got the answer {outcome.text!r}"
    assert type(error) is cls, f"expected {cls.__name__}, got {error!r}"
    assert error.provider == provider
    assert str(error).startswith(f"{provider}: ")
    return error


# --------------------------------------------------------------------------- the fault matrix


@dataclass(frozen=True)
class Case:
    fault: str
    provider: str
    stream: bool
    error: type[G4FError]
    options: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.fault}-{self.provider}-{'stream' if self.stream else 'body'}"

    @property
    def mid_stream(self) -> bool:
        """Whether the replica sends two text pieces before failing."""
        wire_stream = providers.get(self.provider).wire_stream(stream=self.stream)
        return wire_stream and self.fault in ("stall", "reset", "truncated_json", "error_event")


def _cases() -> list[Case]:
    cases = [
        # Timeouts cost TIMEOUT each: a few representative providers only.
        Case("hang", "Lockchat", True, ProviderTimeoutError, {"delay": DELAY}),
        Case("hang", "Aichat", False, ProviderTimeoutError, {"delay": DELAY}),
        Case("stall", "Lockchat", True, ProviderTimeoutError, {"delay": DELAY}),
        Case("stall", "Mishalsgpt", False, ProviderTimeoutError, {"delay": DELAY}),
        Case("reset", "Gravityengine", True, ProviderConnectionError),
    ]
    for name in SEEDS:
        cases += [
            Case("refuse", name, True, ProviderConnectionError),
            Case("reset", name, False, ProviderConnectionError),
            Case("rate_limit", name, True, RateLimitError, {"retry_after": 2}),
            Case("http_500", name, False, ProviderHTTPError),
            Case("http_502", name, True, ProviderHTTPError),
            Case("http_503", name, False, ProviderHTTPError),
            Case("http_401", name, False, AuthenticationError),
            Case("html", name, False, HTMLResponseError),
            Case("html", name, True, HTMLResponseError),
            Case("truncated_json", name, False, MalformedResponseError),
            Case("truncated_json", name, True, MalformedResponseError),
            Case("error_event", name, False, ProviderResponseError),
            Case("error_event", name, True, ProviderResponseError),
            Case("empty", name, False, EmptyResponseError),
            Case("empty", name, True, EmptyResponseError),
        ]
    return cases


CASES = _cases()


def check_case(case: Case, outcome: Outcome) -> None:
    error = expect(outcome, case.error, case.provider)
    if case.mid_stream:
        # The failure came mid-stream, after the replica's first two pieces.
        assert outcome.text == "Hello from "
    else:
        assert outcome.text == ""
    if case.fault == "rate_limit":
        assert error.status == 429
        assert error.retry_after == 2
        assert error.retryable
        assert "Rate limit reached" in str(error)
    elif case.fault.startswith("http_"):
        status = int(case.fault[5:])
        assert error.status == status
        assert error.retryable is (status >= 500)
        assert str(status) in str(error)
        if status == 401:
            assert "Incorrect API key provided." in error.body
    elif case.fault == "error_event":
        assert "upstream overloaded" in str(error)
    assert isinstance(error, ProviderError)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_sync_fault(replica: Replica, case: Case) -> None:
    replica.set_fault(case.provider, case.fault, **case.options)
    check_case(case, run_sync(replica, case.provider, stream=case.stream))


@pytest.mark.parametrize("case", CASES, ids=str)
async def test_async_fault(replica: Replica, case: Case) -> None:
    replica.set_fault(case.provider, case.fault, **case.options)
    check_case(case, await run_async(replica, case.provider, stream=case.stream))


@pytest.mark.parametrize(
    ("fault", "cls"),
    [
        ("refuse", ProviderConnectionError),
        ("reset", ProviderConnectionError),
        ("truncated_json", MalformedResponseError),
        ("error_event", ProviderResponseError),
        ("empty", EmptyResponseError),
        ("http_503", ProviderHTTPError),
    ],
)
def test_retryable_errors(replica: Replica, fault: str, cls: type[G4FError]) -> None:
    replica.set_fault("Mishalsgpt", fault)
    error = expect(run_sync(replica, "Mishalsgpt", stream=False), cls, "Mishalsgpt")
    assert error.retryable is True


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", SEEDS)
def test_sync_normal_answer(replica: Replica, name: str, stream: bool) -> None:
    """The baseline the faults are measured against."""
    outcome = run_sync(replica, name, stream=stream)
    assert outcome.error is None
    assert outcome.text == ANSWER


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", SEEDS)
async def test_async_normal_answer(replica: Replica, name: str, stream: bool) -> None:
    outcome = await run_async(replica, name, stream=stream)
    assert outcome.error is None
    assert outcome.text == ANSWER


# --------------------------------------------------------------------------- size limit


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", ["Mishalsgpt", "Lockchat", "Aichat"])
def test_sync_response_too_large(replica: Replica, name: str, stream: bool) -> None:
    outcome = run_sync(replica, name, stream=stream, max_response_bytes=64)
    error = expect(outcome, ResponseTooLargeError, name)
    assert "64" in str(error)
    assert not error.retryable


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", ["Mishalsgpt", "Lockchat", "Aichat"])
async def test_async_response_too_large(replica: Replica, name: str, stream: bool) -> None:
    outcome = await run_async(replica, name, stream=stream, max_response_bytes=64)
    error = expect(outcome, ResponseTooLargeError, name)
    assert "64" in str(error)


def test_response_at_the_limit_is_fine(replica: Replica) -> None:
    size = len(f'{{"response": true, "message": "{ANSWER}"}}'.encode())
    assert run_sync(replica, "Aichat", stream=False, max_response_bytes=size).text == ANSWER
    outcome = run_sync(replica, "Aichat", stream=False, max_response_bytes=size - 1)
    expect(outcome, ResponseTooLargeError, "Aichat")


# --------------------------------------------------------------------------- unknown model


def openai_on_a_model_checking_route(replica: Replica) -> OpenAICompatible:
    """An OpenAI-compatible client of any model, against a route that checks models.

    The replica's ``openai`` route accepts any model; its Lockchat route (the same
    ``/v1/chat/completions`` path) answers 404 ``model_not_found``.
    """
    return OpenAICompatible("OpenAI", replica.base_url("Lockchat") + "/v1")


def check_model_not_found(replica: Replica, error: Any) -> None:
    assert type(error) is ProviderHTTPError
    assert error.provider == "OpenAI"
    assert error.status == 404
    assert not error.retryable
    assert "does not exist" in str(error)
    assert "model_not_found" in error.body
    assert [r["path"] for r in replica.requests] == ["/v1/chat/completions"]


@pytest.mark.parametrize("stream", [False, True])
def test_sync_unknown_model_404(replica: Replica, stream: bool) -> None:
    provider = openai_on_a_model_checking_route(replica)
    request = provider.build_request("no-such-model", MESSAGES, stream=stream)
    with pytest.raises(ProviderHTTPError) as info:
        list(SyncTransport(timeout=TIMEOUT).deltas(provider, request))
    check_model_not_found(replica, info.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_async_unknown_model_404(replica: Replica, stream: bool) -> None:
    provider = openai_on_a_model_checking_route(replica)
    request = provider.build_request("no-such-model", MESSAGES, stream=stream)
    transport = AsyncTransport(timeout=TIMEOUT)
    try:
        with pytest.raises(ProviderHTTPError) as info:
            async for _ in transport.adeltas(provider, request):
                pass
    finally:
        await transport.aclose()
    check_model_not_found(replica, info.value)


async def test_chat_model_unknown_model_404_is_not_retried(
    replica: Replica, no_backoff: None
) -> None:
    provider = openai_on_a_model_checking_route(replica)
    model = ChatG4F(provider=provider, model="no-such-model", timeout=TIMEOUT, max_retries=2)
    with pytest.raises(ProviderHTTPError) as info:
        await call(model, "invoke")
    check_model_not_found(replica, info.value)


def test_seed_provider_refuses_unknown_model_without_a_request(replica: Replica) -> None:
    with pytest.raises(UnsupportedModelError):
        ChatG4F(provider="Lockchat", model="no-such-model", base_url=replica.base_url("Lockchat"))
    model = ChatG4F(provider="Lockchat", base_url=replica.base_url("Lockchat"))
    with pytest.raises(UnsupportedModelError):
        model.invoke("hi", model="no-such-model")
    assert replica.requests == []


# --------------------------------------------------------------------------- ChatG4F


def chat(replica: Replica, name: str, **kwargs: Any) -> ChatG4F:
    options = {"timeout": TIMEOUT, "max_retries": 0, **kwargs}
    return ChatG4F(provider=name, base_url=replica.base_url(name), **options)


async def call(model: ChatG4F, how: str) -> str:
    """Run ``model`` one of four ways; the answer's text. Closes its transport."""
    prompt = MESSAGES[0]["content"]
    try:
        if how == "invoke":
            return model.invoke(prompt).content  # type: ignore[return-value]
        if how == "ainvoke":
            return (await model.ainvoke(prompt)).content  # type: ignore[return-value]
        if how == "stream":
            return "".join(c.content for c in model.stream(prompt))  # type: ignore[misc]
        return "".join([c.content async for c in model.astream(prompt)])  # type: ignore[misc]
    finally:
        if how.startswith("a"):
            await model.async_transport.aclose()
        else:
            model.sync_transport.close()


HOWS = ["invoke", "ainvoke", "stream", "astream"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    ("name", "fault", "cls"),
    [
        ("Gravityengine", "http_503", ProviderHTTPError),
        ("Lockchat", "error_event", ProviderResponseError),
        ("Aichat", "html", HTMLResponseError),
        ("Mishalsgpt", "refuse", ProviderConnectionError),
    ],
)
async def test_chat_model_raises_the_transport_error(
    replica: Replica, how: str, name: str, fault: str, cls: type[G4FError]
) -> None:
    replica.set_fault(name, fault)
    model = chat(replica, name)
    with pytest.raises(cls) as info:
        await call(model, how)
    assert type(info.value) is cls
    assert info.value.provider == name


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
async def test_chat_model_timeout(replica: Replica, how: str) -> None:
    replica.set_fault("Lockchat", "stall", delay=DELAY)
    with pytest.raises(ProviderTimeoutError) as info:
        await call(chat(replica, "Lockchat"), how)
    assert info.value.provider == "Lockchat"


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    ("name", "fault", "options"),
    [
        ("Mishalsgpt", "http_503", {}),
        ("Gravityengine", "rate_limit", {"retry_after": 2}),
        ("Lockchat", "html", {}),
        ("Aichat", "reset", {}),
        ("Aichat", "truncated_json", {}),
        ("Aichat", "empty", {}),
    ],
)
async def test_chat_model_recovers_from_a_passing_fault(
    replica: Replica,
    no_backoff: None,
    how: str,
    name: str,
    fault: str,
    options: dict[str, Any],
) -> None:
    replica.set_fault(name, fault, times=1, **options)
    assert await call(chat(replica, name, max_retries=2), how) == ANSWER
    assert len(replica.requests) == 2


@pytest.mark.parametrize("how", HOWS)
async def test_chat_model_retries_an_empty_event_stream(
    replica: Replica, no_backoff: None, how: str
) -> None:
    replica.set_fault("Lockchat", "empty", times=1)
    assert await call(chat(replica, "Lockchat", max_retries=2), how) == ANSWER
    assert len(replica.requests) == 2


async def test_chat_model_gives_up_after_max_retries(replica: Replica, no_backoff: None) -> None:
    replica.set_fault("Mishalsgpt", "http_503")
    with pytest.raises(ProviderHTTPError) as info:
        await call(chat(replica, "Mishalsgpt", max_retries=2), "invoke")
    assert info.value.status == 503
    assert len(replica.requests) == 3


async def test_chat_model_without_retries_sends_once(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "http_503", times=1)
    with pytest.raises(ProviderHTTPError):
        await call(chat(replica, "Mishalsgpt", max_retries=0), "invoke")
    assert len(replica.requests) == 1


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", ["Gravityengine", "Aichat"])
async def test_chat_model_does_not_retry_401(
    replica: Replica, no_backoff: None, how: str, name: str
) -> None:
    replica.set_fault(name, "http_401")
    with pytest.raises(AuthenticationError) as info:
        await call(chat(replica, name, max_retries=2), how)
    assert info.value.status == 401
    assert not info.value.retryable
    assert len(replica.requests) == 1


@pytest.mark.parametrize("how", HOWS)
async def test_chat_model_does_not_retry_after_text(
    replica: Replica, no_backoff: None, how: str
) -> None:
    """Once pieces have arrived a retry would repeat them: the error goes up."""
    replica.set_fault("Lockchat", "reset", times=1)
    with pytest.raises(ProviderConnectionError):
        await call(chat(replica, "Lockchat", max_retries=2), how)
    assert len(replica.requests) == 1


# --------------------------------------------------------------------------- the api key


def leak_free(text: str) -> None:
    assert API_KEY not in text
    assert API_KEY[-12:] not in text


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    "fault", ["http_401", "http_500", "rate_limit", "error_event", "html", "truncated_json"]
)
async def test_api_key_is_sent_but_never_shown(replica: Replica, how: str, fault: str) -> None:
    replica.set_fault("Gravityengine", fault)
    model = chat(replica, "Gravityengine", api_key=API_KEY)
    leak_free(repr(model))
    leak_free(str(model))
    with pytest.raises(ProviderError) as info:
        await call(model, how)
    error = info.value
    leak_free(str(error))
    leak_free(repr(error))
    leak_free("".join(traceback.format_exception(error)))
    leak_free(repr(vars(error)))
    leak_free(repr(model))
    [logged] = replica.requests
    assert logged["headers"]["Authorization"] == f"Bearer {API_KEY}"


@pytest.mark.parametrize("how", HOWS)
async def test_api_key_not_in_connection_errors(replica: Replica, how: str) -> None:
    replica.set_fault("Lockchat", "refuse")
    model = chat(replica, "Lockchat", api_key=API_KEY)
    with pytest.raises(ProviderConnectionError) as info:
        await call(model, how)
    leak_free(str(info.value))
    leak_free("".join(traceback.format_exception(info.value)))
    leak_free(repr(model))


@pytest.mark.parametrize("how", HOWS)
async def test_api_key_on_success(replica: Replica, how: str) -> None:
    model = chat(replica, "Mishalsgpt", api_key=API_KEY)
    assert await call(model, how) == ANSWER
    leak_free(repr(model))
    leak_free(repr(model.model_dump()))
    [logged] = replica.requests
    assert logged["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in repr(logged["json"])


# --------------------------------------------------------------------------- regressions


async def test_async_reset_message_says_what_happened(replica: Replica) -> None:
    replica.set_fault("Lockchat", "reset")
    error = expect(
        await run_async(replica, "Lockchat", stream=True), ProviderConnectionError, "Lockchat"
    )
    assert not str(error).rstrip().endswith(":")


# --------------------------------------------------------------------------- secrets in URLs

URL_SECRET = "hunter2-URL-SECRET-42"
PASSWORD = "pa55-URL-PASSWORD-77"


def with_url_secrets(request: HTTPRequest) -> HTTPRequest:
    """``request`` sent with a password in its authority and a token in its query."""
    parts = urlsplit(request.url)
    netloc = f"bob:{PASSWORD}@{parts.netloc}"
    url = urlunsplit(parts._replace(netloc=netloc, query=f"auth={URL_SECRET}&lang=en"))
    return dataclasses.replace(request, url=url)


def chain(error: BaseException) -> list[BaseException]:
    """``error`` and everything reachable through ``__cause__`` / ``__context__``."""
    seen: list[BaseException] = []
    todo = [error]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [current.__cause__, current.__context__]
        todo += [a for a in current.args if isinstance(a, BaseException)]
    return seen


def assert_no_url_secret(text: str) -> None:
    assert URL_SECRET not in text
    assert PASSWORD not in text


def check_error_chain(error: BaseException) -> None:
    for link in chain(error):
        assert_no_url_secret(str(link))
        assert_no_url_secret(repr(link))
        assert_no_url_secret(repr(vars(link)) if hasattr(link, "__dict__") else "")
    assert_no_url_secret("".join(traceback.format_exception(error)))


def check_log_records(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "the HTTP libraries logged nothing: the check would be empty"
    for record in caplog.records:
        assert_no_url_secret(record.getMessage())
        if record.exc_info:
            assert_no_url_secret("".join(traceback.format_exception(*record.exc_info)))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SECRET_CASES = [
    ("refuse", ProviderConnectionError, {}),
    ("closed_port", ProviderConnectionError, {}),
    ("hang", ProviderTimeoutError, {"delay": DELAY}),
    ("stall", ProviderTimeoutError, {"delay": DELAY}),
    ("reset", ProviderConnectionError, {}),
    ("http_500", ProviderHTTPError, {}),
    ("http_401", AuthenticationError, {}),
    ("rate_limit", RateLimitError, {}),
]


def secret_request(replica: Replica, fault: str, options: dict[str, Any]) -> HTTPRequest:
    provider = providers.get("Lockchat")
    request = with_url_secrets(request_for(replica, provider, stream=True))
    if fault == "closed_port":
        parts = urlsplit(request.url)
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{closed_port()}"
        return dataclasses.replace(request, url=urlunsplit(parts._replace(netloc=netloc)))
    replica.set_fault("Lockchat", fault, **options)
    return request


@pytest.mark.parametrize(
    ("fault", "cls", "options"), SECRET_CASES, ids=[c[0] for c in SECRET_CASES]
)
def test_sync_url_secrets_stay_out_of_errors_and_logs(
    replica: Replica, caplog: pytest.LogCaptureFixture, fault: str, cls: type, options: dict
) -> None:
    request = secret_request(replica, fault, options)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(cls) as info:
        list(SyncTransport(timeout=TIMEOUT).deltas(providers.get("Lockchat"), request))
    check_error_chain(info.value)
    check_log_records(caplog)
    assert "lang=en" in str(info.value)
    assert "auth=***" in str(info.value)


@pytest.mark.parametrize(
    ("fault", "cls", "options"), SECRET_CASES, ids=[c[0] for c in SECRET_CASES]
)
async def test_async_url_secrets_stay_out_of_errors_and_logs(
    replica: Replica, caplog: pytest.LogCaptureFixture, fault: str, cls: type, options: dict
) -> None:
    request = secret_request(replica, fault, options)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(cls) as info:
        async for _ in AsyncTransport(timeout=TIMEOUT).adeltas(providers.get("Lockchat"), request):
            pass
    check_error_chain(info.value)
    check_log_records(caplog)
    assert "lang=en" in str(info.value)
    assert "auth=***" in str(info.value)


@pytest.mark.parametrize("how", ["sync", "async"])
async def test_url_secrets_stay_out_of_logs_on_success(
    replica: Replica, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    provider = providers.get("Mishalsgpt")
    request = with_url_secrets(request_for(replica, provider, stream=True))
    caplog.set_level(logging.DEBUG)
    if how == "sync":
        deltas = list(SyncTransport(timeout=TIMEOUT).deltas(provider, request))
    else:
        deltas = [d async for d in AsyncTransport(timeout=TIMEOUT).adeltas(provider, request)]
    assert "".join(d.text for d in deltas) == ANSWER
    check_log_records(caplog)
    # The records are redacted, not dropped.
    assert any("auth=***" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("how", ["sync", "async"])
async def test_http_error_names_the_url_it_tried(replica: Replica, how: str) -> None:
    provider = openai_on_a_model_checking_route(replica)
    request = with_url_secrets(request_for(replica, provider, stream=False, model="no-such-model"))
    outcome = Outcome()
    try:
        if how == "sync":
            outcome.deltas = list(SyncTransport(timeout=TIMEOUT).deltas(provider, request))
        else:
            transport = AsyncTransport(timeout=TIMEOUT)
            outcome.deltas = [d async for d in transport.adeltas(provider, request)]
    except ProviderHTTPError as exc:
        outcome.error = exc
    error = expect(outcome, ProviderHTTPError, provider.name)
    assert error.status == 404
    parts = urlsplit(request.url)
    assert f"{parts.hostname}:{parts.port}{parts.path}?auth=***&lang=en" in str(error)
    check_error_chain(error)


# ------------------------------------------------------------------- bodies as servers send them


SIDES = ["sync", "async"]


async def answer(model: Any, how: str) -> str:
    """Run a chat model or a router one of four ways; the answer's text."""
    prompt = MESSAGES[0]["content"]
    if how == "invoke":
        return model.invoke(prompt).content
    if how == "ainvoke":
        return (await model.ainvoke(prompt)).content
    if how == "stream":
        return "".join(c.content for c in model.stream(prompt))
    return "".join([c.content async for c in model.astream(prompt)])


class RawServer(ThreadingHTTPServer):
    """Answers every POST with ``reply``: (status, headers, body pieces).

    With ``hold`` seconds, the body has no length and the connection stays
    open that long after the last piece.
    """

    daemon_threads = True
    reply: tuple[int, dict[str, str], list[bytes]] = (200, {}, [b""])
    hold = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _RawHandler(BaseHTTPRequestHandler):
    server: RawServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers, pieces = self.server.reply
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if not self.server.hold:
            self.send_header("Content-Length", str(sum(map(len, pieces))))
        self.end_headers()
        try:
            for piece in pieces:
                self.wfile.write(piece)
                self.wfile.flush()
        except OSError:
            pass  # the client stopped reading, as it should at its size limit
        time.sleep(self.server.hold)


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer(("127.0.0.1", 0), _RawHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def raw_provider(server: RawServer) -> OpenAICompatible:
    return OpenAICompatible("Raw", server.url)


async def fetch(server: RawServer, how: str, *, stream: bool = True, **options: Any) -> Outcome:
    provider = raw_provider(server)
    request = provider.build_request("m", MESSAGES, stream=stream)
    outcome = Outcome()
    try:
        if how == "sync":
            outcome.deltas = list(
                SyncTransport(**{"timeout": 5, **options}).deltas(provider, request)
            )
        else:
            transport = AsyncTransport(**{"timeout": 5, **options})
            outcome.deltas = [d async for d in transport.adeltas(provider, request)]
    except Exception as exc:  # the outcome is inspected by the test
        outcome.error = exc
    return outcome


@functools.cache
def gzip_of_zeros(size: int) -> list[bytes]:
    """``size`` zero bytes, gzip-compressed, in 64 KiB pieces."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    data = b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()
    return [data[i : i + 65536] for i in range(0, len(data), 65536)]


@pytest.mark.parametrize("how", SIDES)
async def test_gzip_bomb_stops_at_the_limit_before_decompressing_it(
    raw_server: RawServer, how: str
) -> None:
    raw_server.reply = (
        200,
        {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
        gzip_of_zeros(256 << 20),
    )
    tracemalloc.start()
    try:
        outcome = await fetch(raw_server, how, max_response_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    expect(outcome, ResponseTooLargeError, "Raw")
    # 256 MiB once decompressed; reading stops after 1 MiB, holding a few reads at most.
    assert peak < 16 << 20, f"peak {peak >> 20} MiB"


@pytest.mark.parametrize("how", SIDES)
@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_are_decoded(raw_server: RawServer, how: str, coding: str) -> None:
    body = FULL_SSE * 1
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "raw-deflate": -zlib.MAX_WBITS}
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits[coding])
    data = compressor.compress(body) + compressor.flush()
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    raw_server.reply = (
        200,
        {"Content-Type": "text/event-stream", "Content-Encoding": coding.removeprefix("raw-")},
        pieces,
    )
    outcome = await fetch(raw_server, how)
    assert outcome.error is None
    assert outcome.text == "Hello wörld"


@pytest.mark.parametrize("how", SIDES)
async def test_corrupt_gzip_is_a_typed_error(raw_server: RawServer, how: str) -> None:
    raw_server.reply = (
        200,
        {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"},
        [b"\x1f\x8b\x08\x00 certainly not gzip"],
    )
    outcome = await fetch(raw_server, how)
    assert isinstance(outcome.error, ProviderError)
    assert outcome.error.provider == "Raw"


FULL_SSE = (
    b'data: {"choices": [{"delta": {"content": "Hello"}, "finish_reason": null}]}\n\n'
    b'data: {"choices": [{"delta": {"content": " w\xc3\xb6rld"}, "finish_reason": null}]}\n\n'
    b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
COMPLETION = (
    b'{"choices": [{"message": {"content": "Hello w\xc3\xb6rld"}, "finish_reason": "stop"}]}'
)


@pytest.mark.parametrize("how", SIDES)
@pytest.mark.parametrize(
    ("label", "body", "stream"),
    [
        ("application/json", FULL_SSE, True),
        ("text/html; charset=utf-8", FULL_SSE, True),
        ("application/json", b"\xef\xbb\xbf\n" + FULL_SSE, True),
        ("text/html", COMPLETION, True),
        ("text/html", COMPLETION, False),
        ("text/plain", b"  " + COMPLETION, False),
        ("text/event-stream", b"\xef\xbb\xbf" + FULL_SSE, True),
        ("text/event-stream", FULL_SSE.replace(b"\n", b"\r") + b"data: more\r", True),
    ],
    ids=[
        "sse-as-json",
        "sse-as-html",
        "bom-sse-as-json",
        "json-as-html-stream",
        "json-as-html",
        "json-as-text",
        "bom-sse",
        "cr-sse-then-junk",
    ],
)
async def test_answers_are_read_by_what_they_are(
    raw_server: RawServer, how: str, label: str, body: bytes, stream: bool
) -> None:
    pieces = [body[i : i + 5] for i in range(0, len(body), 5)]
    raw_server.reply = (200, {"Content-Type": label}, pieces)
    outcome = await fetch(raw_server, how, stream=stream)
    assert outcome.error is None, outcome.error
    assert outcome.text == "Hello wörld"


@pytest.mark.parametrize("how", SIDES)
async def test_an_html_page_is_still_an_html_error(raw_server: RawServer, how: str) -> None:
    raw_server.reply = (
        200,
        {"Content-Type": "application/json"},
        [b"\n<!DOCTYPE html><html><body>Just a moment</body></html>"],
    )
    expect(await fetch(raw_server, how), HTMLResponseError, "Raw")


BAD_BODIES = [
    ("application/json", b"[" * 100_000, False),
    ("text/event-stream", b"data: " + b"[" * 100_000 + b"\n\n", True),
    (
        "text/event-stream",
        b'data: {"choices": [{"delta": {"tool_calls": true}, "finish_reason": null}]}\n\n',
        True,
    ),
    (
        "text/event-stream",
        b'data: {"choices": [{"delta": {"tool_calls": [{"index": [], "function": null}]}}]}\n\n',
        True,
    ),
    (
        "application/json",
        b'{"choices": [{"message": {"content": "x"}, "finish_reason": []}]}',
        False,
    ),
    (
        "application/json",
        b'{"choices": [{"message": {"tool_calls": [null]}, "finish_reason": "stop"}]}',
        False,
    ),
]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize(
    ("label", "body", "stream"),
    BAD_BODIES,
    ids=[
        "deep-body",
        "deep-event",
        "tool-calls-true",
        "index-list",
        "finish-list",
        "tool-call-null",
    ],
)
async def test_bad_bytes_are_malformed_through_chat_model_and_router(
    raw_server: RawServer, how: str, label: str, body: bytes, stream: bool
) -> None:
    raw_server.reply = (200, {"Content-Type": label}, [body])
    llm = ChatG4F(provider=raw_provider(raw_server), model="m", max_retries=0, streaming=stream)
    with pytest.raises(MalformedResponseError) as info:
        await answer(llm, how)
    assert info.value.provider == "Raw"
    router = ChatG4FRouter(providers=[llm], max_retries=0)
    with pytest.raises(AllProvidersFailedError) as failed:
        await answer(router, how)
    [attempt] = failed.value.attempts
    assert attempt["provider"] == "Raw"
    assert attempt["error"] == "MalformedResponseError"
    assert isinstance(failed.value.__cause__, MalformedResponseError)


@pytest.mark.parametrize("how", SIDES)
async def test_deeply_nested_error_body_is_an_http_error(raw_server: RawServer, how: str) -> None:
    raw_server.reply = (500, {"Content-Type": "application/json"}, [b'{"error": ' + b"[" * 100_000])
    error = expect(await fetch(raw_server, how), ProviderHTTPError, "Raw")
    assert error.status == 500


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS])
def test_deflate_either_way_in_one_byte_reads(wbits: int) -> None:
    from langchain_g4f.transport import _Decoder

    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    data = compressor.compress(FULL_SSE) + compressor.flush()
    decoder = _Decoder("Raw", "deflate")
    out = b"".join(b"".join(decoder.decode(data[i : i + 1])) for i in range(len(data)))
    assert out + decoder.flush() == FULL_SSE


# --------------------------------------------------------------------------- shared pools


def count_new_pools(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the sessions and clients the transports build from now on."""
    counts = {"session": 0, "client": 0}
    for kind, name in (("session", "_new_session"), ("client", "_new_client")):
        original = getattr(transport_module, name)

        def counting(*args: Any, _kind: str = kind, _original: Any = original) -> Any:
            counts[_kind] += 1
            return _original(*args)

        monkeypatch.setattr(transport_module, name, counting)
    return counts


def test_fresh_models_share_the_session_of_their_settings(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = chat(replica, "Mishalsgpt", timeout=7.5)
    assert first.invoke("hi").content
    counts = count_new_pools(monkeypatch)
    for _ in range(3):
        fresh = chat(replica, "Mishalsgpt", timeout=7.5)
        assert fresh.invoke("hi").content
        assert fresh.sync_transport.session is first.sync_transport.session
    assert counts["session"] == 0
    other = chat(replica, "Mishalsgpt", timeout=8.5)
    assert other.invoke("hi").content
    assert other.sync_transport.session is not first.sync_transport.session
    assert counts["session"] == 1


async def test_fresh_models_share_the_client_of_their_settings_and_loop(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = chat(replica, "Mishalsgpt", timeout=7.5)
    assert (await first.ainvoke("hi")).content
    counts = count_new_pools(monkeypatch)
    for _ in range(3):
        fresh = chat(replica, "Mishalsgpt", timeout=7.5)
        assert (await fresh.ainvoke("hi")).content
        assert fresh.async_transport.client() is first.async_transport.client()
    assert counts["client"] == 0
    other = chat(replica, "Mishalsgpt", timeout=8.5, verify=False)
    assert (await other.ainvoke("hi")).content
    assert other.async_transport.client() is not first.async_transport.client()
    assert counts["client"] == 1


async def test_tls_contexts_are_built_once(replica: Replica) -> None:
    clients = [AsyncTransport(timeout=t).client() for t in (1.5, 2.5, 3.5)]
    contexts = {id(c._transport._pool._ssl_context) for c in clients}  # type: ignore[attr-defined]
    assert len(contexts) == 1


@pytest.mark.parametrize("how", HOWS)
async def test_closing_one_model_leaves_the_other_working(replica: Replica, how: str) -> None:
    one, two = chat(replica, "Lockchat"), chat(replica, "Lockchat")
    assert await call(one, how) == ANSWER  # call() closes one's transport afterwards
    assert await call(two, how) == ANSWER
    assert await call(one, how) == ANSWER


def test_each_event_loop_gets_its_client_and_closed_loops_are_dropped(replica: Replica) -> None:
    model = chat(replica, "Lockchat", timeout=9.25)

    async def client_and_answer() -> tuple[Any, str]:
        return model.async_transport.client(), (await model.ainvoke("hi")).content

    seen = []
    for _ in range(4):
        loop = asyncio.new_event_loop()
        try:
            seen.append(loop.run_until_complete(client_and_answer()))
        finally:
            loop.close()
    assert len({id(client) for client, _ in seen}) == 4
    assert all(text for _, text in seen)
    held = [k for k in transport_module._POOLS._clients if k[0] == 9.25]
    assert len(held) <= 1  # only the last loop's, until the next lookup drops it


def test_close_shared_pools_closes_clients_of_idle_loops(replica: Replica) -> None:
    loop = asyncio.new_event_loop()
    try:

        async def client() -> Any:
            return AsyncTransport(timeout=4.25).client()

        shared = loop.run_until_complete(client())
        session = SyncTransport(timeout=4.25).session
        transport_module.close_shared_pools()
        assert shared.is_closed
        assert SyncTransport(timeout=4.25).session is not session
    finally:
        loop.close()
    # New pools open on the next request.
    assert chat(replica, "Lockchat").invoke("hi").content


def tool_call_body(arguments: str, *, stream: bool) -> bytes:
    call = {
        "index": 0,
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": arguments},
    }
    if not stream:
        message = {"content": None, "tool_calls": [call]}
        return json.dumps(
            {"choices": [{"message": message, "finish_reason": "tool_calls"}]}
        ).encode()
    return (
        b"data: " + json.dumps({"choices": [{"delta": {"tool_calls": [call]}}]}).encode() + b"\n\n"
        b'data: {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}\n\ndata: [DONE]\n\n'
    )


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("arguments", ["5", "[1]", "null", '"x"', "[" * 100_000, '{"a":' * 50_000])
async def test_tool_call_arguments_that_are_not_an_object_are_invalid_calls(
    raw_server: RawServer, how: str, arguments: str
) -> None:
    stream = how.endswith("stream")
    raw_server.reply = (
        200,
        {"Content-Type": "text/event-stream" if stream else "application/json"},
        [tool_call_body(arguments, stream=stream)],
    )
    provider = OpenAICompatible("Raw", raw_server.url, native_tools=True)
    llm = ChatG4F(provider=provider, model="m", max_retries=0).bind_tools(
        [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
            }
        ]
    )
    if how == "invoke":
        message = llm.invoke("hi")
    elif how == "ainvoke":
        message = await llm.ainvoke("hi")
    elif how == "stream":
        message = functools.reduce(operator.add, llm.stream("hi"))
    else:
        message = functools.reduce(operator.add, [c async for c in llm.astream("hi")])
    assert message.tool_calls == []
    [invalid] = message.invalid_tool_calls
    assert invalid["name"] == "f"
    assert invalid["id"] == "c1"


def test_cli_404_names_the_url_it_tried_without_its_secret(
    replica: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    from langchain_g4f import cli

    parts = urlsplit(replica.base_url("Lockchat") + "/v1")
    url = urlunsplit(parts._replace(netloc=f"bob:{PASSWORD}@{parts.netloc}"))
    code = cli.main(["chat", "--base-url", url, "-m", "no-such-model", "Hi"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"HTTP 404 from http://bob:***@{parts.netloc}{parts.path}/chat/completions" in err
    assert PASSWORD not in err


@pytest.mark.parametrize("how", SIDES)
@pytest.mark.parametrize("coding", [None, "gzip"])
async def test_reading_stops_at_done(raw_server: RawServer, how: str, coding: str | None) -> None:
    """A server that keeps the connection open after [DONE] does not hold the answer back."""
    body = FULL_SSE + b"data: more\n\n"
    headers = {"Content-Type": "text/event-stream"}
    if coding:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush(zlib.Z_SYNC_FLUSH)
        headers["Content-Encoding"] = coding
    raw_server.reply, raw_server.hold = (200, headers, [body]), 3 * DELAY
    outcome = await fetch(raw_server, how, timeout=DELAY)
    assert outcome.error is None, outcome.error
    assert outcome.text == "Hello wörld"


EXIT_SCRIPT = """
import asyncio, atexit

clients = []
# Registered first, so it runs after the transport's own handler.
atexit.register(lambda: print("closed at exit:", all(c.is_closed for c in clients)))

from langchain_g4f import ChatG4F
from langchain_g4f.testing import Replica

replica = Replica().__enter__()
model = ChatG4F(provider="Lockchat", base_url=replica.base_url("Lockchat"))
loop = asyncio.new_event_loop()


async def first_chunk():
    clients.append(model.async_transport.client())
    async for chunk in model.astream("hi"):
        return chunk  # the stream is left for the loop to finalise


print(loop.run_until_complete(first_chunk()).content)
"""


def test_shared_clients_are_closed_at_exit_leaving_nothing_pending() -> None:
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "closed at exit: True" in result.stdout
    assert "Task was destroyed" not in result.stderr
    assert "Unclosed" not in result.stderr


# --------------------------------------------------------------------------- protocols


def test_each_transport_is_the_protocol_it_is_typed_as() -> None:
    sync: SyncTransportProtocol = SyncTransport()  # mypy checks these two assignments
    async_: AsyncTransportProtocol = AsyncTransport()
    assert isinstance(sync, SyncTransportProtocol)  # structural: fails if a method is missing
    assert isinstance(async_, AsyncTransportProtocol)


def test_a_provider_transport_brings_both_paths() -> None:
    class SyncOnly:
        def batches(self, provider: Provider, request: HTTPRequest) -> Iterator[list[Delta]]:
            return iter([[Delta(text="hi")]])

    class Both(SyncOnly):
        def abatches(self, provider: Provider, request: HTTPRequest) -> Any:
            raise NotImplementedError

    assert isinstance(SyncOnly(), SyncTransportProtocol)
    assert not isinstance(SyncOnly(), AsyncTransportProtocol)
    assert not isinstance(SyncOnly(), ProviderTransport)
    own: ProviderTransport = Both()
    assert isinstance(own, ProviderTransport)
