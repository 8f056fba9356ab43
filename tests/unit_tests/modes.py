"""One call of a chat model in each of its four modes, the answer as one message."""

from __future__ import annotations

from functools import reduce
from operator import add
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, message_chunk_to_message

MODES = ("invoke", "stream", "ainvoke", "astream")


async def call(model: BaseChatModel, prompt: Any, mode: str, **kwargs: Any) -> AIMessage:
    """``prompt`` through ``model`` in ``mode``; a stream's chunks are merged."""
    if mode == "invoke":
        return model.invoke(prompt, **kwargs)  # type: ignore[return-value]
    if mode == "ainvoke":
        return await model.ainvoke(prompt, **kwargs)  # type: ignore[return-value]
    if mode == "stream":
        chunks = list(model.stream(prompt, **kwargs))
    else:
        chunks = [chunk async for chunk in model.astream(prompt, **kwargs)]
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    return message_chunk_to_message(reduce(add, chunks))  # type: ignore[return-value]


async def chunks_of(model: BaseChatModel, prompt: Any, mode: str) -> list[AIMessageChunk]:
    if mode == "stream":
        return list(model.stream(prompt))  # type: ignore[arg-type]
    return [chunk async for chunk in model.astream(prompt)]  # type: ignore[misc]
