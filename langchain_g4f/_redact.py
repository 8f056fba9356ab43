"""Secrets out of URLs before they are shown: reprs, dumps, traces, error messages.

A URL may carry credentials: ``user:pass@host``, or query parameters such as
``?auth=...``, ``?key=...``, ``?access_token=...``. :func:`redact_url` replaces
their values with :data:`REDACTED` and keeps the rest of the URL as it was, so
the host and path still say where a request went. :func:`redact_text` does the
same to every URL inside a longer text, such as an exception message.

>>> redact_url("https://bob:hunter2@example.com/v1?auth=abc&lang=en")
'https://bob:***@example.com/v1?auth=***&lang=en'
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = ["REDACTED", "is_secret_name", "redact_text", "redact_url"]

#: What a secret is replaced with.
REDACTED = "***"

#: A query parameter whose name contains one of these holds a secret.
_SECRET_WORDS = (
    "auth",
    "key",
    "token",
    "secret",
    "pass",
    "pwd",
    "sig",
    "cred",
    "session",
    "jwt",
    "bearer",
    "cookie",
)

#: A URL inside a longer text: a scheme, ``://``, then up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"""[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'"<>`]+""")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter (or header) named ``name`` holds a secret."""
    squashed = re.sub(r"[^a-z]", "", unquote_plus(name).lower())
    return any(word in squashed for word in _SECRET_WORDS)


def _redact_params(params: str) -> str:
    """``a=1&token=x`` -> ``a=1&token=***``; separators and encoding kept."""
    if not params:
        return params
    parts = re.split(r"([&;])", params)
    for i in range(0, len(parts), 2):
        name, eq, value = parts[i].partition("=")
        if eq and value and is_secret_name(name):
            parts[i] = f"{name}={REDACTED}"
    return "".join(parts)


def _redact_netloc(netloc: str) -> str:
    userinfo, at, host = netloc.rpartition("@")
    if not at:
        return netloc
    user, colon, _password = userinfo.partition(":")
    # A lone user name is often a token itself (``https://TOKEN@host``).
    return f"{user}:{REDACTED}@{host}" if colon else f"{REDACTED}@{host}"


def redact_url(url: object) -> str:
    """``url`` with its credentials and secret query values replaced by ``***``.

    Never raises: a string that does not parse as a URL is redacted as text, and
    anything not a string is redacted as its ``str()``.
    """
    url = url if isinstance(url, str) else str(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return _redact_loosely(url)
    if not parts.netloc and "@" in url.split("/", 1)[0]:
        # No ``//``: ``user:pass@host:port`` reads as a scheme and a path.
        head, slash, rest = url.partition("/")
        return _redact_loosely(f"{REDACTED}@{head.rpartition('@')[2]}{slash}{rest}")
    redacted = parts._replace(
        netloc=_redact_netloc(parts.netloc),
        query=_redact_params(parts.query),
        fragment=_redact_params(parts.fragment) if "=" in parts.fragment else parts.fragment,
    )
    if redacted == parts:
        return url
    return urlunsplit(redacted)


def _redact_loosely(text: str) -> str:
    """Credentials and secret ``name=value`` pairs, found by pattern alone."""
    text = re.sub(r"(://)([^/@\s:]*:)?[^/@\s]*@", lambda m: f"{m[1]}{m[2] or ''}{REDACTED}@", text)
    return re.sub(
        r"""([?&;#])([^=&;#\s'"()<>]+)=([^&;#\s'"()<>]*)""",
        lambda m: f"{m[1]}{m[2]}={REDACTED}" if m[3] and is_secret_name(m[2]) else m[0],
        text,
    )


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`.

    Also covers what library messages print without a scheme, such as
    urllib3's ``Max retries exceeded with url: /v1?auth=...``.
    """
    return _redact_loosely(_URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text))
