"""URLs as they may be shown: in listings, messages and logs."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and its query values hidden."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}" if ":" in user else f"***@{host}"
    keys = [key for key, _ in parse_qsl(parts.query, keep_blank_values=True)]
    query = "&".join(f"{quote(key, safe='')}=***" for key in keys)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
