"""The retry policy shared by ``ChatG4F`` and the router."""

from __future__ import annotations

import random

from langchain_g4f.errors import G4FError, RateLimitError

#: No single wait is longer than this, whatever ``Retry-After`` asks.
MAX_DELAY = 30.0


def backoff_delay(attempt: int, error: G4FError, *, base: float = 0.5, cap: float = 8.0) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based) after ``error``.

    ``Retry-After`` from a 429 is honoured as given (up to :data:`MAX_DELAY`);
    otherwise exponential backoff with full jitter in ``[d/2, d]``.
    """
    if isinstance(error, RateLimitError) and error.retry_after is not None:
        return min(error.retry_after, MAX_DELAY)
    delay = min(cap, base * 2**attempt)
    return delay * (0.5 + random.random() / 2)
