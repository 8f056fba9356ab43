"""Recordings are stable: re-recording an unchanged exchange changes no cassette."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from vcr.request import Request
from vcr.serializers import yamlserializer

from tests.conftest import CASSETTES, OrderedPersister, scrub_request


def _request(port: int, encoding: str, agent: str, call_id: str) -> Request:
    body = {
        "messages": [
            {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function"}]},
            {"role": "tool", "tool_call_id": call_id, "content": "3"},
        ]
    }
    return Request(
        "POST",
        "https://openai-compatible.test/v1/chat/completions",
        json.dumps(body).encode(),
        {
            "Host": f"127.0.0.1:{port}",
            "Accept-Encoding": encoding,
            "User-Agent": agent,
            "Content-Length": "123",
            "Authorization": "Bearer sk-secret",
        },
    )


def test_requests_from_two_machines_are_stored_alike() -> None:
    one = scrub_request(_request(40001, "gzip, deflate", "python-httpx/0.28.1", "a-1"))
    two = scrub_request(_request(51234, "gzip, deflate, br, zstd", "python-httpx/0.29.0", "b-2"))
    assert one.headers == two.headers == {"User-Agent": "python-httpx"}
    assert one.body == two.body
    assert b'"call_0"' in one.body


def test_a_providers_own_user_agent_is_kept() -> None:
    request = scrub_request(_request(1, "gzip", "Mozilla/5.0 (X11; Linux x86_64)", "x"))
    assert request.headers["User-Agent"] == "Mozilla/5.0 (X11; Linux x86_64)"


def test_exchanges_are_saved_in_one_order_whatever_order_they_finished(tmp_path: Path) -> None:
    def request(text: str) -> Request:
        return Request("POST", "https://x.test/v1", text.encode(), {})

    def response(text: str) -> dict[str, object]:
        return {"status": {"code": 200, "message": "OK"}, "headers": {}, "body": {"string": text}}

    saved = []
    for order in (["Hey", "Hello"], ["Hello", "Hey"]):
        path = tmp_path / f"{order[0]}.yaml"
        OrderedPersister.save_cassette(
            path,
            {"requests": [request(t) for t in order], "responses": [response(t) for t in order]},
            yamlserializer,
        )
        saved.append(path.read_text())
    assert saved[0] == saved[1]


def test_no_cassette_holds_a_machine_bound_header() -> None:
    bound = []
    for path in sorted(CASSETTES.rglob("*.yaml")):
        for interaction in yaml.safe_load(path.read_text())["interactions"]:
            headers = {k.lower(): v for k, v in interaction["request"]["headers"].items()}
            agent = " ".join(headers.get("user-agent", []))
            if {"host", "accept-encoding"} & set(headers) or "python-httpx/" in agent:
                bound.append(path.name)
    assert not bound, bound[:5]
