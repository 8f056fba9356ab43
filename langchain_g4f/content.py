"""Content blocks of LangChain messages, checked and turned into OpenAI parts. No I/O.

Accepted image blocks, all sent as OpenAI ``{"type": "image_url", "image_url":
{"url": ...}}`` parts (base64 data as a ``data:`` URL):

- LangChain v1: ``{"type": "image", "url": ...}`` and
  ``{"type": "image", "base64": ..., "mime_type": "image/png"}``;
- LangChain v0: ``{"type": "image", "source_type": "url" | "base64", ...}``
  (base64 in ``data``);
- OpenAI: ``{"type": "image_url", "image_url": {"url": ...}}`` (or the URL as a string).

A URL is ``http(s)://...`` or a ``data:image/...;base64,...`` URL; base64 data needs
an ``image/*`` ``mime_type`` and must decode. Anything else is a
:class:`~langchain_g4f.errors.ConfigurationError`.

Reasoning blocks (``reasoning``, and ``thinking`` as some providers name them)
belong to earlier answers: they are checked (their text must be a string) and
never sent back.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import Any

from langchain_g4f.errors import ConfigurationError

__all__ = [
    "block_type",
    "check_blocks",
    "check_reasoning",
    "has_images",
    "image_part",
    "is_image",
    "is_reasoning",
]

_IMAGE_BLOCKS = frozenset({"image", "image_url"})
_REASONING_BLOCKS = {"reasoning": "reasoning", "thinking": "thinking"}  # type -> text field


def block_type(block: Any) -> str | None:
    """A content block's ``type``; ``None`` for a string or anything else not a dict."""
    return block.get("type") if isinstance(block, dict) else None


def is_image(block: Any) -> bool:
    """Whether ``block`` is an image block (``image`` or ``image_url``)."""
    return block_type(block) in _IMAGE_BLOCKS


def is_reasoning(block: Any) -> bool:
    """Whether ``block`` is a reasoning block (``reasoning`` or ``thinking``)."""
    return block_type(block) in _REASONING_BLOCKS


def has_images(content: Any) -> bool:
    """Whether a message content (string or list of blocks) holds an image block."""
    return isinstance(content, list) and any(is_image(block) for block in content)


def check_blocks(messages: Any) -> None:
    """Raise for a malformed image or reasoning block in any of the messages."""
    for message in messages:
        if isinstance(message.content, list):
            for block in message.content:
                if is_image(block):
                    image_part(block)
                elif is_reasoning(block):
                    check_reasoning(block)


def check_reasoning(block: dict[str, Any], provider: str | None = None) -> None:
    """Raise unless the reasoning block's text is a string (or absent)."""
    field = _REASONING_BLOCKS[block["type"]]
    text = block.get(field)
    if text is not None and not isinstance(text, str):
        msg = (
            f"a {block['type']!r} content block needs a string {field!r}, not {type(text).__name__}"
        )
        raise ConfigurationError(msg, provider=provider)


def image_part(block: dict[str, Any], provider: str | None = None) -> dict[str, Any]:
    """An image block -> an OpenAI ``image_url`` part; raises when it is malformed."""
    if block["type"] == "image_url":
        value = block.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        detail = value.get("detail") if isinstance(value, dict) else None
    else:
        url, detail = _image_url(block, provider), None
    _check_url(url, provider)
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _image_url(block: dict[str, Any], provider: str | None) -> Any:
    mime = block.get("mime_type")
    if mime is not None and not (isinstance(mime, str) and mime.startswith("image/")):
        msg = f"has mime_type {mime!r}, not an image/* type"
        raise _bad(msg, provider)
    source = block.get("source_type")
    data = block.get("base64")
    if data is None and source == "base64":
        data = block.get("data")
    if data is not None:
        if mime is None:
            msg = "has base64 data but no mime_type (such as 'image/png')"
            raise _bad(msg, provider)
        _check_base64(data, provider)
        return f"data:{mime};base64,{data}"
    if block.get("url") is not None:
        return block["url"]
    if block.get("file_id") is not None or source == "id":
        msg = "refers to an uploaded file id; send a URL or base64 data"
        raise _bad(msg, provider)
    msg = "has neither a url nor base64 data"
    raise _bad(msg, provider)


def _check_url(url: Any, provider: str | None) -> None:
    if not isinstance(url, str) or not url:
        msg = "has no url"
        raise _bad(msg, provider)
    if url.startswith("data:"):
        head, comma, data = url.partition(",")
        media = head[5:].split(";")[0]
        if not comma or not media.startswith("image/") or not head.endswith(";base64"):
            msg = f"has a data URL that is not base64 image data: {url[:40]!r}"
            raise _bad(msg, provider)
        _check_base64(data, provider)
    elif not url.startswith(("http://", "https://")):
        msg = f"has a url that is neither http(s) nor data: {url[:40]!r}"
        raise _bad(msg, provider)


def _check_base64(data: Any, provider: str | None) -> None:
    if not isinstance(data, str) or not data:
        msg = "has empty or non-string base64 data"
        raise _bad(msg, provider)
    try:
        b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        msg = "has base64 data that does not decode"
        raise _bad(msg, provider) from None


def _bad(what: str, provider: str | None) -> ConfigurationError:
    return ConfigurationError(f"an image content block {what}", provider=provider)
