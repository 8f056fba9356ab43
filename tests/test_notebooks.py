"""The notebooks in ``notebooks/``, executed as a user runs them, with assertions on their outputs.

Each notebook runs unchanged, top to bottom, in a fresh ``python3`` kernel (this
interpreter) with ``notebooks/`` as its working directory and no
``LANGCHAIN_G4F_ENDPOINTS`` in its environment: its first code cell (tagged
``playground``) starts the local replica and points the seed providers at it, as
it does in Jupyter. The tests read the outputs of cells found by their tags
(``check-...`` in the cell metadata).

A cell that raises fails the run (nbclient's ``CellExecutionError``).
"""

from __future__ import annotations

import ast
import copy
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from langchain_g4f import playground
from langchain_g4f.testing import Replica

pytestmark = pytest.mark.loopback

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["quickstart.ipynb", "router.ipynb", "agents.ipynb"]
SEEDS = ["Mishalsgpt", "Gravityengine", "Lockchat", "Aichat"]

PLAYGROUND_TAG = "playground"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- running and reading -------------------------------------------------------


def execute(
    name: str, env: dict[str, str] | None = None, *, first_cell_twice: bool = False
) -> nbformat.NotebookNode:
    """Run a notebook as stored; ``env``: the documented variables the kernel sees."""
    # the kernel is this interpreter, so it runs this checkout's package
    kernel = KernelSpecManager().get_kernel_spec("python3").argv[0]
    kernel = shutil.which(kernel) or kernel  # a bare "python" is looked up on PATH
    assert Path(kernel).resolve() == Path(sys.executable).resolve()
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if first_cell_twice:  # as a user who runs the first cell again
        first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        nb.cells.insert(first + 1, copy.deepcopy(nb.cells[first]))
        nb.cells[first + 1].metadata["tags"] = ["playground-again"]
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    with pytest.MonkeyPatch.context() as environ:  # the kernel inherits this environment
        for variable in (playground.ENV, "LANGCHAIN_G4F_MODEL"):
            environ.delenv(variable, raising=False)
        for variable, value in (env or {}).items():
            environ.setenv(variable, value)
        client.execute()  # raises CellExecutionError if a cell raises
    return nb


