"""A soak over the playground: many calls, random faults on every route.

Every call ends in the exact answer (each character once, whichever providers wrote
it) or in a typed error of the package: nothing else, nothing in between.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from langchain_g4f import ChatG4F, ChatG4FRouter
from langchain_g4f.errors import G4FError
from langchain_g4f.testing import Replica, reply_for
from langchain_g4f.testing import replica as replica_module

pytestmark = pytest.mark.loopback

SEEDS = ("Mishalsgpt", "Gravityengine", "Lockchat", "Aichat")
#: Faults that answer at once (the slow ones only slow a soak down, not test it more).
FAULTS = tuple(f for f in replica_module.FAULTS if f not in ("hang", "stall", "slow"))
CALLS = 240


def faults_for(rng: random.Random) -> dict[str, tuple[str, dict[str, Any]]]:
    """For each route, with probability 0.4, one fault for its next request."""
    chosen = {}
    for name in SEEDS:
        if rng.random() < 0.4:
            fault = rng.choice(FAULTS)
            options: dict[str, Any] = {"retry_after": 0}
            if fault in ("reset", "error_event", "truncated_json"):
                options = {"after_chars": rng.randint(1, 30)}
            chosen[name] = (fault, options)
    return chosen


@pytest.mark.parametrize("seed", [1, 2])
async def test_every_answer_is_exact_or_a_typed_error(replica: Replica, seed: int) -> None:
    rng = random.Random(seed)
    replica.reset()
    router = ChatG4FRouter(
        providers=[ChatG4F(provider=n, base_url=replica.base_url(n)) for n in SEEDS],
        backoff=0.01,
        timeout=10,
        cooldown=0.05,
        max_cooldown=0.2,
    )
    outcomes: dict[str, int] = {"exact": 0, "typed error": 0}
    for call in range(CALLS):
        for name, (fault, options) in faults_for(rng).items():
            replica.set_fault(name, fault, times=1, **options)
        prompt = f"soak {seed}-{call}: tell me about lighthouses and the sea"
        mode = call % 4
        try:
            if mode == 0:
                text = router.invoke(prompt).content
            elif mode == 1:
                text = "".join(chunk.content for chunk in router.stream(prompt))
            elif mode == 2:
                text = (await router.ainvoke(prompt)).content
            else:
                text = "".join([chunk.content async for chunk in router.astream(prompt)])
        except G4FError:
            outcomes["typed error"] += 1
        else:
            assert text == reply_for([{"role": "user", "content": prompt}]), (call, text)
            outcomes["exact"] += 1
        for name in SEEDS:
            replica.set_fault(name, None)
    assert outcomes["exact"] > CALLS * 0.9, outcomes
