"""Test helpers for langchain_g4f: a local, deterministic replica of the providers."""

from langchain_g4f.testing.replica import (
    FAULTS,
    Replica,
    describe_images,
    reasoning_for,
    reply_for,
)

__all__ = ["FAULTS", "Replica", "describe_images", "reasoning_for", "reply_for"]