def cell(nb: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    found = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected one cell tagged {tag!r}, found {len(found)}"
    return found[0]


def stdout(c: nbformat.NotebookNode) -> str:
    """What the cell printed, and the text of its results."""
    parts = []
    for out in c.get("outputs", []):
        if out.output_type == "stream" and out.name == "stdout":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return ANSI.sub("", "".join(parts))  # pretty_print() colours its titles


def lines(nb: nbformat.NotebookNode, tag: str) -> list[str]:
    return stdout(cell(nb, tag)).splitlines()


def value_after(text: str, label: str) -> str:
    """The rest of the first line that starts with ``label``."""
    for line in text.splitlines():
        if line.startswith(label):
            return line[len(label) :].strip()
    msg = f"no line starting with {label!r} in:\n{text}"
    raise AssertionError(msg)


def assert_ran_cleanly(nb: nbformat.NotebookNode) -> None:
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cell"
    assert all(c.execution_count is not None for c in code), "a cell did not run"
    for c in code:
        for out in c.outputs:
            assert out.output_type != "error", f"cell raised:\n{c.source}\n{out.get('evalue')}"
            text = out.get("text", "") + "".join(
                v for v in out.get("data", {}).values() if isinstance(v, str)
            )
            assert "Traceback" not in text, f"a traceback in the output of:\n{c.source}\n{text}"
            assert not (out.output_type == "stream" and out.name == "stderr"), (
                f"stderr output from:\n{c.source}\n{out.text}"
            )
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert PLAYGROUND_TAG in first.metadata.get("tags", []), "the playground cell comes first"
    said = stdout(first).strip()
    assert re.fullmatch(
        r"offline: the seed providers are served by the local replica at http://127\.0\.0\.1:\d+",
        said,
    ), said


@pytest.fixture(scope="module")
def quickstart() -> nbformat.NotebookNode:
    return execute("quickstart.ipynb")


@pytest.fixture(scope="module")
def router() -> nbformat.NotebookNode:
    return execute("router.ipynb")


@pytest.fixture(scope="module")
def agents() -> nbformat.NotebookNode:
    return execute("agents.ipynb")


# --- the stored notebooks (no kernel) ----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs_and_the_playground_first(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    first, *code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in [first, *code])
    for c in [first, *code]:
        ast.parse("\n".join(line for line in c.source.splitlines() if not line.startswith("%")))
    # the first code cell alone chooses the endpoints, the same way in every notebook
    assert first.metadata.get("tags") == [PLAYGROUND_TAG]
    assert (
        first.source
        == cell(nbformat.read(NOTEBOOKS / NAMES[0], as_version=4), PLAYGROUND_TAG).source
    )
    assert "playground.connect(ENDPOINTS" in first.source
    source = "\n".join(c.source for c in code)
    assert "playground" not in source
    assert "redirect_providers" not in source
    if name != "router.ipynb":  # only the router's failure sections use a replica of their own
        assert "Replica" not in source
        assert "base_url" not in source
    install = [line for line in nb.cells[0].source.splitlines() if "pip install" in line]
    assert install == ['pip install "langchain-g4f-router[notebooks]"']


# --- quickstart ------------------------------------------------------------------


def test_quickstart_runs_cleanly(quickstart: Any) -> None:
    assert_ran_cleanly(quickstart)
    assert stdout(cell(quickstart, "check-setup")).split() == ["Lockchat", "gpt-4"]


def test_quickstart_invoke(quickstart: Any) -> None:
    content, metadata = lines(quickstart, "check-invoke")
    assert content.endswith("Hello! What can you do?")  # the replica echoes the prompt
    metadata = ast.literal_eval(metadata)
    assert metadata["provider"] == "Lockchat"
    assert metadata["model_name"] == "gpt-4"
    assert metadata["finish_reason"] == "stop"


@pytest.mark.parametrize("tag", ["check-stream", "check-astream"])
def test_quickstart_streams_in_several_chunks(quickstart: Any, tag: str) -> None:
    count, joined = lines(quickstart, tag)
    pieces = joined.split("|")
    assert count == f"{len(pieces)} chunks"
    assert len(pieces) >= 5
    assert all(pieces)
    text = "".join(pieces)
    assert "lighthouse" in text if tag == "check-stream" else "asynchronously" in text


def test_quickstart_ainvoke(quickstart: Any) -> None:
    assert stdout(cell(quickstart, "check-ainvoke")).strip().endswith("Hello from asyncio!")


def test_quickstart_batch_returns_three_answers_in_order(quickstart: Any) -> None:
    *answers, count = lines(quickstart, "check-batch")
    assert count == "3 answers"
    assert len(answers) == 3
    prompts = ["What is 2 + 2?", "Name a primary colour.", "Say hello in French."]
    for prompt, line in zip(prompts, answers, strict=True):
        asked, answer = (ast.literal_eval(s) for s in line.split(" -> "))
        assert asked == prompt
        assert answer.endswith(prompt)


def test_quickstart_chain(quickstart: Any) -> None:
    kind, answer = lines(quickstart, "check-chain")
    assert kind == "a string: True"
    assert answer.endswith("Explain photosynthesis in one sentence.")  # the template was filled


def test_quickstart_errors(quickstart: Any) -> None:
    unknown, unsupported, is_value_error = lines(quickstart, "check-errors")
    assert unknown.startswith("UnknownProviderError: no provider named 'NoSuchProvider'")
    assert all(name in unknown for name in SEEDS)  # it lists the registered ones
    assert unsupported.startswith("UnsupportedModelError: Lockchat:")
    assert "gpt-5" in unsupported
    assert is_value_error == "also a ValueError: True"


# --- router ----------------------------------------------------------------------


def test_router_runs_cleanly(router: Any) -> None:
    assert_ran_cleanly(router)


def test_router_default_strategy(router: Any) -> None:
    text = stdout(cell(router, "check-default"))
    assert value_after(text, "provider:") in SEEDS
    assert value_after(text, "attempts:") == "[]"
    calls = lines(router, "check-default-calls")
    assert [line.split()[0] for line in calls] == [str(i) for i in range(6)]
    assert {line.split()[1] for line in calls} <= set(SEEDS)


def test_router_strategies(router: Any) -> None:
    rows = {line.split()[0]: line.split()[1:] for line in lines(router, "check-strategies")}
    assert set(rows) == {"priority", "round_robin", "random", "fastest"}
    assert all(len(row) == 6 and set(row) <= set(SEEDS) for row in rows.values())
    assert rows["priority"] == ["Mishalsgpt"] * 6
    assert rows["round_robin"] == SEEDS + SEEDS[:2]
    # fastest: nothing measured yet, so the given order first
    assert rows["fastest"][0] == "Mishalsgpt"


def test_router_falls_back_from_the_failing_provider(router: Any) -> None:
    text = stdout(cell(router, "check-fallback"))
    assert value_after(text, "answered by:") == "Aichat"
    failed = [
        ast.literal_eval(line[len("failed: ") :])
        for line in text.splitlines()
        if line.startswith("failed: ")
    ]
    # a 503 can heal: one retry of Lockchat, then the fallback
    assert [(a["provider"], a["status"], a["error"]) for a in failed] == [
        ("Lockchat", 503, "ProviderHTTPError")
    ] * 2
    cooldown = stdout(cell(router, "check-cooldown"))
    assert value_after(cooldown, "failures:") == "2"
    assert 0 < float(value_after(cooldown, "cooldown left:").split()[0]) <= 5
    assert "503" in value_after(cooldown, "last error:")


def test_router_hedging_cuts_time_to_first_token(router: Any) -> None:
    text = stdout(cell(router, "check-hedge"))
    plain = float(re.search(r"no hedging: +first token after ([\d.]+) s", text).group(1))
    match = re.search(r"hedge_after=0\.1: +first token after ([\d.]+) s, from (\w+)", text)
    hedged, winner = float(match.group(1)), match.group(2)
    assert plain >= 0.45  # Lockchat's first piece waits 0.5 s
    assert winner == "Aichat"
    assert 0.1 <= hedged < plain
    assert hedged < 0.45


def _table(nb: Any, tag: str) -> dict[str, dict[str, str]]:
    """The stats table printed by ``show_stats``: {provider: {column: cell}}."""
    header, *rows = (re.split(r"\s{2,}", line) for line in lines(nb, tag))
    assert header == [
        "provider",
        "successes",
        "failures",
        "consecutive",
        "cooldown_left",
        "ttft",
        "last_error",
    ]
    assert all(len(row) == len(header) for row in rows)
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}


