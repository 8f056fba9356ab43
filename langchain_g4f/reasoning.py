"""Reasoning text apart from the answer: a leading ``<think>...</think>`` section.

DeepSeek-R1-style models put their reasoning at the start of the text, between
``<think>`` and ``</think>``. :class:`ThinkSplitter` takes the text as it streams
in, in pieces of any size, and hands back ``(reasoning, answer)`` pairs; a tag
split across pieces is held back until the next piece decides it. No I/O.

Only a section that opens the text counts (leading whitespace aside): a
``<think>`` later in an answer is answer text. A section that never closes is
reasoning to the end, and the answer is empty.
"""

from __future__ import annotations

__all__ = ["ThinkSplitter"]

_OPEN = "<think>"
_CLOSE = "</think>"

_START, _THINKING, _AFTER, _ANSWER = range(4)


class ThinkSplitter:
    r"""Splits a leading ``<think>`` section off streamed text.

    >>> splitter = ThinkSplitter()
    >>> splitter.push("<thi"), splitter.push("nk>plan</th"), splitter.push("ink>\nHi")
    (('', ''), ('plan', ''), ('', 'Hi'))
    """

    __slots__ = ("_held", "_state")

    def __init__(self) -> None:
        self._state = _START
        self._held = ""

    @property
    def thinking(self) -> bool:
        """Whether the text so far opened a ``<think>`` section that is still open."""
        return self._state == _THINKING

    def push(self, text: str) -> tuple[str, str]:
        """The next piece of text -> ``(reasoning, answer)`` that are safe to emit."""
        if self._state == _ANSWER:  # the hot path: past any reasoning, nothing is held
            return "", text
        text, self._held = self._held + text, ""
        if self._state == _START:
            return self._start(text)
        if self._state == _THINKING:
            return self._think(text)
        return "", self._after(text)

    def flush(self) -> tuple[str, str]:
        """The text is over: what was held back, as reasoning or answer."""
        held, self._held = self._held, ""
        if self._state == _THINKING:
            return held, ""
        return "", held

    def _start(self, text: str) -> tuple[str, str]:
        body = text.lstrip()
        if len(body) < len(_OPEN) and _OPEN.startswith(body):
            self._held = text  # only whitespace, or the start of the tag, so far
            return "", ""
        if body.startswith(_OPEN):
            self._state = _THINKING
            return self._think(body[len(_OPEN) :])
        self._state = _ANSWER
        return "", text

    def _think(self, text: str) -> tuple[str, str]:
        end = text.find(_CLOSE)
        if end >= 0:
            self._state = _AFTER
            return text[:end], self._after(text[end + len(_CLOSE) :])
        hold = _partial_tail(text, _CLOSE)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold], ""

    def _after(self, text: str) -> str:
        """The whitespace between ``</think>`` and the answer is dropped."""
        text = text.lstrip()
        if text:
            self._state = _ANSWER
        return text


def _partial_tail(text: str, tag: str) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0
