"""The routing benchmark's pool: deterministic answers, exact continuations, seeded fates."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_g4f import ChatG4F
from langchain_g4f.continuation import CONTINUE_INSTRUCTION
from langchain_g4f.providers import OpenAICompatible

_spec = importlib.util.spec_from_file_location(
    "bench_pool", Path(__file__).resolve().parents[2] / "bench" / "pool.py"
)
assert _spec
assert _spec.loader
pool = importlib.util.module_from_spec(_spec)
sys.modules["bench_pool"] = pool  # dataclasses resolve their module by name
_spec.loader.exec_module(pool)


def continuation(prompt: str, partial: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": partial},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]


def repeated_tail(partial: str, reply: str, answer: str) -> str:
    """What ``reply`` repeats of the partial before the rest of ``answer``."""
    rest = answer[len(partial) :]
    assert reply.endswith(rest)
    head = reply[: len(reply) - len(rest)]
    assert partial.endswith(head)
    return head


def test_the_answer_is_fixed_by_the_prompt() -> None:
    answer = pool.expected_answer("question 417")
    assert answer == pool.expected_answer("question 417")
    assert answer != pool.expected_answer("question 418")
    assert 30 <= len(answer.split()) <= 60
    assert answer.endswith(".")


def test_pieces_join_to_the_text() -> None:
    text = " " + pool.expected_answer("question 3") + "  tail"
    chunks = pool.pieces(text, random.Random(0))
    assert "".join(chunks) == text
    assert len(chunks) > 10


@pytest.mark.parametrize("cut", [0, 1, 7, 40, 120, 10_000])
def test_a_continuation_gives_the_rest_of_the_answer(cut: int) -> None:
    prompt = "question 42"
    answer = pool.expected_answer(prompt)
    partial = answer[:cut]
    repeated = 0
    for draw in range(50):
        reply = pool.reply_text(continuation(prompt, partial), random.Random(draw))
        head = repeated_tail(partial, reply, answer)
        if head:  # whole words (a cut word counts), at least three characters
            assert len(head) >= 3
            assert len(head.split()) <= 3
            assert partial[: len(partial) - len(head)][-1:] in ("", " ")
        assert partial + reply[len(head) :] == answer
        repeated += bool(head)
    if len(partial) >= 3:
        assert 0 < repeated < 50  # some continuations repeat a tail, most do not


def test_a_continuation_follows_the_last_user_message_before_the_partial() -> None:
    messages = [
        {"role": "user", "content": "question 1"},
        {"role": "assistant", "content": pool.expected_answer("question 1")},
        *continuation("question 2", pool.expected_answer("question 2")[:30]),
    ]
    reply = pool.reply_text(messages, random.Random(5))
    assert reply.endswith(pool.expected_answer("question 2")[30:])


def test_fates_are_seeded_and_follow_the_failure_rate() -> None:
    messages = [{"role": "user", "content": "question 9"}]
    never = pool.ProviderSpec("never", 0.0, 0.1)
    always = pool.ProviderSpec("always", 1.0, 0.1)
    assert pool.draw_fate(always, messages, random.Random("x")) == pool.draw_fate(
        always, messages, random.Random("x")
    )
    assert {pool.draw_fate(never, messages, random.Random(i)).kind for i in range(200)} == {"ok"}
    kinds = {pool.draw_fate(always, messages, random.Random(i)).kind for i in range(200)}
    assert kinds == set(pool.FAILURES)


@pytest.mark.loopback
async def test_the_pool_streams_answers_and_continuations() -> None:
    server_pool = pool.Pool(
        seed=1,
        stall=1.0,
        words_per_second=10_000,
        providers=(pool.ProviderSpec("ok", 0.0, 0.001),),
    )
    server = await server_pool.start()
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/ok/v1"
    chat = ChatG4F(provider=OpenAICompatible("ok", url), model="bench-t", max_retries=0)
    try:
        answer = pool.expected_answer("question 7")
        text = "".join([chunk.content async for chunk in chat.astream("question 7")])
        assert text == answer
        partial = answer[:25]
        reply = (
            await chat.ainvoke(
                [HumanMessage("question 7"), AIMessage(partial), HumanMessage(CONTINUE_INSTRUCTION)]
            )
        ).content
        assert partial + reply[len(repeated_tail(partial, reply, answer)) :] == answer
        assert server_pool.requests["t"]["ok"] == 2
        assert server_pool.continuations["t"]["ok"] == 1
    finally:
        server.close()
        # From Python 3.12.1 on, wait_closed also waits for every client connection (the
        # chat model keeps one alive); 3.13 can close them, 3.12 leaves them to the loop.
        if hasattr(server, "close_clients"):
            server.close_clients()
            await server.wait_closed()