def test_router_stats_table(router: Any) -> None:
    table = _table(router, "check-stats")
    assert sorted(table) == sorted(SEEDS)
    # the router over the seeds answered 7 calls (1 + 6), without a failure
    assert sum(int(row["successes"]) for row in table.values()) == 7
    assert all(row["failures"] == "0" and row["last_error"] == "-" for row in table.values())
    measured = [row["ttft"] for row in table.values() if row["ttft"] != "-"]
    assert measured
    assert all(re.fullmatch(r"\d+\.\d ms", ttft) for ttft in measured)

    fallback = _table(router, "check-stats-fallback")
    assert sorted(fallback) == ["Aichat", "Lockchat"]
    lockchat, aichat = fallback["Lockchat"], fallback["Aichat"]
    assert (lockchat["successes"], lockchat["failures"], lockchat["consecutive"]) == ("0", "2", "2")
    assert lockchat["ttft"] == "-"
    assert lockchat["last_error"].startswith("ProviderHTTPError")
    assert (aichat["successes"], aichat["failures"], aichat["last_error"]) == ("2", "0", "-")


def test_router_plot_renders(router: Any) -> None:
    outputs = cell(router, "check-plot").outputs
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1
    assert len(images[0].data["image/png"]) > 1000


def test_router_learning_section_runs(router: Any) -> None:
    answered, learned = lines(router, "check-learning")
    assert len(answered.split()) == 12
    assert set(answered.split()) <= {"Lockchat", "Mishalsgpt"}
    assert answered.split()[-3:] == ["Mishalsgpt"] * 3  # the failing provider went second
    assert learned.startswith("Lockchat: {")
    assert "recent success rate" in learned


def test_router_continues_a_broken_answer(router: Any) -> None:
    text = stdout(cell(router, "check-continuation"))
    assert value_after(text, "same as an unbroken answer:") == "True"
    assert value_after(text, "finished by:") == "Mishalsgpt"
    segments = ast.literal_eval(value_after(text, "segments:"))
    assert [s["provider"] for s in segments] == ["Lockchat", "Mishalsgpt"]
    assert segments[0]["chars"] == 20
    broken = ast.literal_eval(value_after(text, "broken:"))
    assert broken == [("Lockchat", "ProviderResponseError")]


def test_router_on_interrupt_raise(router: Any) -> None:
    name, partial = stdout(cell(router, "check-interrupt-raise")).strip().split(" ", 1)
    assert name == "StreamInterruptedError"
    assert len(ast.literal_eval(partial)) == 20


# --- agents ----------------------------------------------------------------------


def test_agents_run_cleanly(agents: Any) -> None:
    assert_ran_cleanly(agents)


def test_agents_bind_tools(agents: Any) -> None:
    text = stdout(cell(agents, "check-bind-tools"))
    assert value_after(text, "content:") == "''"
    calls = ast.literal_eval(value_after(text, "tool_calls:"))
    assert [(c["name"], c["args"]) for c in calls] == [("get_weather", {"location": "Paris"})]
    assert stdout(cell(agents, "check-tool-result")).strip().endswith("It is sunny in Paris.")


def test_agents_streamed_tool_call(agents: Any) -> None:
    text = stdout(cell(agents, "check-stream-tool"))
    chunks = ast.literal_eval(value_after(text, "tool_call_chunks:"))
    assert chunks[0]["name"] == "get_time"
    calls = ast.literal_eval(value_after(text, "tool_calls:"))
    assert [(c["name"], c["args"]) for c in calls] == [("get_time", {"city": "Tokyo"})]


