"""Continuation of broken answers, cancellations by the caller, losers closed at once.

The splicing is tested as pure functions (and fuzzed); the router end to end against the
replica, which answers continuation requests and breaks streams after a number of
characters; losers against a small server of the test's own that records when the client
hangs up.
"""

from __future__ import annotations

import asyncio
import json
import operator
import select
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import reduce
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage

from langchain_g4f import ChatG4F, ChatG4FRouter, _stall
from langchain_g4f._stall import FACTOR, FLOOR, AWatched, StallLimit
from langchain_g4f.continuation import (
    CONTINUE_INSTRUCTION,
    MIN_OVERLAP,
    Splicer,
    continuation_messages,
    overlap,
    splice,
)
from langchain_g4f.errors import (
    AllProvidersFailedError,
    ConfigurationError,
    ProviderTimeoutError,
    StreamInterruptedError,
)
from langchain_g4f.providers import OpenAICompatible
from langchain_g4f.testing import Replica, reply_for

MODES = ("sync-stream", "sync-invoke", "async-stream", "async-invoke")


# --- splicing, no I/O ------------------------------------------------------------------


def streamed(partial: str, continuation: str, cuts: list[int]) -> str:
    """What a Splicer emits for ``continuation`` cut at ``cuts``."""
    splicer = Splicer(partial)
    out, start = [], 0
    for cut in [*sorted(cuts), len(continuation)]:
        out.append(splicer.push(continuation[start:cut]))
        start = max(start, cut)
    out.append(splicer.flush())
    return "".join(out)


def test_splice_removes_a_repeated_tail() -> None:
    assert splice("The quick brown", " brown fox") == " fox"
    assert splice("The quick brown", "The quick brown fox") == " fox"  # started over
    assert splice("The quick brown", " fox") == " fox"  # nothing repeated


def test_splice_keeps_short_and_single_character_overlaps() -> None:
    assert splice("Hel", "lo") == "lo"  # "l" + "lo": the answer's own letters
    assert splice("Wow", "ow!") == "ow!"  # shorter than MIN_OVERLAP
    assert MIN_OVERLAP == 3
    assert splice("code:\n    ", "    return x") == "    return x"  # a run of spaces
    assert splice("-----", "-----") == "-----"
    assert splice("ab", "ab cd") == "ab cd"  # the partial is shorter than the minimum
    assert splice("bana", "nana") == "nana"  # banana: a 2-character overlap is kept
    assert splice("The quick bro", "brown fox") == "wn fox"  # a cut word restarted


def test_splicer_holds_back_only_what_may_still_repeat() -> None:
    splicer = Splicer("Hello from the rep")
    assert splicer.push("the") == ""  # could be the start of "the rep"
    assert splicer.held == "the"
    assert splicer.push(" re") == ""
    assert splicer.push("plica") == "lica"  # "the rep" was a repeat: out
    assert splicer.push(" says") == " says"  # decided: passes through untouched
    assert splicer.flush() == ""

    splicer = Splicer("Hello from the rep")
    assert splicer.push("lica") == "lica"  # no repeat possible: released at once
    splicer = Splicer("Hello from the rep")
    assert splicer.push("the r") == ""
    assert splicer.flush() == "the r"  # ended while undecided, and not a whole repeat


@given(
    answer=st.text(min_size=1, max_size=60),
    data=st.data(),
)
def test_splice_reassembles_the_answer(answer: str, data: st.DataObject) -> None:
    """For any answer, break point and repeated tail (none, or at least MIN_OVERLAP
    characters that are not one character repeated), the spliced answer is exact,
    unless the answer itself makes the repeat ambiguous (a longer repeat of its end)."""
    split = data.draw(st.integers(0, len(answer)))
    partial, rest = answer[:split], answer[split:]
    repeat = data.draw(st.sampled_from([0, *range(MIN_OVERLAP, split + 1)]))
    tail = partial[split - repeat :]
    assume(repeat == 0 or tail != tail[0] * repeat)
    continuation = tail + rest
    # ambiguous: the continuation repeats more of the partial than the tail
    assume(
        not any(
            partial.endswith(continuation[:length])
            for length in range(max(MIN_OVERLAP, repeat + 1), len(continuation) + 1)
            if length <= len(partial)
        )
    )
    assert partial + splice(partial, continuation) == answer
    cuts = data.draw(st.lists(st.integers(0, len(continuation)), max_size=6))
    assert partial + streamed(partial, continuation, cuts) == answer


