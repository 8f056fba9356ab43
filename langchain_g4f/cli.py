"""The ``langchain-g4f`` command line (also ``python -m langchain_g4f``).

- ``chat``: one prompt (arguments or stdin) or an interactive session, streamed;
  a router over every registered provider unless ``--provider`` names one. The
  session has line editing and a history (``~/.langchain_g4f_history``) where
  ``readline`` is available; Ctrl-C stops the answer being written, Ctrl-C or
  Ctrl-D at the prompt ends the session.
- ``providers``: the registered providers and the base URL ``--base-url``
  replaces for each (secrets hidden); ``--check`` probes each one.
- ``demo``: offline, against the local replica: invoke, streaming, the router
  falling back past a failing provider, and an agent calling a tool.
- ``health --store redis://...``: the fleet's view of its providers from a shared
  store: circuit state, cooldown left, success rate, time to first token, budget left.

Errors print one line on stderr and exit non-zero (1 for a provider failure,
2 for a bad command line or configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_g4f import DISTRIBUTION, __version__, providers
from langchain_g4f._redact import redact_url
from langchain_g4f.errors import (
    AllProvidersFailedError,
    ConfigurationError,
    G4FError,
    did_you_mean,
)
from langchain_g4f.health import HealthPolicy
from langchain_g4f.providers.base import check_http_url
from langchain_g4f.redis_store import RedisStore
from langchain_g4f.strategies import STRATEGIES

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = ["main", "session"]

_PROG = "langchain-g4f"
#: The interactive session's history, under the user's home.
_HISTORY_FILE = "~/.langchain_g4f_history"
_HISTORY_LENGTH = 1000
#: The exit status of a command whose output pipe closed early: 128 + SIGPIPE, as the shell's.
_BROKEN_PIPE = 141


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _UsageError(Exception):
    """A command line that cannot run: exit status 2."""


# --- chat ----------------------------------------------------------------------


def _chat_model(args: argparse.Namespace) -> BaseChatModel:
    from langchain_g4f import ChatG4F, ChatG4FRouter

    options: dict[str, Any] = {"timeout": args.timeout}
    if args.api_key:
        options["api_key"] = args.api_key
    names = args.provider or []
    if args.base_url:
        check_http_url(args.base_url)  # the API's own check and message
    if args.base_url and len(names) > 1:
        msg = "--base-url applies to one --provider"
        raise _UsageError(msg)
    if args.base_url and not names:
        # Any OpenAI-compatible endpoint: Ollama, vLLM, llama.cpp, a g4f API server...
        endpoint = providers.OpenAICompatible("endpoint", args.base_url)
        if not args.model:
            msg = "--base-url without --provider needs --model"
            raise _UsageError(msg)
        return ChatG4F(provider=endpoint, model=args.model, **options)
    if len(names) == 1:
        return ChatG4F(provider=names[0], model=args.model, base_url=args.base_url, **options)
    chats = [ChatG4F(provider=name, timeout=args.timeout) for name in names] or None
    return ChatG4FRouter(
        providers=chats, model=args.model, strategy=args.strategy, timeout=args.timeout
    )


def _stream_answer(llm: BaseChatModel, messages: list[BaseMessage], out: TextIO) -> str:
    pieces: list[str] = []
    try:
        for chunk in llm.stream(messages):
            if chunk.content:
                text = chunk.text
                pieces.append(text)
                out.write(text)
                out.flush()
    except KeyboardInterrupt as stop:
        raise _Stopped("".join(pieces)) from stop
    out.write("\n")
    return "".join(pieces)


class _Stopped(KeyboardInterrupt):
    """Ctrl-C while an answer was being written; ``args[0]`` is the text written so far."""


def _chat(args: argparse.Namespace) -> int:
    llm = _chat_model(args)
    history: list[BaseMessage] = [SystemMessage(args.system)] if args.system else []
    prompt = " ".join(args.prompt)
    if not prompt and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip()
        if not prompt:
            msg = "no prompt: standard input was empty"
            raise _UsageError(msg)
    if prompt:
        _stream_answer(llm, [*history, HumanMessage(prompt)], sys.stdout)
        return 0
    save_history = _line_editing(str(Path(_HISTORY_FILE).expanduser()), sys.stderr)
    sys.stderr.write(
        f"{_describe(llm)}; Ctrl-C stops an answer, "
        "Ctrl-D or Ctrl-C at the prompt ends the session\n"
    )
    try:
        return session(llm, history, input, sys.stdout, sys.stderr)
    finally:
        save_history()


def session(
    llm: BaseChatModel,
    history: list[BaseMessage],
    read_line: Callable[[str], str],
    out: TextIO,
    err: TextIO,
) -> int:
    """The interactive loop: ask, stream the answer, keep the conversation.

    Ctrl-C while an answer streams stops that answer (the text written so far
    stays in the conversation) and asks again; Ctrl-C or Ctrl-D at the prompt
    ends the session with status 0. Provider failures print one line and ask
    again. Empty lines are skipped.
    """
    while True:
        try:
            line = read_line("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            err.write("\n")
            return 0
        if not line:
            continue
        history.append(HumanMessage(line))
        try:
            history.append(AIMessage(_stream_answer(llm, history, out)))
        except _Stopped as stopped:
            out.write("\n")
            err.write(f"{_PROG}: answer stopped\n")
            partial = stopped.args[0]
            if partial:
                history.append(AIMessage(partial))
            else:
                history.pop()
        except G4FError as exc:
            history.pop()
            err.write(f"{_PROG}: {_one_line(exc)}\n")


def _line_editing(path: str, err: TextIO) -> Callable[[], None]:
    """Line editing and history for ``input()``; returns what saves the history.

    Without ``readline`` (Windows without pyreadline) the session still works,
    without editing or history. A history file that cannot be read or written
    is reported in one line and the session goes on.
    """
    try:
        import readline
    except ImportError:
        return lambda: None
    readline.set_history_length(_HISTORY_LENGTH)
    try:
        readline.read_history_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        err.write(f"{_PROG}: history not read from {path}: {exc.strerror or exc}\n")

    def save() -> None:
        try:
            readline.write_history_file(path)
        except OSError as exc:
            err.write(f"{_PROG}: history not saved to {path}: {exc.strerror or exc}\n")

    return save


def _describe(llm: BaseChatModel) -> str:
    names = getattr(llm, "provider_names", None)
    if names is not None:
        return f"router over {', '.join(names)}"
    return f"{llm.provider_name} ({llm.model_name})"  # type: ignore[attr-defined]


# --- providers -------------------------------------------------------------------


def _probe(name: str, timeout: float) -> tuple[str, float | None]:
    """``("ok", seconds to first text)`` or ``(error line, None)``."""
    from langchain_g4f import ChatG4F

    started = time.perf_counter()
    try:
        llm = ChatG4F(provider=name, timeout=timeout, max_retries=0)
        first = next((chunk for chunk in llm.stream("Say OK.") if chunk.content), None)
    except G4FError as exc:
        status = getattr(exc, "status", None)
        return type(exc).__name__ + (f" {status}" if status else ""), None
    if first is None:
        return "EmptyResponseError", None
    return "ok", time.perf_counter() - started


def _table(rows: Iterable[Sequence[str]], out: TextIO) -> None:
    rows = [list(row) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out.writelines(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


def _catalog() -> int:
    """The catalog's endpoints, and whether each one's key is set (never the key)."""
    rows = [
        [
            entry.name,
            "none needed" if entry.keyless else ("set" if entry.has_key() else "not set"),
            " or ".join(f"${name}" for name in entry.key_env) or "-",
            "local" if entry.local else "hosted",
            entry.model or "(yours)",
            redact_url(entry.base_url),
        ]
        for entry in providers.CATALOG.values()
    ]
    _table([["CATALOG", "KEY", "KEY FROM", "WHERE", "MODEL", "BASE URL"], *rows], sys.stdout)
    return 0


def _providers(args: argparse.Namespace) -> int:
    if args.catalog:
        return _catalog()
    found = providers.all_providers()
    header = ["PROVIDER", "MODELS", "STREAM", "AUTH", "BASE URL", "PATH"]
    rows = [
        [
            p.name,
            ", ".join(p.model) if p.model else "any",
            "yes" if p.supports_stream else "no",
            "key" if p.needs_auth else "none",
            redact_url(p.url),
            p.path,
        ]
        for p in found
    ]
    if not args.check:
        _table([header, *rows], sys.stdout)
        return 0
    with ThreadPoolExecutor(max_workers=len(found) or 1) as pool:
        probes = list(pool.map(lambda p: _probe(p.name, args.timeout), found))
    for row, (status, latency) in zip(rows, probes, strict=True):
        row[1:1] = [status, f"{latency * 1000:.0f} ms" if latency is not None else "-"]
    _table([[header[0], "STATUS", "FIRST TEXT", *header[1:]], *rows], sys.stdout)
    failed = sum(latency is None for _, latency in probes)
    if failed:
        sys.stderr.write(f"{_PROG}: {failed} of {len(probes)} providers failed the check\n")
    return 1 if failed else 0


# --- demo --------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from langchain_g4f import ChatG4F, ChatG4FRouter
    from langchain_g4f.testing import Replica

    out = sys.stdout

    def get_weather(location: str) -> str:
        """Get the current weather at a location."""
        return f"It is sunny in {location}."

    def show_stream(chunks: Iterable[Any]) -> Any:
        total = None
        for chunk in chunks:
            total = chunk if total is None else total + chunk
            if chunk.content:
                out.write(f"{chunk.content}|")
                out.flush()
        out.write("\n")
        return total

    with Replica() as replica, replica.redirect_providers():
        out.write(f"Offline: every seed provider points at the local replica ({replica.url}).\n")

        out.write("\n== invoke, every provider\n")
        for name in providers.names():
            message = ChatG4F(provider=name).invoke(args.prompt)
            out.write(f"{name:<14} {message.content}\n")

        out.write("\n== stream, then astream, every provider ('|' marks chunk boundaries)\n")
        for name in providers.names():
            llm = ChatG4F(provider=name)
            out.write(f"{name:<14} ")
            show_stream(llm.stream(args.prompt))

            async def astream(llm: ChatG4F) -> None:
                out.write(f"{'':<14} ")
                async for chunk in llm.astream(args.prompt):
                    out.write(f"{chunk.content}|" if chunk.content else "")
                out.write("\n")

            asyncio.run(astream(llm))
        out.write("(Aichat's protocol cannot stream: its answer is one chunk)\n")

        out.write("\n== router fallback: Mishalsgpt answers 503, Lockchat takes over\n")
        replica.set_fault("Mishalsgpt", "http_503")
        router = ChatG4FRouter(
            providers=["Mishalsgpt", "Lockchat"], strategy="priority", max_retries=0
        )
        message = show_stream(router.stream(args.prompt))
        for attempt in message.response_metadata["attempts"]:
            out.write(
                f"failed first: {attempt['provider']} ({attempt['error']} {attempt['status']})\n"
            )
        out.write(f"answered by:  {message.response_metadata['provider']}\n")
        replica.reset()

        out.write(
            "\n== a broken answer continued: Mishalsgpt's stream breaks, Lockchat finishes it\n"
        )
        replica.set_fault("Mishalsgpt", "reset", after_chars=20)
        mended = ChatG4FRouter(
            providers=["Mishalsgpt", "Lockchat"], strategy="priority", max_retries=0
        )
        message = show_stream(mended.stream(args.prompt))
        segments = message.response_metadata.get("segments", [])
        out.write("segments:     ")
        out.write(", ".join(f"{s['provider']} {s['chars']} chars" for s in segments) + "\n")
        replica.reset()

        out.write("\n== an agent calling a tool (through the router)\n")
        agent = router.bind_tools([get_weather])
        messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
        reply = agent.invoke(messages)
        messages.append(reply)
        for call in reply.tool_calls:
            result = get_weather(**call["args"])
            out.write(f"tool call:    {call['name']}({call['args']}) -> {result!r}\n")
            messages.append(ToolMessage(result, tool_call_id=call["id"]))
        out.write("answer:       ")
        show_stream(agent.stream(messages))
    return 0


# --- health ----------------------------------------------------------------------


def _health(args: argparse.Namespace) -> int:
    """The fleet's view of its providers, from a shared store.

    ``calls`` and ``success`` are what was observed (successful calls of all calls);
    ``recent`` is the observed rate with recent calls weighing more (halving every
    minute), as the router's circuit breaker sees it.
    """
    store_log = logging.getLogger("langchain_g4f.redis_store")
    level = store_log.level
    store_log.setLevel(logging.ERROR)  # its outage warning speaks to a router; one line here
    try:
        store = RedisStore(args.store, prefix=args.prefix)
    finally:
        store_log.setLevel(level)
    try:
        if not store.shared:
            msg = f"Redis at {redact_url(args.store)} does not answer"
            raise G4FError(msg)
        shared = store.keys()
        keys = args.provider or shared
        known = sorted({*shared, *providers.names()})
        unknown = [key for key in keys if key not in known]
        if unknown:
            msg = (
                f"no provider named {unknown[0]!r}{did_you_mean(unknown[0], known)} under "
                f"prefix {store.prefix!r}; known: {', '.join(known)}"
            )
            raise _UsageError(msg)
        if not keys:
            print(f"no provider has shared state under prefix {store.prefix!r} yet")
            return 0
        _table([_HEALTH_HEADER, *_health_rows(store, keys)], sys.stdout)
    finally:
        store.close()
    return 0


_HEALTH_HEADER = (
    "provider",
    "state",
    "cooldown",
    "calls",
    "success",
    "recent",
    "ttft",
    "budget left",
)


def _health_rows(store: RedisStore, keys: Sequence[str]) -> list[tuple[str, ...]]:
    states, now, policy = store.read(list(keys)), store.now(), HealthPolicy()
    rows: list[tuple[str, ...]] = []
    for key in keys:
        view = policy.view(states[key], now)
        calls = view.successes + view.failures
        rows.append(
            (
                key,
                view.circuit.replace("_", "-"),
                f"{view.cooldown_left:.1f}s" if view.cooldown_left > 0 else "-",
                f"{view.successes}/{calls}",
                f"{view.successes / calls:.0%}" if calls else "-",
                f"{view.recent_successes / view.volume:.0%}" if view.volume > 0 else "-",
                f"{view.ttft:.2f}s" if view.ttft is not None else "-",
                _budget_left(store, key),
            )
        )
    return rows


def _budget_left(store: RedisStore, key: str) -> str:
    limits = store.limits(key)
    if limits is None:
        return "-"
    used = store.usage(key, limits)
    parts = []
    if limits.per_window is not None:
        left = max(0, limits.per_window - int(used["requests"]))
        parts.append(f"{left}/{limits.per_window} per {limits.window:g}s")
    if limits.concurrent is not None:
        left = max(0, limits.concurrent - int(used["concurrent"]))
        parts.append(f"{left}/{limits.concurrent} at once")
    return ", ".join(parts)


def _add_health(commands: Any, switch: _Parser) -> None:
    health = commands.add_parser(
        "health",
        parents=[switch],
        help="the providers' shared health and budgets, from a Redis store",
    )
    health.add_argument(
        "--store", required=True, help="the routers' store: redis://host:port/db (or rediss://)"
    )
    health.add_argument("--prefix", help="the store's key prefix (default: langchain-g4f)")
    health.add_argument("-p", "--provider", action="append", help="only this provider (repeat)")
    health.set_defaults(run=_health)


# --- entry point -------------------------------------------------------------------


def _endpoints_option() -> _Parser:
    """``--endpoints``, shared by the commands that reach providers."""
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--endpoints",
        help="where the seed provider names lead: offline (the local replica), live, an "
        "OpenAI-compatible URL, or g4f:<Provider> (default: $LANGCHAIN_G4F_ENDPOINTS; unset: "
        "the providers as registered)",
    )
    return parent


@contextlib.contextmanager
def _switched(args: argparse.Namespace) -> Iterator[None]:
    """The playground switch for this command, as ``--endpoints`` or the environment say."""
    from langchain_g4f import playground

    choice = getattr(args, "endpoints", None) or os.environ.get(playground.ENV)
    if not choice:
        yield
        return
    # A URL or a g4f provider serves the model asked for under every seed name.
    model = None if choice.strip() in ("offline", "live") else getattr(args, "model", None)
    endpoints = playground.connect(choice, model=model)
    try:
        yield
    finally:
        endpoints.close()


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_PROG, description="LangChain chat models for gpt4free-style providers.")
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    switch = _endpoints_option()
    chat = commands.add_parser(
        "chat", parents=[switch], help="chat with a provider or the router, streamed"
    )
    chat.add_argument("prompt", nargs="*", help="the prompt; none: read stdin, or a session")
    chat.add_argument(
        "-p", "--provider", action="append", help="a registered provider (repeat for a router)"
    )
    chat.add_argument("-m", "--model", help="the model to ask for")
    chat.add_argument(
        "--base-url", help="the provider's URL; without --provider, any OpenAI-compatible API"
    )
    chat.add_argument(
        "--api-key",
        help="sent as a bearer token to this endpoint (without it: G4F_<PROVIDER>_API_KEY, "
        "or G4F_API_KEY for providers that need a key)",
    )
    chat.add_argument("--system", help="a system message")
    chat.add_argument(
        "--strategy", choices=list(STRATEGIES), default="fastest", help="the router's strategy"
    )
    chat.add_argument("--timeout", type=_seconds, default=60.0, help="seconds (default 60)")
    chat.set_defaults(run=_chat)

    listing = commands.add_parser(
        "providers",
        parents=[switch],
        help="list the providers and their base URLs; --check probes them",
    )
    listing.add_argument("--check", action="store_true", help="probe each provider now")
    listing.add_argument(
        "--catalog",
        action="store_true",
        help="list the catalog of free tiers and local servers, and which keys are set",
    )
    listing.add_argument("--timeout", type=_seconds, default=10.0, help="probe timeout (10 s)")
    listing.set_defaults(run=_providers)

    demo = commands.add_parser("demo", help="offline demo against the local replica")
    demo.add_argument("--prompt", default="Say hello to LangChain — café ☕")
    demo.set_defaults(run=_demo)
    _add_health(commands, switch)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        msg = f"expected a positive number of seconds, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, AllProvidersFailedError):
        head = str(exc).splitlines()[0].split(";")[0]
        counts: dict[str, int] = {}
        for a in exc.attempts:
            what = f"{a['provider']} {a['error']}" + (f" {a['status']}" if a["status"] else "")
            counts[what] = counts.get(what, 0) + 1
        tried = ", ".join(f"{what} x{n}" if n > 1 else what for what, n in counts.items())
        return f"{type(exc).__name__}: {head} ({tried})"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    args = _build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        with _switched(args):
            return run(args)
    except BrokenPipeError:
        # The reader went away (``| head``): no traceback, and none at exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _BROKEN_PIPE
    except (_UsageError, ConfigurationError) as exc:
        print(
            f"{_PROG}: error: {_one_line(exc) if isinstance(exc, G4FError) else exc}",
            file=sys.stderr,
        )
        return 2
    except G4FError as exc:
        print(f"{_PROG}: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
