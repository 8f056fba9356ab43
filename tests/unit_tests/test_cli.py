"""The command line: chat, providers (--check) and the offline demo, against the replica."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator

import pytest

from langchain_g4f.cli import main
from langchain_g4f.testing import Replica, reply_for

pytestmark = pytest.mark.loopback


@pytest.fixture
def redirected(replica: Replica) -> Iterator[Replica]:
    replica.reset()
    with replica.redirect_providers():
        yield replica


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def expected(prompt: str) -> str:
    return reply_for([{"role": "user", "content": prompt}])


def test_demo_runs_offline_in_a_fresh_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "langchain_g4f", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Hello |from |the |replica" in out  # streamed, chunk by chunk
    assert "failed first: Mishalsgpt (ProviderHTTPError 503)" in out
    assert "answered by:  Lockchat" in out
    assert "tool call:    get_weather({'location': 'Paris'})" in out
    assert "answer:       The |tool |returned: |It |is |sunny |in |Paris.|" in out


def test_chat_one_provider_streams_the_answer(
    redirected: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "chat", "-p", "Lockchat", "Hello", "there")
    assert (code, out, err) == (0, expected("Hello there") + "\n", "")


def test_chat_reads_the_prompt_from_stdin_and_routes_by_default(
    redirected: Replica, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Piped prompt\n"))
    code, out, _ = run(capsys, "chat", "--strategy", "priority")
    assert (code, out) == (0, expected("Piped prompt") + "\n")
    assert {r["provider"] for r in redirected.requests} == {"gravityengine"}  # streams; first by name


def test_chat_base_url_alone_is_an_openai_compatible_endpoint(
    replica: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    url = replica.base_url("openai") + "/v1"
    code, out, _ = run(capsys, "chat", "--base-url", url, "-m", "llama3", "--api-key", "sk-x", "Hi")
    assert (code, out) == (0, expected("Hi") + "\n")
    request = replica.requests[-1]
    assert request["json"]["model"] == "llama3"
    assert request["headers"]["Authorization"] == "Bearer sk-x"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_chat_session_keeps_the_conversation(
    redirected: Replica, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal("First question\nSecond question\n\n"))
    code, out, err = run(capsys, "chat", "-p", "Lockchat")
    assert code == 0 and "Lockchat (gpt-4)" in err
    assert expected("First question") in out and expected("Second question") in out
    last = redirected.requests[-1]["json"]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]


def test_chat_unreachable_provider_prints_one_line(
    redirected: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    redirected.set_fault("Lockchat", "refuse")
    url = redirected.base_url("Lockchat")
    code, out, err = run(capsys, "chat", "-p", "Lockchat", "--base-url", url, "Hi")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("langchain-g4f: ProviderConnectionError: Lockchat")


def test_chat_router_failure_is_one_line_with_the_attempts(
    redirected: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("Lockchat", "Aichat"):
        redirected.set_fault(name, "http_401")
    code, _, err = run(capsys, "chat", "-p", "Lockchat", "-p", "Aichat", "Hi")
    assert code == 1 and err.count("\n") == 1
    assert "AllProvidersFailedError" in err
    assert "Lockchat AuthenticationError 401" in err and "Aichat AuthenticationError 401" in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["chat", "--bogus"], "unrecognized arguments: --bogus"),
        (["chat", "--timeout", "-1", "Hi"], "positive number of seconds"),
        (["chat", "-p", "Nope", "Hi"], "UnknownProviderError"),
        (["chat", "-p", "Lockchat", "-m", "gpt-99", "Hi"], "does not serve model 'gpt-99'"),
        (["chat", "--base-url", "http://127.0.0.1:9/v1", "Hi"], "needs --model"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_command_lines_print_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse exits by itself
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_providers_lists_every_registered_provider(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "providers")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["PROVIDER", "MODELS", "STREAM", "AUTH", "URL"]
    assert [line.split()[0] for line in lines[1:]] == [
        "Aichat", "Gravityengine", "Lockchat", "Mishalsgpt"
    ]
    assert "http://super.lockchat.app/v1/chat/completions" in out


def test_providers_check_probes_each_and_reports_status_and_latency(
    redirected: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "providers", "--check", "--timeout", "2")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and err == ""
    assert all(row[1] == "ok" and row[3] == "ms" for row in rows.values())

    redirected.set_fault("Gravityengine", "http_503")
    redirected.set_fault("Aichat", "hang")
    code, out, err = run(capsys, "providers", "--check", "--timeout", "0.5")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 1 and "2 of 4 providers failed" in err
    assert rows["Gravityengine"][1:3] == ["ProviderHTTPError", "503"]
    assert rows["Aichat"][1] == "ProviderTimeoutError"
    assert rows["Lockchat"][1] == "ok" and rows["Mishalsgpt"][1] == "ok"
