"""The command line: chat, providers (--check) and the offline demo, against the replica."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk

from langchain_g4f import DISTRIBUTION, providers
from langchain_g4f.cli import _line_editing, main, session
from langchain_g4f.providers import OpenAICompatible
from langchain_g4f.strategies import STRATEGIES
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
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Hello |from |the |replica" in out  # streamed, chunk by chunk
    assert "failed first: Mishalsgpt (ProviderHTTPError 503)" in out
    assert "answered by:  Lockchat" in out
    answer = expected("Say hello to LangChain — café ☕")
    continued = out.split("== a broken answer continued")[1].splitlines()
    assert continued[1].replace("|", "") == answer  # each character once
    assert continued[2] == f"segments:     Mishalsgpt 20 chars, Lockchat {len(answer) - 20} chars"
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
    assert {r["provider"] for r in redirected.requests} == {
        "gravityengine"
    }  # streams; first by name


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
    redirected: Replica,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the session's history file goes there
    monkeypatch.setattr(sys, "stdin", _Terminal("First question\n\nSecond question\n"))
    code, out, err = run(capsys, "chat", "-p", "Lockchat")
    assert code == 0
    assert "Lockchat (gpt-4)" in err
    assert expected("First question") in out
    assert expected("Second question") in out
    last = redirected.requests[-1]["json"]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]


def test_chat_unreachable_provider_prints_one_line(
    redirected: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    redirected.set_fault("Lockchat", "refuse")
    url = redirected.base_url("Lockchat")
    code, out, err = run(capsys, "chat", "-p", "Lockchat", "--base-url", url, "Hi")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("langchain-g4f: ProviderConnectionError: Lockchat")


def test_chat_router_failure_is_one_line_with_the_attempts(
    redirected: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("Lockchat", "Aichat"):
        redirected.set_fault(name, "http_401")
    code, _, err = run(capsys, "chat", "-p", "Lockchat", "-p", "Aichat", "Hi")
    assert code == 1
    assert err.count("\n") == 1
    assert "AllProvidersFailedError" in err
    assert "Lockchat AuthenticationError 401" in err
    assert "Aichat AuthenticationError 401" in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["chat", "--bogus"], "unrecognized arguments: --bogus"),
        (["chat", "--timeout", "-1", "Hi"], "positive number of seconds"),
        (["chat", "-p", "Nope", "Hi"], "UnknownProviderError"),
        (["chat", "-p", "Lockchat", "-m", "gpt-99", "Hi"], "does not serve model 'gpt-99'"),
        (["chat", "--base-url", "http://127.0.0.1:9/v1", "Hi"], "needs --model"),
        (["frobnicate"], "invalid choice"),
        (["chat", "--strategy", "quickest", "Hi"], "--strategy: invalid choice: 'quickest'"),
    ],
)
def test_bad_command_lines_print_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exited:  # argparse exits by itself
        code = exited.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert fragment in err
    assert "Traceback" not in err


def _listing(capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    code, out, _ = run(capsys, "providers")
    header, *rows = out.splitlines()
    assert code == 0
    assert header.split() == ["PROVIDER", "MODELS", "STREAM", "AUTH", "BASE", "URL", "PATH"]
    # the columns are aligned: MODELS may hold spaces, the last two never do
    return {row.split()[0]: row.split()[-2:] for row in rows}


def test_providers_lists_every_registered_provider(capsys: pytest.CaptureFixture[str]) -> None:
    listed = _listing(capsys)
    assert list(listed) == ["Aichat", "Gravityengine", "Lockchat", "Mishalsgpt"]
    assert listed["Lockchat"] == ["http://super.lockchat.app", "/v1/chat/completions"]


def test_providers_shows_the_base_url_that_base_url_replaces(
    replica: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    replica.reset()
    for name, (base, path) in _listing(capsys).items():
        assert base == providers.get(name).url.rstrip("/")
        # --base-url takes the place of that column; the PATH column is appended to it
        code, _, err = run(capsys, "chat", "-p", name, "--base-url", replica.base_url(name), "Hi")
        assert code == 0, err
        assert replica.requests[-1]["path"] == path


def test_providers_hides_secrets_in_base_urls(capsys: pytest.CaptureFixture[str]) -> None:
    providers.register(
        OpenAICompatible("private", "https://bob:hunter2@llm.example/v1?key=sk-secret&team=red")
    )
    try:
        code, out, _ = run(capsys, "providers")
    finally:
        providers.unregister("private")
    assert code == 0
    assert "hunter2" not in out
    assert "sk-secret" not in out
    assert "https://bob:***@llm.example/v1?key=***&team=red" in out


# --- installing: the distribution name, --version ---------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_distribution_and_its_installed_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}\n"


def test_the_installed_distribution_is_the_one_the_docs_name() -> None:
    dist = metadata.distribution(DISTRIBUTION)
    assert dist.metadata["Name"] == DISTRIBUTION == "langchain-g4f-router"
    assert DISTRIBUTION in metadata.packages_distributions()["langchain_g4f"]
    urls = dict(url.split(", ", 1) for url in dist.metadata.get_all("Project-URL"))
    repo = "https://github.com/langchain-g4f/langchain-g4f-router"
    assert urls == {
        "Homepage": repo,
        "Source": repo,
        "Issues": f"{repo}/issues",
        "Documentation": f"{repo}#readme",
    }
    assert dist.metadata["License-Expression"] == "MIT"
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")
    assert "the langchain-g4f authors" in license_text

    readme = (ROOT / "README.md").read_text()
    assert f"pip install {DISTRIBUTION}" in readme
    assert f'"{DISTRIBUTION}[g4f]"' in readme
    install_lines = [line for line in readme.splitlines() if "pip install" in line]
    for name in ("quickstart", "router", "agents"):
        notebook = (ROOT / "notebooks" / f"{name}.ipynb").read_text()
        assert f'pip install \\"{DISTRIBUTION}[notebooks]\\"' in notebook
        install_lines += [line for line in notebook.splitlines() if "pip install" in line]
    # nothing tells a user to install the unrelated project that holds the old name
    assert all(
        "langchain-g4f-router" in line or "pip install -e" in line for line in install_lines
    ), install_lines


# --- the interactive session ------------------------------------------------------------


class _Answers:
    """A chat model whose first answer is cut by Ctrl-C after two chunks."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []

    def stream(self, messages: list[Any]) -> Iterator[AIMessageChunk]:
        self.calls.append(list(messages))
        yield AIMessageChunk("Once ")
        yield AIMessageChunk("upon ")
        if len(self.calls) == 1:
            raise KeyboardInterrupt
        yield AIMessageChunk("a time.")


