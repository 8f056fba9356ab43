"""Test wiring: vcrpy cassettes, the replica for recording, loopback tests.

Replay (the default, and CI): ``pytest`` with ``--record-mode=none`` and sockets
disabled; every provider call is answered from ``cassettes/``.

Recording: ``pytest --record-mode=rewrite tests/integration_tests`` starts the
local replica (:mod:`langchain_g4f.testing`) and points every provider at it;
request URLs are rewritten to the providers' canonical URLs before they are
stored, and secrets are filtered out.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from langchain_tests.conftest import base_vcr_config

from langchain_g4f import providers
from langchain_g4f.errors import UnknownProviderError

CASSETTES = Path(__file__).resolve().parent.parent / "cassettes"

#: Headers never stored in a cassette, request or response side.
SECRET_HEADERS = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "set-cookie",
)
#: Query parameters never stored (Lockchat once carried ``?auth=``).
SECRET_QUERY = ("auth", "key", "api_key", "apikey", "token", "access_token")

_replica: Any = None


def recording(config: pytest.Config) -> bool:
    return config.getoption("record_mode") not in (None, "none")


def pytest_configure(config: pytest.Config) -> None:
    global _replica
    config.addinivalue_line("markers", "loopback: starts its own server on 127.0.0.1")
    if recording(config):
        from langchain_g4f.testing import Replica

        _replica = Replica().start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _replica is not None:
        _replica.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Loopback tests, and cassette tests while recording from the replica, may
    # open sockets, to 127.0.0.1 only.
    record = recording(config)
    for item in items:
        if item.get_closest_marker("loopback") or (record and item.get_closest_marker("vcr")):
            item.add_marker(pytest.mark.enable_socket)
            item.add_marker(pytest.mark.allow_hosts(["127.0.0.1"]))


def base_url(provider: str) -> str | None:
    """Where tests point ``provider``: the replica when recording, else its own URL."""
    return _replica.base_url(provider) if _replica is not None else None


def canonical_uri(uri: str) -> str:
    """A replica URL -> the provider's canonical URL; secret query params removed."""
    if _replica is not None and uri.startswith(_replica.url + "/"):
        name, _, rest = uri[len(_replica.url) + 1 :].partition("/")
        try:
            uri = providers.get(name).url.rstrip("/") + "/" + rest
        except UnknownProviderError:
            pass  # not a registered provider: keep the URL as it is
    parts = urlsplit(uri)
    if parts.query:
        query = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in SECRET_QUERY]
        uri = urlunsplit(parts._replace(query=urlencode(query)))
    return uri


def scrub_request(request: Any) -> Any:
    request.uri = canonical_uri(request.uri)
    for name in list(request.headers):
        if name.lower() in SECRET_HEADERS:
            del request.headers[name]
    return request


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    headers = response.get("headers", {})
    for name in list(headers):
        if name.lower() in SECRET_HEADERS:
            del headers[name]
    return response


@pytest.fixture(scope="session")
def vcr_config() -> dict[str, Any]:
    config = base_vcr_config()
    # base_vcr_config's record_mode="once" would win over --record-mode.
    config.pop("record_mode", None)
    config.pop("cassette_library_dir", None)
    config["filter_headers"] = list(SECRET_HEADERS)
    config["filter_query_parameters"] = list(SECRET_QUERY)
    config["before_record_request"] = scrub_request
    config["before_record_response"] = scrub_response
    return config


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    return str(CASSETTES / request.node.path.stem)


_send_lock = threading.Lock()


@pytest.fixture(autouse=True)
def _serialise_vcr(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """vcrpy is not thread-safe: batch() would race; send one request at a time."""
    if request.node.get_closest_marker("vcr") is None:
        return
    import requests

    send = requests.Session.send

    def locked_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _send_lock:
            return send(self, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "send", locked_send)