@given(st.text(max_size=40), st.text(max_size=40), st.lists(st.integers(0, 40), max_size=8))
def test_streaming_splice_equals_whole_splice(partial: str, continuation: str, cuts: list) -> None:
    cuts = [min(cut, len(continuation)) for cut in cuts]
    assert streamed(partial, continuation, cuts) == splice(partial, continuation)
    assert overlap(partial, continuation) + len(splice(partial, continuation)) == len(continuation)


def test_continuation_messages_layout() -> None:
    conversation = [HumanMessage("Tell me")]
    messages = continuation_messages(conversation, "Once upon")
    assert messages[:1] == conversation
    assert isinstance(messages[1], AIMessage)
    assert messages[1].content == "Once upon"
    assert isinstance(messages[2], HumanMessage)
    assert messages[2].content == CONTINUE_INSTRUCTION


# --- the router, end to end --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_replica(request: pytest.FixtureRequest) -> None:
    if "replica" in request.fixturenames:
        request.getfixturevalue("replica").reset()


def chat(replica: Replica, name: str, **kwargs: Any) -> ChatG4F:
    kwargs.setdefault("timeout", 2.0)
    return ChatG4F(provider=name, base_url=replica.base_url(name), **kwargs)


def router_of(replica: Replica, *names: str, **kwargs: Any) -> ChatG4FRouter:
    kwargs.setdefault("strategy", "priority")
    kwargs.setdefault("backoff", 0.01)
    kwargs.setdefault("timeout", 5.0)
    return ChatG4FRouter(providers=[chat(replica, name) for name in names], **kwargs)


def expected(prompt: str) -> str:
    return reply_for([{"role": "user", "content": prompt}])


async def ask(router: ChatG4FRouter, prompt: str, mode: str) -> tuple[Any, list[str]]:
    """The answer (LangChain's own merge of the chunks when streaming) and the pieces."""
    pieces: list[str] = []
    if mode == "sync-invoke":
        return router.invoke(prompt), pieces
    if mode == "async-invoke":
        return await router.ainvoke(prompt), pieces
    if mode == "sync-stream":
        chunks = list(router.stream(prompt))
    else:
        chunks = [chunk async for chunk in router.astream(prompt)]
    pieces = [chunk.content for chunk in chunks]
    assert sum(1 for chunk in chunks if chunk.response_metadata.get("segments")) <= 1
    return reduce(operator.add, chunks), pieces


def requested(replica: Replica) -> Counter:
    return Counter(entry["provider"] for entry in replica.requests)


def continuation_requests(replica: Replica) -> list[list[dict]]:
    return [
        entry["json"]["messages"]
        for entry in replica.requests
        if entry["json"]["messages"][-1]["content"] == CONTINUE_INSTRUCTION
    ]


