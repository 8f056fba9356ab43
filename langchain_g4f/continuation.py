"""Continuation of a broken answer: what the router asks for, and how it splices.

When a stream breaks after text has reached the caller, the router asks a chat
model for the rest: the conversation, then the partial answer as an assistant
message, then :data:`CONTINUE_INSTRUCTION` as a user message
(:func:`continuation_messages`).

Models asked to continue often repeat the end of what they were given, a few
words or the whole answer. :class:`Splicer` removes that repeat as the
continuation streams in: the *overlap* is the longest suffix of the partial
answer that is a prefix of the continuation, counted only when it is at least
:data:`MIN_OVERLAP` characters long and is not one character repeated (a run of
spaces or dashes). Shorter or single-character overlaps are kept, because they
are as likely to be the answer's own text ("Hel" + "lo", "bana" + "na") as a
repeat; a model that repeats only one or two characters leaves them doubled. While the
continuation received so far could still be the start of a longer overlap it is
held back; once it cannot, the new text is released and the rest passes
through untouched.

>>> splice("The quick brown", "quick brown fox")
' fox'
>>> splice("Hel", "lo")  # a single repeated character is the answer's own
'lo'
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

__all__ = [
    "CONTINUE_INSTRUCTION",
    "MIN_OVERLAP",
    "Splicer",
    "continuation_messages",
    "overlap",
    "splice",
]

#: The user message that asks for the rest of a broken answer.
CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped: "
    "do not repeat any of it, do not comment, reply with the rest only."
)

#: The shortest repeat of the partial answer's end that is removed from a continuation.
MIN_OVERLAP = 3


def continuation_messages(messages: Sequence[BaseMessage], partial: str) -> list[BaseMessage]:
    """The conversation that asks a model for the rest of ``partial``."""
    return [*messages, AIMessage(content=partial), HumanMessage(content=CONTINUE_INSTRUCTION)]


def _counts(text: str, length: int) -> bool:
    """Whether a matched overlap of ``length`` (the end of ``text``) is removed."""
    if length < MIN_OVERLAP:
        return False
    tail = text[len(text) - length :]
    return tail != tail[0] * length


def overlap(partial: str, continuation: str) -> int:
    """How many leading characters of ``continuation`` repeat the end of ``partial``."""
    longest = min(len(partial), len(continuation))
    for length in range(longest, MIN_OVERLAP - 1, -1):
        if partial.endswith(continuation[:length]):
            return length if _counts(partial, length) else 0
    return 0


def splice(partial: str, continuation: str) -> str:
    """The new text of ``continuation``: without its repeat of the end of ``partial``."""
    return continuation[overlap(partial, continuation) :]


class Splicer:
    """Streams a continuation's new text, holding back only what may still be a repeat.

    ``push`` each piece of the continuation and emit what it returns; at the end
    of the continuation emit :meth:`flush`. ``"".join`` of everything returned
    equals :func:`splice` of the whole continuation, however it is cut.
    """

    __slots__ = ("_alive", "_decided", "_held", "_partial")

    def __init__(self, partial: str) -> None:
        self._partial = partial
        self._held = ""  # the continuation so far, while undecided
        # overlap lengths still possible: the continuation so far matches their start
        self._alive = list(range(MIN_OVERLAP, len(partial) + 1))
        self._decided = not self._alive

    @property
    def held(self) -> str:
        """Continuation text not yet released (it may still be a repeat)."""
        return self._held

    def push(self, text: str) -> str:
        """The new text to emit now, given the next piece of the continuation."""
        if self._decided or not text:
            return text
        partial, end = self._partial, len(self._partial)
        done, held = len(self._held), self._held + text
        # Compare only the new characters against each candidate's part of the partial.
        self._alive = [
            length
            for length in self._alive
            if length <= done
            or partial[end - length + done : end - length + min(length, len(held))]
            == held[done : min(length, len(held))]
        ]
        self._held = held
        if any(length > len(held) for length in self._alive):
            return ""
        return self._release()

    def flush(self) -> str:
        """At the end of the continuation: what was held back and is not a repeat."""
        if self._decided:
            return ""
        self._alive = [length for length in self._alive if length <= len(self._held)]
        return self._release()

    def _release(self) -> str:
        cut = max(self._alive, default=0)
        if cut and not _counts(self._partial, cut):
            cut = 0
        held, self._held, self._alive, self._decided = self._held, "", [], True
        return held[cut:]
