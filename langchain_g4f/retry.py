"""The retry policy shared by ``ChatG4F`` and the router."""

from __future__ import annotations

import random

from langchain_g4f.errors import RateLimitError

__all__ = ["MAX_DELAY", "backoff_delay"]

#: No single wait is longer than this, whatever ``Retry-After`` asks.
MAX_DELAY = 30.0


def backoff_delay(
    attempt: int, error: BaseException, *, base: float = 0.5, cap: float = 8.0
) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based) after ``error``.

    ``Retry-After`` from a 429 is honoured as given (up to :data:`MAX_DELAY`);
    otherwise ``d = min(cap, base * 2**attempt)``, jittered within ``[d/2, d]``.
    """
    if isinstance(error, RateLimitError) and error.retry_after is not None:
        return min(error.retry_after, MAX_DELAY)
    delay = min(cap, base * 2.0**attempt)
    return delay * (0.5 + random.random() / 2)