def assert_exact(message: Any, pieces: list[str], prompt: str) -> None:
    assert message.content == expected(prompt)  # nothing lost, nothing repeated
    if pieces:
        assert "".join(pieces) == expected(prompt)


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_break_at_the_first_piece_is_continued_elsewhere(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "error_event", after_chars=3)  # "Hel" of "Hello"
    router = router_of(replica, "Mishalsgpt", "Lockchat")
    prompt = "first piece"

    message, pieces = await ask(router, prompt, mode)

    assert_exact(message, pieces, prompt)
    metadata = message.response_metadata
    assert metadata["provider"] == "Lockchat"
    assert metadata["segments"] == [
        {"provider": "Mishalsgpt", "chars": 3},
        {"provider": "Lockchat", "chars": len(expected(prompt)) - 3},
    ]
    assert [a["provider"] for a in metadata["attempts"]] == ["Mishalsgpt"]
    assert metadata["attempts"][0]["error"] == "ProviderResponseError"
    assert requested(replica) == {"mishalsgpt": 1, "lockchat": 1}
    [asked] = continuation_requests(replica)
    assert asked == [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": "Hel"},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    stats = router.stats()
    assert stats["Mishalsgpt"]["failures"] == 1
    assert stats["Mishalsgpt"]["successes"] == 0
    assert stats["Lockchat"]["successes"] == 1


class ContinueEvents(BaseCallbackHandler):
    def __init__(self) -> None:
        self.custom: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
        self.custom.append((name, data))


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_a_continued_answer_is_a_g4f_continue_event(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "error_event", after_chars=3)
    events = ContinueEvents()
    router = router_of(replica, "Mishalsgpt", "Lockchat").with_config(callbacks=[events])

    message, pieces = await ask(router, "events", mode)  # type: ignore[arg-type]

    assert_exact(message, pieces, "events")
    assert [name for name, _ in events.custom] == ["g4f_attempt", "g4f_continue"]
    assert events.custom[1][1] == {"provider": "Lockchat", "after": "Mishalsgpt", "chars": 3}


@pytest.mark.loopback
async def test_a_restart_with_no_text_given_is_no_g4f_continue_event(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "http_503")
    events = ContinueEvents()
    router = router_of(replica, "Mishalsgpt", "Lockchat")

    await router.ainvoke("no text yet", config={"callbacks": [events]})

    assert [name for name, _ in events.custom] == ["g4f_attempt"]


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_break_inside_a_multibyte_character(replica: Replica, mode: str, fault: str) -> None:
    prompt = "em dash"
    dash = expected(prompt).index("—")
    # The stream ends with the event carrying the em dash cut inside its UTF-8 bytes:
    # the connection is reset, or stalls until the read times out.
    replica.set_fault("Mishalsgpt", fault, after_chars=dash, delay=5)
    first = chat(replica, "Mishalsgpt", timeout=0.5)
    router = ChatG4FRouter(providers=[first, chat(replica, "Lockchat")], strategy="priority")

    message, pieces = await ask(router, prompt, mode)

    assert_exact(message, pieces, prompt)
    segments = message.response_metadata["segments"]
    assert [s["provider"] for s in segments] == ["Mishalsgpt", "Lockchat"]
    if fault == "stall":
        assert segments[0]["chars"] == dash  # all of it read before the stall
    else:
        assert 0 < segments[0]["chars"] <= dash  # a reset may drop unread bytes
    assert sum(s["chars"] for s in segments) == len(expected(prompt))
    [asked] = continuation_requests(replica)
    assert asked[-2]["content"] == expected(prompt)[: segments[0]["chars"]]


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_continuations_that_repeat_the_tail_and_break_again(
    replica: Replica, mode: str
) -> None:
    prompt = "a longer question, so the answer has room to break twice"
    answer = expected(prompt)
    replica.set_repeat_tail(None, 6)  # every continuation repeats 6 characters first
    replica.set_fault("Mishalsgpt", "error_event", after_chars=9)
    replica.set_fault("Lockchat", "error_event", after_chars=6 + 5)  # the repeat, 5 new
    router = router_of(replica, "Mishalsgpt", "Lockchat", "Gravityengine")

    message, pieces = await ask(router, prompt, mode)

    assert_exact(message, pieces, prompt)
    assert message.response_metadata["provider"] == "Gravityengine"
    assert message.response_metadata["segments"] == [
        {"provider": "Mishalsgpt", "chars": 9},
        {"provider": "Lockchat", "chars": 5},
        {"provider": "Gravityengine", "chars": len(answer) - 14},
    ]
    first, second = continuation_requests(replica)
    assert first[-2]["content"] == answer[:9]
    assert second[-2]["content"] == answer[:14]
    assert first[:-2] == second[:-2] == [{"role": "user", "content": prompt}]


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync-stream", "async-invoke"])
async def test_a_continuation_that_restarts_the_whole_answer(replica: Replica, mode: str) -> None:
    prompt = "start over"
    replica.set_repeat_tail("Lockchat", 10_000)  # the whole partial answer again
    replica.set_fault("Mishalsgpt", "error_event", after_chars=20)
    router = router_of(replica, "Mishalsgpt", "Lockchat")

    message, pieces = await ask(router, prompt, mode)

    assert_exact(message, pieces, prompt)
    assert message.response_metadata["segments"][1]["chars"] == len(expected(prompt)) - 20


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_the_only_provider_continues_its_own_answer(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "error_event", times=1, after_chars=5)
    router = router_of(replica, "Mishalsgpt", max_retries=1)
    prompt = "alone"

    message, pieces = await ask(router, prompt, mode)

    assert_exact(message, pieces, prompt)
    assert message.response_metadata["segments"] == [
        {"provider": "Mishalsgpt", "chars": 5},
        {"provider": "Mishalsgpt", "chars": len(expected(prompt)) - 5},
    ]
    assert requested(replica) == {"mishalsgpt": 2}


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_on_interrupt_raise_keeps_the_partial_text(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "error_event", after_chars=7)
    router = router_of(replica, "Mishalsgpt", "Lockchat", on_interrupt="raise")

    with pytest.raises(StreamInterruptedError) as info:
        await ask(router, "raise", mode)

    assert info.value.partial_text == expected("raise")[:7]
    assert info.value.provider == "Mishalsgpt"
    assert requested(replica) == {"mishalsgpt": 1}


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_nobody_left_to_continue_raises_with_all_the_text(
    replica: Replica, mode: str
) -> None:
    replica.set_fault("Mishalsgpt", "error_event", after_chars=5)
    replica.set_fault("Lockchat", "error_event", after_chars=4)
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=0)
    pieces: list[str] = []

    async def run() -> None:
        if mode == "sync-stream":
            pieces.extend(chunk.content for chunk in router.stream("x"))
        elif mode == "async-stream":
            pieces.extend([chunk.content async for chunk in router.astream("x")])
        else:
            await ask(router, "x", mode)

    with pytest.raises(StreamInterruptedError) as info:
        await run()

    assert info.value.partial_text == expected("x")[:9]
    assert info.value.provider == "Lockchat"
    assert "no provider is left" in str(info.value)
    if pieces:
        assert "".join(pieces) == info.value.partial_text


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync-invoke", "async-stream"])
async def test_a_continuation_that_cannot_start_raises_with_the_partial(
    replica: Replica, mode: str
) -> None:
    replica.set_fault("Mishalsgpt", "error_event", after_chars=5)
    replica.set_fault("Lockchat", "http_500")
    router = router_of(replica, "Mishalsgpt", "Lockchat", max_retries=0)

    with pytest.raises(StreamInterruptedError) as info:
        await ask(router, "x", mode)

    assert info.value.partial_text == expected("x")[:5]
    assert "no provider could continue it" in str(info.value)
    assert isinstance(info.value.__cause__, AllProvidersFailedError)


