"""The redaction helper: credentials and secret query values out of URLs and texts."""

from __future__ import annotations

import pytest

from langchain_g4f._redact import REDACTED, is_secret_name, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://bob:hunter2@h.example/v1", "https://bob:***@h.example/v1"),
        ("https://tok3n@h.example/v1", "https://***@h.example/v1"),
        ("http://h/?auth=s3cret", "http://h/?auth=***"),
        ("http://h/v1?key=s3cret&lang=en", "http://h/v1?key=***&lang=en"),
        ("http://h/v1?lang=en&api_key=s3cret", "http://h/v1?lang=en&api_key=***"),
        ("http://h/v1?access_token=s3cret", "http://h/v1?access_token=***"),
        ("http://h/v1?X-Amz-Signature=s3cret", "http://h/v1?X-Amz-Signature=***"),
        ("http://h/v1?a=1;token=s3cret", "http://h/v1?a=1;token=***"),
        ("http://h/cb#access_token=s3cret&x=1", "http://h/cb#access_token=***&x=1"),
        ("http://h/v1?auth=FnMN%2BPlw%3D%3D", "http://h/v1?auth=***"),
        ("http://[::1/x?key=s3cret", "http://[::1/x?key=***"),
        ("bob:s3cret@proxy:3128", "***@proxy:3128"),
        ("s3cret@h/v1?x=1", "***@h/v1?x=1"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "s3cret" not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    ["https://h.example/v1/chat/completions", "http://h/p?q=a+b&page=2", "http://h/#top", ""],
)
def test_urls_without_secrets_are_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_redaction_is_idempotent() -> None:
    once = redact_url("https://u:p@h/x?token=t")
    assert redact_url(once) == once
    assert redact_text(once) == once


@pytest.mark.parametrize("name", ["auth", "Key", "apiKey", "api-key", "x_token", "password", "sig"])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["model", "lang", "page", "q"])
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_text_covers_urls_and_library_messages() -> None:
    text = (
        "HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: "
        "/v1/chat?auth=s3cret&x=1 (Caused by NewConnectionError) "
        "while fetching 'https://user:s3cret@h.example/v1?key=s3cret'"
    )
    out = redact_text(text)
    assert "s3cret" not in out
    assert "/v1/chat?auth=***&x=1 (Caused by" in out
    assert "'https://user:***@h.example/v1?key=***'" in out
    assert REDACTED in out
