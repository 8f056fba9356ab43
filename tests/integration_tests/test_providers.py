"""Each seed provider, sync and async, invoke and stream, replayed from cassettes.

Recorded against the local replica (see cassettes/README.md); the cassettes hold
each provider's canonical URL, so replay exercises the exact wire protocol.
"""

from __future__ import annotations

import pytest

from langchain_g4f import ChatG4F
from langchain_g4f.testing import reply_for
from tests.conftest import CASSETTES, base_url

pytestmark = pytest.mark.vcr

PROVIDERS = ["Mishalsgpt", "Gravityengine", "Lockchat", "Aichat"]
PROMPT = "Grüße aus Köln — what is 2 + 2?"
EXPECTED = reply_for([{"role": "user", "content": PROMPT}])


def model(name: str, **kwargs: object) -> ChatG4F:
    return ChatG4F(provider=name, base_url=base_url(name), **kwargs)


def check_metadata(message: object, name: str) -> None:
    metadata = message.response_metadata  # type: ignore[attr-defined]
    assert metadata["model_provider"] == "g4f"
    assert metadata["provider"] == name
    assert metadata["finish_reason"] == "stop"
    assert metadata["model_name"]


@pytest.mark.parametrize("name", PROVIDERS)
def test_invoke(name: str) -> None:
    message = model(name).invoke(PROMPT)
    assert message.content == EXPECTED
    check_metadata(message, name)


@pytest.mark.parametrize("name", PROVIDERS)
def test_stream(name: str) -> None:
    chunks = list(model(name).stream(PROMPT))
    assert "".join(c.content for c in chunks) == EXPECTED  # type: ignore[misc]
    # Aichat cannot stream: its whole answer is one chunk, then the final one.
    text_chunks = [c for c in chunks if c.content]
    assert len(text_chunks) == (1 if name == "Aichat" else len(EXPECTED.split()))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    check_metadata(total, name)


@pytest.mark.parametrize("name", PROVIDERS)
async def test_ainvoke(name: str) -> None:
    message = await model(name).ainvoke(PROMPT)
    assert message.content == EXPECTED
    check_metadata(message, name)


@pytest.mark.parametrize("name", PROVIDERS)
async def test_astream(name: str) -> None:
    chunks = [c async for c in model(name).astream(PROMPT)]
    assert "".join(c.content for c in chunks) == EXPECTED  # type: ignore[misc]
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    check_metadata(total, name)


@pytest.mark.parametrize("name", ["Mishalsgpt", "Aichat"])
def test_conversation_and_stop(name: str) -> None:
    """A system prompt and history go out in the provider's format; stop cuts."""
    messages = [
        ("system", "Answer briefly."),
        ("human", "Hi"),
        ("ai", "Hello!"),
        ("human", PROMPT),
    ]
    message = model(name).invoke(messages, stop=["you said"])
    assert message.content == EXPECTED.split("you said")[0]
    assert message.response_metadata["finish_reason"] == "stop"


def test_usage_when_the_server_sends_it() -> None:
    message = model("Gravityengine").invoke(PROMPT)
    usage = message.usage_metadata
    assert usage is not None
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0


def test_seed_create_completion() -> None:
    """The g4f calling contract: a generator of text pieces."""
    from langchain_g4f import providers

    pieces = list(
        providers.Lockchat._create_completion(
            "gpt-4",
            [{"role": "user", "content": PROMPT}],
            stream=True,
            base_url=base_url("Lockchat"),
        )
    )
    assert len(pieces) > 1
    assert "".join(pieces) == EXPECTED


SECRET = "sk-test-0123456789abcdefSECRET"


def test_api_key_is_sent_but_never_recorded(vcr: object, request: pytest.FixtureRequest) -> None:
    """Gravityengine forks want a Bearer key: it goes out, and stays out of cassettes."""
    llm = model("Gravityengine", api_key=SECRET)
    assert SECRET not in repr(llm)
    assert SECRET not in str(llm.model_dump())
    assert llm.invoke(PROMPT).content == EXPECTED
    (recorded,) = vcr.requests  # type: ignore[attr-defined]
    assert recorded.uri == "https://gpt4.gravityengine.cc/api/openai/v1/chat/completions"
    assert "authorization" not in {h.lower() for h in recorded.headers}
    cassette = CASSETTES / "test_providers" / f"{request.node.name}.yaml"
    if cassette.exists():  # written after the test when recording
        text = cassette.read_text()
        assert SECRET not in text
        assert "Bearer" not in text


def test_secret_query_parameters_are_scrubbed() -> None:
    from tests.conftest import canonical_uri

    uri = canonical_uri("http://super.lockchat.app/v1/chat/completions?auth=abcdef123456&x=1")
    assert uri == "http://super.lockchat.app/v1/chat/completions?x=1"
    uri = canonical_uri("https://bob:pw@h.example/v1?key=k1&access_token=t1&lang=en")
    assert uri == "https://h.example/v1?lang=en"


def test_the_public_lockchat_token_stays_in_cassettes() -> None:
    from tests.conftest import canonical_uri

    seed = "http://super.lockchat.app/v1/chat/completions?auth=FnMNPlwZEnGFqvEc9470Vw=="
    assert canonical_uri(seed) == seed
    recorded = (CASSETTES / "test_providers" / "test_invoke[Lockchat].yaml").read_text()
    assert f"uri: {seed}\n" in recorded


USER_SECRET = "user-secret-in-url-0123456789"


def test_a_secret_in_base_url_is_sent_but_never_recorded(
    vcr: object, request: pytest.FixtureRequest
) -> None:
    from langchain_g4f import providers

    root = base_url("Mishalsgpt") or providers.Mishalsgpt.url
    root = root.replace("://", f"://bob:{USER_SECRET}@", 1)
    llm = ChatG4F(provider="Mishalsgpt", base_url=f"{root}?key={USER_SECRET}&lang=en")
    assert llm.invoke(PROMPT).content == EXPECTED
    (recorded,) = vcr.requests  # type: ignore[attr-defined]
    assert recorded.uri == "https://mishalsgpt.vercel.app/api/openai/v1/chat/completions?lang=en"
    assert USER_SECRET not in str(recorded.headers)
    cassette = CASSETTES / "test_providers" / f"{request.node.name}.yaml"
    if cassette.exists():  # written after the test when recording
        text = cassette.read_text()
        assert USER_SECRET not in text
        assert "bob" not in text


def test_no_cassette_holds_a_secret() -> None:
    """Every recorded URI and header, in every cassette: only public values."""
    from urllib.parse import urlsplit

    import yaml

    from langchain_g4f._redact import is_secret_name
    from tests.conftest import SECRET_HEADERS, _public_query

    public = _public_query()
    files = sorted(CASSETTES.rglob("*.yaml"))
    assert files
    for path in files:
        text = path.read_text()
        assert SECRET not in text, path
        assert USER_SECRET not in text, path
        for interaction in yaml.safe_load(text)["interactions"]:
            for side in ("request", "response"):
                names = {n.lower() for n in interaction[side].get("headers") or {}}
                assert not names & set(SECRET_HEADERS), (path, side)
            uri = urlsplit(interaction["request"]["uri"])
            assert "@" not in uri.netloc, path
            for pair in filter(None, uri.query.split("&")):
                assert pair in public or not is_secret_name(pair.partition("=")[0]), (path, pair)