def native_chat(replica: Replica) -> ChatG4F:
    provider = OpenAICompatible("native", replica.base_url("openai") + "/v1", native_tools=True)
    return ChatG4F(provider=provider, model="m", timeout=2.0)


def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync-stream", "async-stream", "sync-invoke"])
async def test_a_broken_tool_call_restarts_cleanly(replica: Replica, mode: str) -> None:
    # Two entries on one route; the first request breaks inside its tool-call fragments.
    replica.set_fault("openai", "error_event", times=1, after_chunks=2)
    router = ChatG4FRouter(providers=[native_chat(replica), native_chat(replica)])
    llm = router.bind_tools([get_weather])
    prompt = "What is the weather in Paris?"

    if mode == "sync-invoke":
        message = llm.invoke(prompt)
    elif mode == "sync-stream":
        message = reduce(operator.add, list(llm.stream(prompt)))
    else:
        message = reduce(operator.add, [chunk async for chunk in llm.astream(prompt)])

    assert message.content == ""
    assert [(call["name"], call["args"]) for call in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert message.response_metadata["provider"] == "native#2"
    assert "segments" not in message.response_metadata
    assert len(replica.requests) == 2
    assert continuation_requests(replica) == []  # restarted, not continued
    assert replica.requests[0]["json"]["messages"] == replica.requests[1]["json"]["messages"]


# --- cancellations by the caller ---------------------------------------------------------


class Recorder:
    """Wraps a router's health to record cancellations."""

    def __init__(self, router: ChatG4FRouter) -> None:
        self.cancelled: list[str] = []
        health = router._health
        original = health.record_cancelled

        def record_cancelled(key: str, token: float = 0.0) -> None:
            self.cancelled.append(key)
            original(key, token)

        health.record_cancelled = record_cancelled  # type: ignore[method-assign]


def assert_neither(router: ChatG4FRouter, key: str) -> None:
    stats = router.stats()[key]
    assert stats["successes"] == 0
    assert stats["failures"] == 0


@pytest.mark.loopback
def test_a_sync_stream_closed_by_the_caller_is_a_cancellation(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "slow", delay=0.05)
    router = router_of(replica, "Mishalsgpt", "Lockchat")
    recorder = Recorder(router)

    for chunk in router.stream("abandon me"):
        if chunk.content:
            break  # the caller leaves: the generator is closed

    assert recorder.cancelled == ["Mishalsgpt"]
    assert_neither(router, "Mishalsgpt")


@pytest.mark.loopback
def test_a_sync_generator_closed_explicitly_is_a_cancellation(replica: Replica) -> None:
    router = router_of(replica, "Mishalsgpt")
    recorder = Recorder(router)
    stream = router._stream([HumanMessage("close me")])
    next(stream)
    stream.close()
    assert recorder.cancelled == ["Mishalsgpt"]
    assert_neither(router, "Mishalsgpt")


@pytest.mark.loopback
def test_a_completed_stream_is_a_success_not_a_cancellation(replica: Replica) -> None:
    router = router_of(replica, "Mishalsgpt")
    recorder = Recorder(router)
    for chunk in router.stream("all of it"):
        if chunk.response_metadata.get("finish_reason"):
            break  # the caller leaves after the last chunk
    assert recorder.cancelled == []
    assert router.stats()["Mishalsgpt"]["successes"] == 1


@pytest.mark.loopback
async def test_an_async_task_cancelled_mid_stream_is_a_cancellation(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "slow", delay=0.2)
    router = router_of(replica, "Mishalsgpt", "Lockchat")
    recorder = Recorder(router)
    started = asyncio.Event()

    async def consume() -> None:
        async for chunk in router.astream("cancel me"):
            if chunk.content:
                started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert recorder.cancelled == ["Mishalsgpt"]
    assert_neither(router, "Mishalsgpt")


@pytest.mark.loopback
@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is Python 3.11+")
async def test_an_asyncio_timeout_mid_stream_is_a_cancellation(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "slow", delay=0.2)
    router = router_of(replica, "Mishalsgpt", "Lockchat")
    recorder = Recorder(router)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await router.ainvoke("too slow for the caller")

    assert recorder.cancelled == ["Mishalsgpt"]
    assert_neither(router, "Mishalsgpt")


@pytest.mark.loopback
async def test_an_async_generator_closed_by_the_caller_is_a_cancellation(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "slow", delay=0.05)
    router = router_of(replica, "Mishalsgpt")
    recorder = Recorder(router)
    stream = router.astream("leave early")
    async for chunk in stream:
        if chunk.content:
            break
    await stream.aclose()
    assert recorder.cancelled == ["Mishalsgpt"]
    assert_neither(router, "Mishalsgpt")


@pytest.mark.loopback
async def test_cancelled_before_the_first_text_is_a_cancellation(replica: Replica) -> None:
    replica.set_fault("Mishalsgpt", "hang", delay=5)
    router = router_of(replica, "Mishalsgpt")
    recorder = Recorder(router)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(router.ainvoke("never answered"), 0.3)

    assert recorder.cancelled == ["Mishalsgpt"]
    assert_neither(router, "Mishalsgpt")


# --- losers closed at once ---------------------------------------------------------------


class Loser:
    """An SSE endpoint that never gives text, and records when its client hangs up.

    ``mode``: ``"keepalive"`` sends an SSE comment every 50 ms; ``"stalled"`` stalls
    after the response headers and one comment (a read blocked mid-stream);
    ``"silent"`` never answers the request (a wait for the response headers).
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connected = threading.Event()
        self.hung_up = threading.Event()
        self.hung_up_at = 0.0  # time.monotonic() when it saw the client leave
        self.stopped = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn:
            conn.recv(65536)  # the request (small, in one read on loopback)
            self.connected.set()
            if self.mode != "silent":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + self._comment()
                )
            while not self.stopped.is_set():
                readable, _, _ = select.select([conn], [], [], 0.05)
                try:
                    if readable and not conn.recv(1024):
                        break  # the client closed its side
                    if self.mode == "keepalive":
                        conn.sendall(self._comment())
                except OSError:
                    break
            else:
                return
        self.hung_up_at = time.monotonic()
        self.hung_up.set()

    @staticmethod
    def _comment() -> bytes:
        data = b": keep-alive\n\n"
        return b"%x\r\n%b\r\n" % (len(data), data)

    def chat(self, timeout: float = 20.0) -> ChatG4F:
        provider = OpenAICompatible("loser", self.url)
        return ChatG4F(provider=provider, model="m", timeout=timeout)

    def close(self) -> None:
        self.stopped.set()
        self._server.close()


@pytest.fixture(params=["keepalive", "stalled", "silent"])
def loser(request: pytest.FixtureRequest) -> Iterator[Loser]:
    server = Loser(request.param)
    yield server
    server.close()


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "g4f-router-loser"]


def wait_for(condition: Any, seconds: float = 10.0) -> bool:
    """Poll ``condition`` for up to ``seconds`` (well under the loser's 20 s read timeout)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync-invoke", "async-invoke"])
async def test_a_hedge_loser_is_hung_up_on_at_once(
    replica: Replica, loser: Loser, mode: str
) -> None:
    router = ChatG4FRouter(
        providers=[loser.chat(), chat(replica, "Lockchat")], strategy="priority", hedge_after=0.1
    )
    message, _ = await ask(router, "win", mode)

    assert message.response_metadata["provider"] == "Lockchat"
    assert loser.connected.is_set()
    # The server sees the client leave long before the loser's 20 s read timeout.
    assert await asyncio.to_thread(loser.hung_up.wait, 10.0)
    assert await asyncio.to_thread(wait_for, lambda: not worker_threads())


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync-stream", "async-stream"])
async def test_an_attempt_past_the_deadline_is_hung_up_on_at_once(loser: Loser, mode: str) -> None:
    router = ChatG4FRouter(providers=[loser.chat()], timeout=0.3)

    with pytest.raises(AllProvidersFailedError):
        await ask(router, "too late", mode)

    assert await asyncio.to_thread(loser.hung_up.wait, 10.0)
    assert await asyncio.to_thread(wait_for, lambda: not worker_threads())


# Finding 4, sync: the loser's side is closed by the winner's, well before its 3 s read
# timeout (within 0.5 s), whatever the loser sends; threads end with it.


@pytest.mark.loopback
def test_a_sync_hedge_loser_is_closed_within_half_a_second(replica: Replica, loser: Loser) -> None:
    router = ChatG4FRouter(
        providers=[loser.chat(timeout=3.0), chat(replica, "Lockchat")],
        strategy="priority",
        hedge_after=0.2,
    )
    first_text = None
    for chunk in router.stream("win"):
        if chunk.content and first_text is None:
            first_text = time.monotonic()

    assert first_text is not None
    assert loser.hung_up.wait(10.0)
    assert loser.hung_up_at - first_text < 0.5
    assert wait_for(lambda: not worker_threads(), 0.5)


@pytest.mark.loopback
def test_a_sync_attempt_past_the_deadline_loses_its_connection_and_thread(loser: Loser) -> None:
    router = ChatG4FRouter(providers=[loser.chat(timeout=3.0)], timeout=0.3)

    with pytest.raises(AllProvidersFailedError):
        list(router.stream("too late"))
    failed_at = time.monotonic()

    assert loser.hung_up.wait(10.0)
    assert loser.hung_up_at - failed_at < 0.5
    assert wait_for(lambda: not worker_threads(), 0.5)


@pytest.mark.loopback
def test_a_sync_hedge_loser_ends_its_thread_after_a_break(replica: Replica, loser: Loser) -> None:
    router = ChatG4FRouter(
        providers=[loser.chat(timeout=3.0), chat(replica, "Lockchat")],
        strategy="priority",
        hedge_after=0.2,
    )
    stream = router.stream("win")
    for chunk in stream:
        if chunk.content:
            break
    broke_at = time.monotonic()

    assert wait_for(lambda: not worker_threads(), 0.5)
    assert loser.hung_up.wait(10.0)
    assert loser.hung_up_at - broke_at < 0.5
    stream.close()


# --- the replica's continuations and breaks ----------------------------------------------


def post(replica: Replica, messages: list[dict], stream: bool = False) -> Any:
    import requests

    url = replica.base_url("Lockchat") + "/v1/chat/completions"
    body = {"model": "gpt-4", "messages": messages, "stream": stream}
    return requests.post(url, json=body, stream=stream, timeout=5)


@pytest.mark.loopback
def test_the_replica_answers_a_continuation_with_the_rest(replica: Replica) -> None:
    asked = [{"role": "user", "content": "go on"}]
    answer = expected("go on")
    partial = answer[:13]
    continuation = [
        *asked,
        {"role": "assistant", "content": partial},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    rest = post(replica, continuation).json()["choices"][0]["message"]["content"]
    assert rest == answer[13:]

    replica.set_repeat_tail("Lockchat", 5)
    rest = post(replica, continuation).json()["choices"][0]["message"]["content"]
    assert rest == partial[-5:] + answer[13:]
    replica.set_repeat_tail("Mishalsgpt", 2)  # another provider's setting: no change here
    replica.set_repeat_tail("Lockchat", 0)
    rest = post(replica, continuation).json()["choices"][0]["message"]["content"]
    assert rest == answer[13:]


@pytest.mark.loopback
def test_the_replica_breaks_after_a_number_of_characters(replica: Replica) -> None:
    import json

    answer = expected("cut")
    dash = answer.index("—")
    replica.set_fault("Lockchat", "error_event", after_chars=dash + 1)
    body = post(replica, [{"role": "user", "content": "cut"}], stream=True).content.decode()
    texts = [
        event["choices"][0]["delta"].get("content") or ""
        for line in body.splitlines()
        if line.startswith("data: {") and "choices" in (event := json.loads(line[6:]))
    ]
    assert "".join(texts) == answer[: dash + 1]
    assert "upstream overloaded" in body

    # the start of the next event goes out cut inside the em dash's UTF-8 bytes
    replica.set_fault("Lockchat", "stall", after_chars=dash, delay=0.2)
    with socket.create_connection(("127.0.0.1", int(replica.url.rsplit(":", 1)[1]))) as sock:
        payload = json.dumps(
            {"model": "gpt-4", "messages": [{"role": "user", "content": "cut"}], "stream": True}
        ).encode()
        sock.sendall(
            b"POST /lockchat/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (len(payload), payload)
        )
        received = b""
        while data := sock.recv(65536):  # until the stall ends and the server hangs up
            received += data
    assert received.endswith("—".encode()[:1])  # a torn multi-byte character
    assert b'"content": "' + "—".encode() not in received


# --- streams that stall after their text started ------------------------------------------


def stall_watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "g4f-router-stall-watchdog"]


def own_threads() -> set[threading.Thread]:
    """The package's threads (the replica's handlers live as long as their connections)."""
    return {t for t in threading.enumerate() if t.name.startswith("g4f-")}


def stall_timers() -> list[Any]:
    """Stall timers still scheduled on the running loop."""
    loop = asyncio.get_running_loop()
    return [
        handle
        for handle in loop._scheduled  # type: ignore[attr-defined]
        if not handle.cancelled()
        and isinstance(getattr(handle._callback, "__self__", None), AWatched)
    ]


def test_the_auto_stall_limit_adapts_to_the_longest_wait() -> None:
    limit = StallLimit(None)
    assert limit.seconds() == FLOOR
    limit.waited(0.1)
    assert limit.seconds() == FLOOR  # 4 x 0.1 is below the floor
    limit.waited(2.0)
    limit.waited(0.5)
    assert limit.seconds() == FACTOR * 2.0  # the longest wait counts
    fixed = StallLimit(0.7)
    fixed.waited(5.0)
    assert fixed.seconds() == 0.7


@pytest.mark.parametrize("value", ["fast", "", -1, 0, True, float("inf"), float("nan"), [1]])
def test_stall_after_is_validated(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="stall_after"):
        ChatG4FRouter(providers=["Lockchat"], stall_after=value)


@pytest.mark.parametrize("value", ["auto", None, 2, 0.5])
def test_stall_after_accepts_auto_a_number_or_none(value: Any) -> None:
    assert ChatG4FRouter(providers=["Lockchat"], stall_after=value).stall_after == value


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_a_stream_stalled_after_text_is_continued_at_once(
    replica: Replica, mode: str
) -> None:
    prompt = "a stream that stalls in the middle of its answer"
    replica.set_fault("Mishalsgpt", "stall", after_chars=12, delay=30)
    read_timeout = 20.0
    first = chat(replica, "Mishalsgpt", timeout=read_timeout)
    router = ChatG4FRouter(providers=[first, chat(replica, "Lockchat")], strategy="priority")
    threads = own_threads()
    started = time.monotonic()

    message, pieces = await ask(router, prompt, mode)

    took = time.monotonic() - started
    assert_exact(message, pieces, prompt)
    metadata = message.response_metadata
    assert metadata["segments"] == [
        {"provider": "Mishalsgpt", "chars": 12},
        {"provider": "Lockchat", "chars": len(expected(prompt)) - 12},
    ]
    [stalled] = metadata["attempts"]
    assert stalled["provider"] == "Mishalsgpt"
    assert stalled["error"] == "ProviderTimeoutError"
    assert "stalled" in stalled["message"]
    assert took < read_timeout / 2  # noticed by the stall limit, not the read timeout
    stats = router.stats()
    assert stats["Mishalsgpt"]["failures"] == 1
    assert stats["Lockchat"]["successes"] == 1
    # no thread or timer outlives the call
    assert await asyncio.to_thread(wait_for, lambda: not stall_watchdogs())
    assert await asyncio.to_thread(wait_for, lambda: own_threads() <= threads)
    assert not stall_timers()
    if sys.version_info >= (3, 11):  # 3.10 keeps no count
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@pytest.mark.loopback
@pytest.mark.parametrize("mode", MODES)
async def test_a_stall_with_on_interrupt_raise_keeps_the_partial(
    replica: Replica, mode: str
) -> None:
    replica.set_fault("Mishalsgpt", "stall", after_chars=8, delay=30)
    first = chat(replica, "Mishalsgpt", timeout=20.0)
    router = ChatG4FRouter(
        providers=[first, chat(replica, "Lockchat")], on_interrupt="raise", stall_after=0.3
    )

    with pytest.raises(StreamInterruptedError) as info:
        await ask(router, "raise on a stall", mode)

    assert info.value.partial_text == expected("raise on a stall")[:8]
    assert info.value.provider == "Mishalsgpt"
    assert isinstance(info.value.__cause__, ProviderTimeoutError)
    assert requested(replica) == {"mishalsgpt": 1}
    assert router.stats()["Mishalsgpt"]["failures"] == 1


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync-stream", "async-invoke"])
async def test_without_a_stall_limit_the_read_timeout_decides(replica: Replica, mode: str) -> None:
    replica.set_fault("Mishalsgpt", "stall", after_chars=8, delay=30)
    first = chat(replica, "Mishalsgpt", timeout=0.5)
    router = ChatG4FRouter(
        providers=[first, chat(replica, "Lockchat")], strategy="priority", stall_after=None
    )

    message, pieces = await ask(router, "no stall limit", mode)

    assert_exact(message, pieces, "no stall limit")
    [stalled] = message.response_metadata["attempts"]
    assert stalled["error"] == "ProviderTimeoutError"
    assert "timeout=0.5s" in stalled["message"]  # the model's own read timeout


class Steady:
    """An SSE endpoint that streams ``pieces`` with the given waits before each."""

    def __init__(self, pieces: list[str], waits: list[float]) -> None:
        self.pieces, self.waits = pieces, waits
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/v1"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                )
                try:
                    for piece, wait in zip(self.pieces, self.waits, strict=True):
                        time.sleep(wait)
                        delta = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                        conn.sendall(self._event(json.dumps(delta)))
                    conn.sendall(self._event("[DONE]") + b"0\r\n\r\n")
                except OSError:
                    pass

    @staticmethod
    def _event(data: str) -> bytes:
        event = f"data: {data}\n\n".encode()
        return b"%x\r\n%b\r\n" % (len(event), event)

    def chat(self) -> ChatG4F:
        return ChatG4F(provider=OpenAICompatible("steady", self.url), model="m", timeout=20.0)

    def close(self) -> None:
        self._server.close()


@pytest.mark.loopback
@pytest.mark.parametrize("mode", ["sync-stream", "async-stream"])
async def test_a_slow_but_steady_stream_is_not_cut(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_stall, "FLOOR", 0.2)  # the same rule, on a shorter scale
    pieces = ["One", " two", " three", " four", " five"]
    waits = [0.0, 0.05, 0.15, 0.4, 0.9]  # each below 4x the longest before it
    server = Steady(pieces, waits)
    try:
        router = ChatG4FRouter(providers=[server.chat()])
        message, _ = await ask(router, "steady", mode)
        assert message.content == "".join(pieces)
        assert message.response_metadata["attempts"] == []

        # A fixed limit below the longest wait cuts the same stream.
        router = ChatG4FRouter(providers=[server.chat()], stall_after=0.3)
        with pytest.raises(StreamInterruptedError) as info:
            await ask(router, "steady", mode)
        assert info.value.partial_text == "One two three"
        assert isinstance(info.value.__cause__, ProviderTimeoutError)
    finally:
        server.close()


@pytest.mark.loopback
@pytest.mark.parametrize("finisher", ["Mishalsgpt", "Gravityengine", "Aichat"])
@pytest.mark.parametrize("mode", MODES)
async def test_every_replica_route_continues_the_answer_it_was_giving(
    replica: Replica, finisher: str, mode: str
) -> None:
    """The playground continues on each route; Aichat's flattened prompt included."""
    replica.set_fault("Lockchat", "error_event", after_chars=7)
    router = router_of(replica, "Lockchat", finisher, max_retries=0)
    message, pieces = await ask(router, "Tell me about lighthouses", mode)
    assert_exact(message, pieces, "Tell me about lighthouses")
    assert CONTINUE_INSTRUCTION not in message.content
    assert [s["provider"] for s in message.response_metadata["segments"]] == [
        "Lockchat",
        finisher,
    ]