def _lines(*lines: str, end: type[BaseException] = EOFError) -> Any:
    pending = list(lines)

    def read_line(prompt: str) -> str:
        assert prompt == "you> "
        if not pending:
            raise end
        return pending.pop(0)

    return read_line


@pytest.mark.parametrize("end", [EOFError, KeyboardInterrupt])
def test_ctrl_c_stops_the_answer_and_the_session_goes_on(end: type[BaseException]) -> None:
    llm, out, err = _Answers(), io.StringIO(), io.StringIO()
    code = session(llm, [], _lines("A story", "", "Go on", end=end), out, err)  # type: ignore[arg-type]
    assert code == 0  # Ctrl-D, or Ctrl-C at the prompt, ends the session
    assert out.getvalue() == "Once upon \nOnce upon a time.\n"
    assert err.getvalue() == "langchain-g4f: answer stopped\n\n"
    # the stopped answer stays in the conversation, as far as it was written
    second = llm.calls[1]
    assert [(m.type, m.content) for m in second] == [
        ("human", "A story"),
        ("ai", "Once upon "),
        ("human", "Go on"),
    ]


def test_ctrl_c_before_any_text_drops_the_question() -> None:
    class Silent:
        calls = 0

        def stream(self, messages: list[Any]) -> Iterator[AIMessageChunk]:
            self.last, self.calls = list(messages), self.calls + 1
            if self.calls == 1:
                raise KeyboardInterrupt
            yield AIMessageChunk("Fine.")

    llm, out = Silent(), io.StringIO()
    assert session(llm, [], _lines("First", "Second"), out, io.StringIO()) == 0  # type: ignore[arg-type]
    assert [m.content for m in llm.last] == ["Second"]
    assert out.getvalue() == "\nFine.\n"


def test_empty_stdin_is_an_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(" \n\n"))
    code, out, err = run(capsys, "chat", "-p", "Lockchat")
    assert (code, out) == (2, "")
    assert err == "langchain-g4f: error: no prompt: standard input was empty\n"


def test_strategy_choices_come_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["chat", "--help"])
    assert "--strategy {" + ",".join(STRATEGIES) + "}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["chat", "--strategy", "quickest", "Hi"])
    err = capsys.readouterr().err
    assert all(name in err.partition("choose from")[2] for name in STRATEGIES)


def test_a_history_file_that_cannot_be_used_fails_soft(tmp_path: Path) -> None:
    err = io.StringIO()
    path = tmp_path / "history"
    path.mkdir()  # a directory: neither readable nor writable as a file
    save = _line_editing(str(path), err)
    save()
    said = err.getvalue().splitlines()
    assert len(said) == 2
    assert said[0].startswith(f"langchain-g4f: history not read from {path}: ")
    assert said[1].startswith(f"langchain-g4f: history not saved to {path}: ")