def test_agents_structured_output(agents: Any) -> None:
    rows = lines(agents, "check-structured")
    assert [row.split()[0] for row in rows] == ["function_calling", "json_schema"]
    assert all(
        row.split(None, 1)[1].startswith("Weather(location='Paris', summary=") for row in rows
    )


def test_agent_invoke_calls_the_tool_and_answers(agents: Any) -> None:
    text = stdout(cell(agents, "check-agent-invoke"))
    titles = re.findall(r"=+ (\w+ Message) =+", text)
    assert titles == ["Human Message", "Ai Message", "Tool Message", "Ai Message"]
    call, result, answer = re.split(r"=+ \w+ Message =+", text)[2:]
    assert "Tool Calls:" in call
    assert "get_weather" in call
    assert "location: Paris" in call
    assert "Name: get_weather" in result
    assert "It is sunny in Paris." in result
    assert "It is sunny in Paris." in answer
    assert "Tool Calls:" not in answer


def test_agent_streams_tokens(agents: Any) -> None:
    text = stdout(cell(agents, "check-agent-stream"))
    assert re.search(r"^\[calling get_time with .*Tokyo", text, re.MULTILINE)
    assert "[tool get_time returned: It is noon in Tokyo.]" in text
    *_, answer, count = text.splitlines()
    assert "It is noon in Tokyo." in answer
    assert int(re.fullmatch(r"\((\d+) tokens\)", count).group(1)) > 3


def test_agents_reasoning_apart_from_the_answer(agents: Any) -> None:
    text = stdout(cell(agents, "check-reasoning"))
    assert (
        value_after(text, "reasoning:")
        == "The user said: Why is the sky blue?. I will answer in kind."
    )
    assert value_after(text, "answer:") == "Hello from the replica — you said: Why is the sky blue?"
    rows = lines(agents, "check-reasoning-stream")
    kinds = [row.split(" chunk:")[0] for row in rows]
    assert kinds.count("reasoning") > 1
    assert kinds == sorted(kinds, reverse=True)
    assert not any("think>" in row for row in rows)
    assert [row.split(" ->")[0] for row in lines(agents, "check-reasoning-v1")] == [
        "reasoning",
        "text",
    ]


def test_agents_structured_output_strategy_follows_the_profile(agents: Any) -> None:
    text = stdout(cell(agents, "check-agent-structured"))
    assert "'structured_output': True" in value_after(text, "profile:")
    provider, tool = lines(agents, "check-agent-structured")[1:]
    assert provider.startswith("structured_output=True: JSON answer -> Weather(location='Paris'")
    assert tool.startswith("structured_output=False: tool call Weather -> Weather(location='Paris'")


# --- the documented modes, and the first cell run twice -------------------------------


def test_running_the_first_cell_twice_keeps_the_seed_names_working() -> None:
    nb = execute("quickstart.ipynb", first_cell_twice=True)
    assert_ran_cleanly(nb)
    again = stdout(cell(nb, "playground-again")).strip()
    assert again.startswith("offline: the seed providers are served by the local replica")
    assert again != stdout(cell(nb, PLAYGROUND_TAG)).strip()  # a fresh replica
    content, _ = lines(nb, "check-invoke")
    assert content.endswith("Hello! What can you do?")


@pytest.fixture(scope="module")
def openai_server() -> Iterator[str]:
    """An OpenAI-compatible server on 127.0.0.1, as a user's LANGCHAIN_G4F_ENDPOINTS."""
    with Replica() as server:
        yield server.base_url("openai") + "/v1"


@pytest.mark.parametrize("name", NAMES)
def test_every_notebook_runs_against_an_openai_compatible_url(
    name: str, openai_server: str
) -> None:
    """The README's second notebook command: an endpoint URL and a model of its own."""
    nb = execute(
        name, {playground.ENV: openai_server, "LANGCHAIN_G4F_MODEL": "deepseek-r1-distill"}
    )
    code = [c for c in nb.cells if c.cell_type == "code"]
    for c in code:
        for out in c.outputs:
            assert out.output_type != "error", f"cell raised:\n{c.source}\n{out.get('evalue')}"
            assert not (out.output_type == "stream" and out.name == "stderr"), out.text
    said = stdout(code[0]).strip()
    assert said == f"live: every seed provider is served by {openai_server}"
    if name == "quickstart.ipynb":
        assert stdout(cell(nb, "check-setup")).split() == ["Lockchat", "deepseek-r1-distill"]
    if name == "agents.ipynb":  # the reasoning cell asked the endpoint, not a local default
        reasoning = value_after(stdout(cell(nb, "check-reasoning")), "reasoning:")
        assert reasoning.startswith("The user said: Why is the sky blue?")
