"""Continuation of a broken answer: what the router asks for, and how it splices.

When a stream breaks after text has reached the caller, the router asks a chat
model for the rest: the conversation, then the partial answer as an assistant
message, then :data:`CONTINUE_INSTRUCTION` as a user message.
"""

from __future__ import annotations

__all__ = ["CONTINUE_INSTRUCTION"]

#: The user message that asks for the rest of a broken answer.
CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped: "
    "do not repeat any of it, do not comment, reply with the rest only."
)