class _Screen:
    """What a program running in a pseudo-terminal has written."""

    def __init__(self, fd: int) -> None:
        self.fd, self.text = fd, ""

    def wait_for(self, fragment: str, *, start: int = 0, timeout: float = 20.0) -> int:
        """Read until ``fragment`` shows up after ``start``; returns where it ends."""
        deadline = time.monotonic() + timeout
        while (found := self.text.find(fragment, start)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"{fragment!r} never showed up in:\n{self.text}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.text += os.read(self.fd, 4096).decode(errors="replace")
                except OSError:  # the program ended
                    assert fragment in self.text[start:], self.text
        return found + len(fragment)


def test_terminal_session_edits_lines_keeps_history_and_survives_ctrl_c(
    replica: Replica, tmp_path: Path
) -> None:
    """A session as a user has it: a terminal, readline, Ctrl-C (SIGINT) mid-answer."""
    pytest.importorskip("readline")  # line editing is readline's
    replica.reset()
    replica.set_fault("Lockchat", "stall", after_chunks=2)  # two chunks, then nothing
    terminal, child = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "langchain_g4f",
            "chat",
            "-p",
            "Lockchat",
            "--base-url",
            replica.base_url("Lockchat"),
        ],
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    os.close(child)
    screen = _Screen(terminal)
    try:
        at = screen.wait_for("you> ")
        os.write(terminal, b"Tell me a storx\x7fy\r")  # Backspace edits the line
        at = screen.wait_for("Hello from ", start=at)
        process.send_signal(signal.SIGINT)
        at = screen.wait_for("answer stopped", start=at)
        at = screen.wait_for("you> ", start=at)
        replica.set_fault("Lockchat", None)
        os.write(terminal, b"\x1b[A\r")  # Up: the last line again, from the history
        at = screen.wait_for(reply_for([{"role": "user", "content": "Tell me a story"}]), start=at)
        screen.wait_for("you> ", start=at)
        os.write(terminal, b"\x04")  # Ctrl-D at the prompt
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(terminal)
    sent = replica.requests[-1]["json"]["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "Tell me a story"),
        ("assistant", "Hello from "),
        ("user", "Tell me a story"),
    ]
    assert (tmp_path / ".langchain_g4f_history").read_text().splitlines()[-1] == "Tell me a story"


def test_providers_check_probes_each_and_reports_status_and_latency(
    redirected: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "providers", "--check", "--timeout", "2")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 0
    assert err == ""
    assert all(row[1] == "ok" and row[3] == "ms" for row in rows.values())

    redirected.set_fault("Gravityengine", "http_503")
    redirected.set_fault("Aichat", "hang")
    code, out, err = run(capsys, "providers", "--check", "--timeout", "0.5")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert code == 1
    assert "2 of 4 providers failed" in err
    assert rows["Gravityengine"][1:3] == ["ProviderHTTPError", "503"]
    assert rows["Aichat"][1] == "ProviderTimeoutError"
    assert rows["Lockchat"][1] == "ok"
    assert rows["Mishalsgpt"][1] == "ok"


# --- the endpoints switch, validation, pipes, health ------------------------------------


@pytest.mark.parametrize("how", ["environment", "option"])
def test_chat_follows_the_endpoints_switch_offline(
    how: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_url = providers.get("Lockchat").url
    argv = ["chat", "-p", "Lockchat", "Hello offline"]
    if how == "environment":
        monkeypatch.setenv("LANGCHAIN_G4F_ENDPOINTS", "offline")
    else:
        monkeypatch.delenv("LANGCHAIN_G4F_ENDPOINTS", raising=False)
        argv[1:1] = ["--endpoints", "offline"]
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (0, expected("Hello offline") + "\n", "")
    assert providers.get("Lockchat").url == seed_url  # the switch is undone afterwards


def test_providers_lists_the_replicas_urls_offline(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "providers", "--endpoints", "offline")
    assert code == 0
    listed = {line.split()[0]: line.split()[-2] for line in out.splitlines()[1:]}
    assert listed["Lockchat"].startswith("http://127.0.0.1:")


def test_chat_with_an_endpoint_url_asks_it_for_the_model(
    replica: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    replica.reset()
    url = replica.base_url("openai") + "/v1"
    code, out, _ = run(capsys, "chat", "--endpoints", url, "-p", "Lockchat", "-m", "qwen3", "Hi")
    assert (code, out) == (0, expected("Hi") + "\n")
    assert replica.requests[-1]["json"]["model"] == "qwen3"


def test_cli_values_are_checked_as_the_api_checks_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "chat", "--base-url", "notaurl", "-m", "x", "Hi")
    assert (code, out) == (2, "")
    assert err == (
        "langchain-g4f: error: ConfigurationError: base_url must be an absolute http:// or "
        "https:// URL with a host, not 'notaurl' (for example 'http://localhost:8080')\n"
    )
    code, _, err = run(capsys, "chat", "--endpoints", "ftp://x", "Hi")
    assert code == 2
    assert "LANGCHAIN_G4F_ENDPOINTS must be 'offline', 'live'" in err


@pytest.mark.parametrize("command", [["providers"], ["demo"]])
def test_output_into_a_closed_pipe_ends_quietly(command: list[str]) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "langchain_g4f", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "LANGCHAIN_G4F_ENDPOINTS": "offline"},
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        child.stdout.readline()  # as `| head -1`
        child.stdout.close()
        err = child.stderr.read().decode()
        code = child.wait(timeout=60)
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
    assert code in (0, 141)


def test_health_names_an_unknown_provider(
    redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "health", "--store", redis_server.url, "-p", "Lockchatt")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "no provider named 'Lockchatt' (did you mean 'Lockchat'?)" in err
