"""ChatG4FRouter against the local replica: fallback, retries, health, hedging, routing.

Every test talks to a :class:`~langchain_g4f.testing.Replica` on 127.0.0.1 with faults
injected per provider; each model's own ``timeout`` is 1 s. Distinct providers:
Mishalsgpt, Gravityengine and Lockchat stream (OpenAI protocol); Aichat does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import random
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, ClassVar

import pytest
from langchain_core.messages import HumanMessage

import langchain_g4f
from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.errors import (
    AllProvidersFailedError,
    ConfigurationError,
    NoProviderAvailableError,
    StreamInterruptedError,
)
from langchain_g4f.health import HealthView
from langchain_g4f.strategies import (
    ExtraRequests,
    FastestStrategy,
    PriorityStrategy,
    RandomStrategy,
    RoundRobinStrategy,
    resolve_strategy,
)
from langchain_g4f.testing import FAULTS, Replica, reply_for

pytestmark = pytest.mark.loopback

MODES = ("sync-stream", "sync-invoke", "async-stream", "async-invoke")
#: Slack on top of a deadline for thread and socket teardown.
MARGIN = 0.5


@pytest.fixture(autouse=True)
def _fresh_replica(replica: Replica) -> None:
    replica.reset()


def chat(replica: Replica, name: str, **kwargs: Any) -> ChatG4F:
    kwargs.setdefault("timeout", 1.0)
    return ChatG4F(provider=name, base_url=replica.base_url(name), **kwargs)


def router_of(replica: Replica, *names: str, **kwargs: Any) -> ChatG4FRouter:
    kwargs.setdefault("strategy", "priority")
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 5.0)
    return ChatG4FRouter(providers=[chat(replica, name) for name in names], **kwargs)


def expected(prompt: str) -> str:
    return reply_for([{"role": "user", "content": prompt}])


def pieces_of(text: str) -> list[str]:
    """How the replica splits an answer into stream chunks."""
    return re.findall(r"\S+\s*|\s+", text)


def requested(replica: Replica) -> Counter:
    return Counter(entry["provider"] for entry in replica.requests)


@dataclass
class Answer:
    text: str
    metadata: dict[str, Any]
    elapsed: float
    pieces: list[str] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return self.metadata["provider"]

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [(a["provider"], a["error"]) for a in self.metadata["attempts"]]


async def ask(
    router: ChatG4FRouter, prompt: str, mode: str, pieces: list[str] | None = None, **kwargs: Any
) -> Answer:
    """One call in ``mode``; ``pieces`` collects the streamed text as it arrives."""
    pieces = [] if pieces is None else pieces
    start = time.monotonic()
    if mode == "sync-invoke":
        message: Any = router.invoke(prompt, **kwargs)
    elif mode == "async-invoke":
        message = await router.ainvoke(prompt, **kwargs)
    else:
        chunks = []
        stream = router.stream(prompt, **kwargs) if mode == "sync-stream" else None
        if stream is not None:
            for chunk in stream:
                chunks.append(chunk)
                pieces.append(chunk.content)
        else:
            async for chunk in router.astream(prompt, **kwargs):
                chunks.append(chunk)
                pieces.append(chunk.content)
        message = reduce(operator.add, chunks)  # LangChain's own merging
    elapsed = time.monotonic() - start
    return Answer(message.content, message.response_metadata, elapsed, pieces)


def assert_answer(answer: Answer, prompt: str, provider: str) -> None:
    assert answer.text == expected(prompt)  # exact: nothing lost, nothing repeated
    assert answer.provider == provider
    if answer.pieces:
        assert "".join(answer.pieces) == expected(prompt)


# --- faults before any text: fall back ------------------------------------------------

#: fault -> (options, the error the first attempt records)
BEFORE_TEXT = {
    "refuse": ({}, "ProviderConnectionError"),
    "hang": ({}, "ProviderTimeoutError"),
    "stall": ({"after_chunks": 0}, "ProviderTimeoutError"),
    "reset": ({"after_chunks": 0}, "ProviderConnectionError"),
    "rate_limit": ({"retry_after": 0.2}, "RateLimitError"),
    "http_500": ({}, "ProviderHTTPError"),
    "http_502": ({}, "ProviderHTTPError"),
    "http_503": ({}, "ProviderHTTPError"),
    "http_401": ({}, "AuthenticationError"),
    "html": ({}, "HTMLResponseError"),
    "truncated_json": ({"after_chunks": 0}, "MalformedResponseError"),
    "error_event": ({"after_chunks": 0}, "ProviderResponseError"),
    "empty": ({}, "EmptyResponseError"),
}
STATUS = {"rate_limit": 429, "http_500": 500, "http_502": 502, "http_503": 503, "http_401": 401}


def test_every_replica_fault_is_covered() -> None:
    assert set(BEFORE_TEXT) | {"slow"} == set(FAULTS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(BEFORE_TEXT))
async def test_fault_before_text_falls_back(replica: Replica, fault: str, mode: str) -> None:
    options, error = BEFORE_TEXT[fault]
    replica.set_fault("Mishalsgpt", fault, **options)
    # no hedge: a hang or a stall shows as the failure it is, at the read timeout
    router = router_of(
        replica, "Mishalsgpt", "Aichat", max_retries=0, timeout=3.0, hedge_after=None
    )
    prompt = f"{fault} in {mode}"

    answer = await ask(router, prompt, mode)

    assert_answer(answer, prompt, "Aichat")
    assert answer.failed == [("Mishalsgpt", error)]
    (attempt,) = answer.metadata["attempts"]
    assert attempt["status"] == STATUS.get(fault)
    assert attempt["message"]
    assert attempt["elapsed"] >= 0
    assert answer.elapsed < 3.0 + MARGIN


@pytest.mark.parametrize("mode", ["sync-stream", "async-invoke"])
@pytest.mark.parametrize("fault", list(BEFORE_TEXT))
async def test_fault_on_non_streaming_provider_falls_back(
    replica: Replica, fault: str, mode: str
) -> None:
    options, error = BEFORE_TEXT[fault]
    replica.set_fault("Aichat", fault, **options)
    router = router_of(replica, "Aichat", "Lockchat", max_retries=0, timeout=3.0, hedge_after=None)

    answer = await ask(router, "aichat down", mode)

    assert_answer(answer, "aichat down", "Lockchat")
    assert answer.failed == [("Aichat", error)]
    assert answer.elapsed < 3.0 + MARGIN


@pytest.mark.parametrize("mode", MODES)
async def test_slow_provider_still_answers(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "slow", delay=0.02)
    router = router_of(replica, "Mishalsgpt", "Lockchat", timeout=3.0)

    answer = await ask(router, "take your time", mode)

    assert_answer(answer, "take your time", "Mishalsgpt")
    assert answer.metadata["attempts"] == []
    assert requested(replica) == {"mishalsgpt": 1}


# --- faults after text: no fallback ---------------------------------------------------

AFTER_TEXT = {
    "stall": "ProviderTimeoutError",
    "reset": "ProviderConnectionError",
    "error_event": "ProviderResponseError",
    "truncated_json": "MalformedResponseError",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", list(AFTER_TEXT))
async def test_fault_after_text_raises_interrupted(replica: Replica, fault: str, mode: str) -> None:
    replica.set_fault("Mishalsgpt", fault, after_chunks=2)
    router = router_of(replica, "Mishalsgpt", "Lockchat", timeout=3.0, on_interrupt="raise")
    prompt = f"break {fault}"
    pieces: list[str] = []
    start = time.monotonic()

    with pytest.raises(StreamInterruptedError) as info:
        await ask(router, prompt, mode, pieces)

    error = info.value
    assert error.provider == "Mishalsgpt"
    assert error.partial_text == "".join(pieces_of(expected(prompt))[:2])
    assert type(error.cause).__name__ == AFTER_TEXT[fault]
    if mode.endswith("stream"):
        assert "".join(pieces) == error.partial_text  # exactly what was yielded
    assert requested(replica) == {"mishalsgpt": 1}  # never restarted elsewhere
    assert router.stats()["Mishalsgpt"]["failures"] == 1
    assert time.monotonic() - start < 3.0 + MARGIN


# --- retries --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync-invoke", "async-stream"])
async def test_rate_limit_retry_after_is_honoured(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "rate_limit", times=1, retry_after=0.2)
    router = router_of(replica, "Mishalsgpt", max_retries=1, timeout=3.0)  # nobody else

    answer = await ask(router, "patience", mode)

    assert_answer(answer, "patience", "Mishalsgpt")
    assert answer.failed == [("Mishalsgpt", "RateLimitError")]
    assert requested(replica) == {"mishalsgpt": 2}
    assert 0.18 <= answer.elapsed < 3.0 + MARGIN


@pytest.mark.parametrize("mode", ["sync-stream", "async-invoke"])
async def test_retry_after_past_the_deadline_moves_on(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "rate_limit", retry_after=5)
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=3, timeout=2.0)

    answer = await ask(router, "no waiting", mode)

    assert_answer(answer, "no waiting", "Lockchat")
    assert requested(replica) == {"mishalsgpt": 1, "lockchat": 1}
    assert answer.elapsed < 1.0


@pytest.mark.parametrize("mode", ["sync-invoke", "async-invoke"])
async def test_server_error_is_retried_on_the_same_provider(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "http_503", times=2)
    router = router_of(replica, "Mishalsgpt", max_retries=2, cooldown_after=5, min_calls=5)

    answer = await ask(router, "third time lucky", mode)

    assert_answer(answer, "third time lucky", "Mishalsgpt")
    assert answer.failed == [("Mishalsgpt", "ProviderHTTPError")] * 2
    assert requested(replica) == {"mishalsgpt": 3}


@pytest.mark.parametrize("mode", ["sync-stream", "async-stream"])
async def test_401_is_not_retried(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "http_401")
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=3, cooldown_after=5)

    answer = await ask(router, "wrong key", mode)

    assert_answer(answer, "wrong key", "Lockchat")
    assert answer.failed == [("Mishalsgpt", "AuthenticationError")]
    assert requested(replica) == {"mishalsgpt": 1, "lockchat": 1}


async def test_configuration_error_for_every_provider_surfaces_as_itself(
    replica: Replica,
) -> None:
    router = router_of(replica, "Mishalsgpt", "Lockchat")
    audio = HumanMessage(content=[{"type": "audio", "url": "http://x/y.wav"}])

    with pytest.raises(ConfigurationError) as sync_info:
        router.invoke([audio])
    with pytest.raises(ConfigurationError) as async_info:
        await router.ainvoke([audio])

    assert not isinstance(sync_info.value, AllProvidersFailedError)
    assert "'audio'" in str(sync_info.value)
    assert "'audio'" in str(async_info.value)
    assert replica.requests == []
    assert router.stats()["Mishalsgpt"]["failures"] == 0  # the request's fault, not theirs


class Broken(ChatG4F):
    """A provider model with a bug: every call raises RuntimeError."""

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        msg = "a bug"
        raise RuntimeError(msg)
        yield

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        msg = "a bug"
        raise RuntimeError(msg)
        yield


@pytest.mark.parametrize("mode", ["sync-invoke", "async-stream"])
async def test_unexpected_errors_fall_back_and_surface_when_everywhere(
    replica: Replica, mode: str
) -> None:
    broken = Broken(provider="Mishalsgpt", base_url=replica.base_url("Mishalsgpt"))
    router = ChatG4FRouter(providers=[broken, chat(replica, "Lockchat")], strategy="priority")
    answer = await ask(router, "bug", mode)
    assert_answer(answer, "bug", "Lockchat")
    assert answer.failed == [("Mishalsgpt", "RuntimeError")]

    alone = ChatG4FRouter(providers=[broken], max_retries=3)
    with pytest.raises(RuntimeError, match="a bug"):
        await ask(alone, "bug", mode)


# --- deadline and errors --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync-invoke", "async-invoke", "sync-stream", "async-stream"])
async def test_deadline_cuts_a_hung_attempt(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "hang")
    replica.set_fault("Lockchat", "hang")
    router = router_of(replica, "Mishalsgpt", "Lockchat", timeout=0.4)
    start = time.monotonic()

    with pytest.raises(AllProvidersFailedError) as info:
        await ask(router, "anyone?", mode)

    elapsed = time.monotonic() - start
    assert 0.35 <= elapsed < 0.4 + 0.2  # the 1 s read timeout did not matter
    assert "deadline" in str(info.value)
    assert [(a["provider"], a["error"]) for a in info.value.attempts] == [
        ("Mishalsgpt", "ProviderTimeoutError")
    ]


@pytest.mark.parametrize("mode", ["sync-stream", "async-invoke"])
async def test_no_deadline(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "http_500", times=1)
    router = router_of(replica, "Mishalsgpt", timeout=None, hedge_after=None)
    answer = await ask(router, "whenever", mode)
    assert_answer(answer, "whenever", "Mishalsgpt")  # retried after backoff
    assert answer.failed == [("Mishalsgpt", "ProviderHTTPError")]


async def test_all_failed_error_lists_every_attempt(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "http_500")
    replica.set_fault("Lockchat", "http_401")
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=1, cooldown_after=5)

    with pytest.raises(AllProvidersFailedError) as info:
        await router.ainvoke("nobody home")

    attempts = info.value.attempts
    assert [(a["provider"], a["status"]) for a in attempts] == [
        ("Mishalsgpt", 500),
        ("Lockchat", 401),  # the next provider at once; the retry when nobody else is left
        ("Mishalsgpt", 500),
    ]
    assert all(set(a) == {"provider", "error", "status", "message", "elapsed"} for a in attempts)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("every provider failed; 3 attempts")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "- Mishalsgpt",
        "- Lockchat",
        "- Mishalsgpt",
    ]
    assert isinstance(info.value.__cause__, Exception)


# --- health and cooldown --------------------------------------------------------------


def test_cooldown_skips_a_failing_provider_then_tries_it_again(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "http_500")
    router = router_of(
        replica, "Mishalsgpt", "Lockchat", max_retries=0, cooldown_after=2, cooldown=0.3
    )

    for _ in range(2):
        assert router.invoke("hi").response_metadata["provider"] == "Lockchat"
    assert requested(replica)["mishalsgpt"] == 2
    stats = router.stats()["Mishalsgpt"]
    assert stats["consecutive_failures"] == 2
    assert 0 < stats["cooldown_left"] <= 0.3

    message = router.invoke("hi")  # cooling down: skipped, no request
    assert message.response_metadata["attempts"] == []
    assert requested(replica)["mishalsgpt"] == 2

    time.sleep(0.35)
    assert router.stats()["Mishalsgpt"]["circuit"] == "half_open"
    replica.set_fault("Mishalsgpt", None)
    replica.set_fault("Lockchat", "http_500", times=1)
    message = router.invoke("hi")  # the cooldown is over: probed as the fallback; recovered
    assert message.response_metadata["provider"] == "Mishalsgpt"
    stats = router.stats()["Mishalsgpt"]
    assert stats["consecutive_failures"] == 0
    assert stats["cooldown_left"] == 0.0
    assert stats["circuit"] == "closed"
    assert router.invoke("hi").response_metadata["provider"] == "Mishalsgpt"  # first again


def test_cooldown_grows_exponentially_and_is_capped() -> None:
    router = ChatG4FRouter(
        providers=["Lockchat"], cooldown_after=2, cooldown=5.0, max_cooldown=300.0
    )
    seconds = [router._health.cooldown_seconds(openings) for openings in range(9)]
    assert seconds == [0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]


@pytest.mark.parametrize("mode", ["sync-invoke", "async-stream"])
async def test_all_cooling_down_and_a_short_deadline(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "http_500")
    replica.set_fault("Lockchat", "http_500")
    router = router_of(
        replica,
        "Mishalsgpt",
        "Lockchat",
        max_retries=0,
        cooldown_after=1,
        cooldown=5.0,
        timeout=0.5,
    )
    with pytest.raises(AllProvidersFailedError) as first:
        await ask(router, "one", mode)
    assert len(first.value.attempts) == 2
    sent = len(replica.requests)

    start = time.monotonic()
    with pytest.raises(AllProvidersFailedError) as second:
        await ask(router, "two", mode)

    assert time.monotonic() - start < 0.5
    assert second.value.attempts == []
    assert "cooling down" in str(second.value)
    assert "of the 0.5s deadline" in str(second.value)
    assert len(replica.requests) == sent


@pytest.mark.parametrize("mode", ["sync-stream", "async-invoke"])
async def test_all_cooling_down_waits_for_the_first_to_recover(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "http_500", times=1)
    replica.set_fault("Lockchat", "http_500", times=1)
    router = router_of(
        replica,
        "Mishalsgpt",
        "Lockchat",
        max_retries=0,
        cooldown_after=1,
        cooldown=0.3,
        timeout=2.0,
    )
    with pytest.raises(AllProvidersFailedError):
        await ask(router, "one", mode)

    answer = await ask(router, "two", mode)

    assert_answer(answer, "two", "Mishalsgpt")  # the first to cool down, the first back
    assert 0.15 <= answer.elapsed < 2.0


def test_stats_shape(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "http_500", times=1)
    router = router_of(replica, "Mishalsgpt", "Lockchat", "Aichat", max_retries=0)
    router.invoke("hi")

    stats = router.stats()

    assert list(stats) == ["Mishalsgpt", "Lockchat", "Aichat"]
    for record in stats.values():
        assert set(record) == {
            "successes",
            "failures",
            "consecutive_failures",
            "cooldown_left",
            "ttft",
            "last_error",
            "success_rate",
            "recent_calls",
            "throughput",
            "failure_cost",
            "circuit",
        }
        assert isinstance(record["cooldown_left"], float)
    assert stats["Mishalsgpt"]["failures"] == 1
    assert stats["Mishalsgpt"]["last_error"].startswith("ProviderHTTPError")
    assert stats["Lockchat"]["successes"] == 1
    assert stats["Lockchat"]["ttft"] > 0
    assert stats["Mishalsgpt"]["failure_cost"] >= 0
    assert stats["Mishalsgpt"]["circuit"] == "closed"
    assert stats["Mishalsgpt"]["success_rate"] == 0.0  # observed, not smoothed
    assert stats["Lockchat"]["success_rate"] == 1.0
    assert stats["Aichat"] == {
        "successes": 0,
        "failures": 0,
        "consecutive_failures": 0,
        "cooldown_left": 0.0,
        "ttft": None,
        "last_error": None,
        "success_rate": None,  # observed: no calls, no rate
        "recent_calls": 0.0,
        "throughput": None,
        "failure_cost": None,
        "circuit": "closed",
    }


# --- strategies -----------------------------------------------------------------------


def test_priority_keeps_the_given_order(replica: Replica) -> None:
    router = router_of(replica, "Gravityengine", "Mishalsgpt", "Lockchat", strategy="priority")
    answered = [router.invoke("hi").response_metadata["provider"] for _ in range(3)]
    assert answered == ["Gravityengine"] * 3


async def test_round_robin_alternates(replica: Replica) -> None:
    router = router_of(replica, "Mishalsgpt", "Gravityengine", "Lockchat", strategy="round_robin")
    answered = [router.invoke("hi").response_metadata["provider"] for _ in range(3)]
    answered += [(await router.ainvoke("hi")).response_metadata["provider"] for _ in range(3)]
    assert answered == ["Mishalsgpt", "Gravityengine", "Lockchat"] * 2


def test_fastest_prefers_the_faster_after_measuring(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "slow", delay=0.03)
    router = ChatG4FRouter(
        providers=[chat(replica, "Mishalsgpt"), chat(replica, "Lockchat")],
        strategy="fastest",
    )
    answered = [router.invoke("hi").response_metadata["provider"] for _ in range(40)]

    assert answered[:2] == ["Mishalsgpt", "Lockchat"]  # nothing measured: spread
    later = Counter(answered[2:])
    assert later["Lockchat"] > 3 * later["Mishalsgpt"]  # once measured, preferred
    stats = router.stats()
    assert stats["Mishalsgpt"]["ttft"] > stats["Lockchat"]["ttft"]


def test_fastest_orders_by_ttft_and_explores_on_a_budget() -> None:
    def measured(ttft: float) -> HealthView:
        return HealthView(ttft=ttft, successes=3, recent_successes=3.0)

    views = {"a": measured(0.5), "b": measured(0.1), "c": measured(0.1), "d": HealthView()}
    strategy = FastestStrategy(ExtraRequests(0.0))
    assert strategy.order(["a", "b", "c", "d"], views)[0] == "d"  # never tried: once
    assert strategy.order(["a", "b", "c", "d"], views) == ["b", "c", "a", "d"]

    # b is fast but failed one call in three: maybe bad luck, maybe not
    views["a"] = measured(1.5)
    views["b"] = HealthView(
        ttft=0.1, successes=2, failures=1, recent_successes=2.0, recent_failures=1.0
    )
    budget = ExtraRequests(0.1, burst=4.0)  # exploring keeps half for hedges
    spender = FastestStrategy(budget, idle_half_life=1e9)  # b's rates never change

    def first() -> str:
        name = spender.order(["a", "b"], views)[0]
        if name == "b":  # the exploring call's outcome comes back: one more call of b
            views["b"] = dataclasses.replace(views["b"], successes=views["b"].successes + 1)
        return name

    first()  # the first call explores, from the saved-up burst
    firsts = Counter()
    for _ in range(2000):
        budget.earn()
        firsts[first()] += 1
    assert 0.08 < firsts["b"] / 2000 <= 0.1 + 4 / 2000  # explored, within the budget


def test_fastest_needs_a_budget_object() -> None:
    with pytest.raises(ConfigurationError, match="ExtraRequests"):
        FastestStrategy(0.1)  # type: ignore[arg-type]


def test_random_respects_weights() -> None:
    strategy = RandomStrategy(weights={"a": 3, "b": 1}, rng=random.Random(42))
    firsts = Counter(strategy.order(["a", "b"], {})[0] for _ in range(4000))
    assert 0.72 < firsts["a"] / 4000 < 0.78
    assert sorted(strategy.order(["a", "b", "c"], {})) == ["a", "b", "c"]
    never_first = RandomStrategy(weights={"a": 0}, rng=random.Random(1))
    assert never_first.order(["a", "b"], {}) == ["b", "a"]


def test_random_weighs_by_success_rate_without_weights() -> None:
    views = {"good": HealthView(recent_successes=18), "bad": HealthView(recent_failures=18)}
    strategy = RandomStrategy(rng=random.Random(7))
    firsts = Counter(strategy.order(["bad", "good"], views)[0] for _ in range(2000))
    assert firsts["good"] / 2000 > 0.9


def test_random_strategy_object_drives_the_router(replica: Replica) -> None:
    strategy = RandomStrategy(weights={"Mishalsgpt": 0, "Lockchat": 1}, rng=random.Random(0))
    router = router_of(replica, "Mishalsgpt", "Lockchat", strategy=strategy)
    assert {router.invoke("hi").response_metadata["provider"] for _ in range(3)} == {"Lockchat"}


def test_round_robin_and_priority_units() -> None:
    robin = RoundRobinStrategy()
    assert [robin.order(["a", "b", "c"], {})[0] for _ in range(4)] == ["a", "b", "c", "a"]
    assert PriorityStrategy().order(["b", "a"], {}) == ["b", "a"]


def test_strategy_names_and_objects(replica: Replica) -> None:
    assert isinstance(resolve_strategy("round-robin"), RoundRobinStrategy)
    assert isinstance(ChatG4FRouter(providers=["Lockchat"])._strategy, FastestStrategy)
    with pytest.raises(ConfigurationError, match="unknown strategy"):
        ChatG4FRouter(providers=["Lockchat"], strategy="cheapest")

    class Reverse:
        def order(self, candidates: list[str], health: Any) -> list[str]:
            return list(reversed(candidates))

    router = router_of(replica, "Mishalsgpt", "Lockchat", strategy=Reverse())
    assert router.invoke("hi").response_metadata["provider"] == "Lockchat"


# --- model-aware routing --------------------------------------------------------------


@pytest.mark.parametrize("where", ["router", "call"])
async def test_a_model_routes_only_to_providers_serving_it(replica: Replica, where: str) -> None:
    names = ("Mishalsgpt", "Gravityengine", "Lockchat")
    router = (
        router_of(replica, *names, model="gpt-4")
        if where == "router"
        else router_of(replica, *names)
    )
    kwargs = {"model": "gpt-4"} if where == "call" else {}

    sync_answer = router.invoke("big model", **kwargs)
    async_answer = await router.ainvoke("big model", **kwargs)

    for message in (sync_answer, async_answer):
        assert message.content == expected("big model")
        assert message.response_metadata["provider"] == "Lockchat"
        assert message.response_metadata["model_name"] == "gpt-4"
    assert requested(replica) == {"lockchat": 2}
    assert {entry["json"]["model"] for entry in replica.requests} == {"gpt-4"}


def test_a_shared_model_is_asked_for_by_name(replica: Replica) -> None:
    router = router_of(replica, "Gravityengine", "Mishalsgpt", "Lockchat")
    router.invoke("hi", model="gpt-3.5-turbo")  # Mishalsgpt and Lockchat serve it
    router.invoke("hi")  # no model: each uses its own
    assert [(e["provider"], e["json"]["model"]) for e in replica.requests] == [
        ("mishalsgpt", "gpt-3.5-turbo"),
        ("gravityengine", "gpt-3.5-turbo-16k"),
    ]


async def test_a_model_nobody_serves_fails_before_any_request(replica: Replica) -> None:
    router = router_of(replica, "Mishalsgpt", "Lockchat")
    with pytest.raises(NoProviderAvailableError) as info:
        router.invoke("hi", model="gpt-5")
    with pytest.raises(NoProviderAvailableError):
        await router.ainvoke("hi", model="gpt-5")
    with pytest.raises(NoProviderAvailableError):
        list(router.stream("hi", model="gpt-5"))
    assert "gpt-5" in str(info.value)
    assert "gpt-4 (Lockchat)" in str(info.value)
    assert replica.requests == []


# --- hedging --------------------------------------------------------------------------


class ClosingSpy(ChatG4F):
    """A ChatG4F that records when, and on which thread, its streams end."""

    closed: ClassVar[list[str]] = []

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from super()._stream(*args, **kwargs)
        finally:
            ClosingSpy.closed.append(threading.current_thread().name)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk
        finally:
            ClosingSpy.closed.append("async")


@pytest.mark.parametrize("mode", MODES)
async def test_hedge_starts_the_next_provider_and_closes_the_slow_one(
    replica: Replica, mode: str
) -> None:
    ClosingSpy.closed.clear()
    replica.set_fault("Mishalsgpt", "slow", delay=1.0)
    slow = ClosingSpy(provider="Mishalsgpt", base_url=replica.base_url("Mishalsgpt"), timeout=2.0)
    router = ChatG4FRouter(
        providers=[slow, chat(replica, "Lockchat")], strategy="priority", hedge_after=0.1
    )

    answer = await ask(router, "hurry", mode)

    assert answer.elapsed < 0.6
    assert_answer(answer, "hurry", "Lockchat")
    assert answer.metadata["attempts"] == []  # the loser was cancelled, not failed
    assert requested(replica) == {"mishalsgpt": 1, "lockchat": 1}
    if mode.startswith("async"):
        assert ClosingSpy.closed == ["async"]  # cancelled and closed before the answer
    else:  # closed by its worker thread once its blocked read returned
        for _ in range(40):
            if ClosingSpy.closed:
                break
            await asyncio.sleep(0.05)
        assert len(ClosingSpy.closed) == 1
        assert ClosingSpy.closed[0].startswith("g4f-router")
    stats = router.stats()
    assert stats["Mishalsgpt"]["failures"] == 0
    assert stats["Lockchat"]["successes"] == 1


@pytest.mark.parametrize("mode", ["sync-stream", "async-stream"])
async def test_hedge_primary_failing_early_falls_back_normally(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "http_500")
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=0, hedge_after=0.5)

    answer = await ask(router, "quick failure", mode)

    assert_answer(answer, "quick failure", "Lockchat")
    assert answer.failed == [("Mishalsgpt", "ProviderHTTPError")]
    assert answer.elapsed < 0.4


@pytest.mark.parametrize("mode", ["sync-invoke", "async-invoke"])
async def test_failed_hedge_counts_as_an_attempt(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "slow", delay=0.1)
    replica.set_fault("Lockchat", "http_500")
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=0, hedge_after=0.05)

    answer = await ask(router, "hedge fails", mode)

    assert_answer(answer, "hedge fails", "Mishalsgpt")
    assert answer.failed == [("Lockchat", "ProviderHTTPError")]
    assert router.stats()["Lockchat"]["failures"] == 1


# --- concurrency ----------------------------------------------------------------------


def assert_consistent(router: ChatG4FRouter, answers: list[tuple[str, Any]]) -> None:
    failed = 0
    for prompt, message in answers:
        assert message.content == expected(prompt)
        assert message.response_metadata["provider"] == "Lockchat"
        assert all(a["provider"] == "Mishalsgpt" for a in message.response_metadata["attempts"])
        failed += len(message.response_metadata["attempts"])
    stats = router.stats()
    assert stats["Lockchat"]["successes"] == len(answers)
    assert stats["Lockchat"]["failures"] == 0
    assert stats["Mishalsgpt"]["successes"] == 0
    assert stats["Mishalsgpt"]["failures"] == failed > 0
    total = sum(s["successes"] + s["failures"] for s in stats.values())
    assert total == len(answers) + failed


def shared_router(replica: Replica) -> ChatG4FRouter:
    # A generous deadline: a hundred calls at once on two busy cores take their time.
    return router_of(replica, "Mishalsgpt", "Lockchat", max_retries=0, cooldown=0.02, timeout=60.0)


def test_many_threads_share_one_router(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "http_500")
    router = shared_router(replica)

    def calls(thread: int) -> list[tuple[str, Any]]:
        prompts = [f"thread {thread} call {n}" for n in range(10)]
        return [(prompt, router.invoke(prompt)) for prompt in prompts]

    with ThreadPoolExecutor(16) as pool:
        answers = [pair for batch in pool.map(calls, range(16)) for pair in batch]

    assert len(answers) == 160
    assert_consistent(router, answers)
    assert requested(replica)["mishalsgpt"] == router.stats()["Mishalsgpt"]["failures"]


async def test_many_tasks_share_one_router(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "http_500")
    router = shared_router(replica)

    async def call(n: int) -> tuple[str, Any]:
        prompt = f"task {n}"
        if n % 2:
            return prompt, await router.ainvoke(prompt)
        chunks = [chunk async for chunk in router.astream(prompt)]
        return prompt, reduce(operator.add, chunks)

    answers = await asyncio.gather(*(call(n) for n in range(100)))

    assert_consistent(router, list(answers))
    assert requested(replica)["mishalsgpt"] == router.stats()["Mishalsgpt"]["failures"]


# --- the chat model itself ------------------------------------------------------------


def test_construction_and_langchain_metadata(replica: Replica) -> None:
    assert langchain_g4f.ChatG4FRouter is ChatG4FRouter
    mine = chat(replica, "Lockchat", max_retries=3)
    router = ChatG4FRouter(providers=[mine, "Aichat", chat(replica, "Lockchat")], model=None)

    assert router.provider_names == ["Lockchat#1", "Aichat", "Lockchat#2"]
    assert mine.max_retries == 3  # the router works on its own copy, retries off
    assert all(entry.chat.max_retries == 0 for entry in router._entries)
    assert router._llm_type == "g4f-router"
    assert router._identifying_params["strategy"] == "fastest"
    assert router._identifying_params["providers"] == router.provider_names
    params = router._get_ls_params(model="gpt-4", temperature=0.2)
    assert params["ls_provider"] == "g4f"
    assert params["ls_model_name"] == "gpt-4"
    assert params["ls_temperature"] == 0.2
    assert params["ls_model_type"] == "chat"

    # every registered provider, the streaming ones first
    assert ChatG4FRouter().provider_names == ["Gravityengine", "Lockchat", "Mishalsgpt", "Aichat"]
    with pytest.raises(ConfigurationError, match="no providers"):
        ChatG4FRouter(providers=[])


def test_router_options_pass_through(replica: Replica) -> None:
    router = router_of(replica, "Lockchat", temperature=0.3, max_tokens=3)
    message = router.invoke("count with me please")
    assert message.content == "".join(pieces_of(expected("count with me please"))[:3])
    body = replica.requests[-1]["json"]
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 3

    stopping = router_of(replica, "Lockchat", stop=["replica"])
    assert stopping.invoke("hi").content == "Hello from the "


def test_metadata_attempts_are_on_one_chunk_only(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "http_500", times=1)
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=0)
    chunks = list(router.stream("metadata"))
    carriers = [c for c in chunks if "attempts" in c.response_metadata]
    assert carriers == [chunks[-1]]
    assert chunks[-1].chunk_position == "last"
    merged = reduce(operator.add, chunks).response_metadata
    assert merged["provider"] == "Lockchat"
    assert merged["finish_reason"] == "stop"
    assert len(merged["attempts"]) == 1
