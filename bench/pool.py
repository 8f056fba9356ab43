"""A loopback pool of six OpenAI-compatible providers that behave like free ones.

One asyncio HTTP/1.1 server on 127.0.0.1 serves six route prefixes,
``/<provider>/v1/chat/completions``. Each provider fails a fixed share of its
requests (0, 5, 20, 40, 70 and 100 %) in the ways free providers do: a reset
connection, a 5xx, a 429 with ``Retry-After``, a 200 with an HTML page, a stall
before the first byte or in the middle of the stream, a stream that breaks
mid-answer (a reset, or a body that ends without ``[DONE]``). Time to first byte is
lognormal around each provider's median; the seed shuffles which median (50 ms to
1.5 s) goes with which failure rate (:func:`providers_for`), so a provider's name
says how often it fails, not how fast it is.

Drift (``--drift-at N``): from the prompt ``question N`` on, the provider that
never failed fails 70 % of requests and the one that failed 70 % never fails
(:func:`failure_rate`).

Answers are derived from the prompt alone (:func:`expected_answer`), so a
client's text can be checked exactly. A continuation request (the last user
message is :data:`~langchain_g4f.continuation.CONTINUE_INSTRUCTION`, after the
partial answer as an assistant message) gets the rest of the original answer,
sometimes preceded by a short repeated tail of the partial, as real models do.

Every decision is drawn from ``random.Random`` seeded by the pool's seed, the
provider, the request's content and how many times this run has sent it to
this provider: the same call meets the same fate whichever client sends it.
Requests are counted per run: the run id is the part of the model name after
``bench-`` (``GET /_stats/<run>``).

    python bench/pool.py [--seed 1] [--port 0]      # prints "READY <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import re
import socket
import struct
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from langchain_g4f.continuation import CONTINUE_INSTRUCTION


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    failure_rate: float
    ttfb_median: float  # seconds


#: The pool, in the order every benchmarked system lists its providers (the medians
#: are those of seed 0; :func:`providers_for` shuffles them for other seeds).
PROVIDERS = (
    ProviderSpec("quick", 0.20, 0.05),
    ProviderSpec("shaky", 0.40, 0.15),
    ProviderSpec("dead", 1.00, 0.50),
    ProviderSpec("solid", 0.05, 0.30),
    ProviderSpec("steady", 0.00, 1.50),
    ProviderSpec("flaky", 0.70, 0.80),
)
DEAD = "dead"
#: The provider that never fails, and the one that takes its place after a drift.
RELIABLE, DRIFTER = "steady", "flaky"


def providers_for(seed: int) -> tuple[ProviderSpec, ...]:
    """The pool of ``seed``: the same names and failure rates, the medians shuffled."""
    medians = [spec.ttfb_median for spec in PROVIDERS]
    if seed:
        random.Random(f"medians|{seed}").shuffle(medians)
    return tuple(
        ProviderSpec(spec.name, spec.failure_rate, median)
        for spec, median in zip(PROVIDERS, medians, strict=True)
    )


def prompt_number(prompt: str) -> int | None:
    """``N`` of a prompt ``question N``, else None."""
    match = re.fullmatch(r"question (\d+)", prompt)
    return int(match.group(1)) if match else None


def failure_rate(spec: ProviderSpec, prompt: str, drift_at: int | None) -> float:
    """How often ``spec`` fails ``prompt``.

    From the prompt numbered ``drift_at`` on, the reliable provider and the one
    failing 70 % swap rates.
    """
    number = prompt_number(prompt)
    if drift_at is None or number is None or number < drift_at:
        return spec.failure_rate
    swap = {RELIABLE: DRIFTER, DRIFTER: RELIABLE}.get(spec.name)
    if swap is None:
        return spec.failure_rate
    return next(other.failure_rate for other in PROVIDERS if other.name == swap)


#: Failure kinds and their weights among a provider's failures.
FAILURES = {
    "reset": 1,  # connection reset before any byte
    "5xx": 2,  # 500 / 502 / 503 with a JSON error
    "429": 2,  # Too Many Requests with Retry-After
    "html": 1,  # 200 with an HTML page (a bot check)
    "stall": 1,  # nothing for --stall seconds, then a reset
    "stall_mid": 1,  # some text, then nothing for --stall seconds, then a reset
    "break": 2,  # some text, then a reset or a body that ends without [DONE]
}
TTFB_SIGMA = 0.8  # lognormal shape: p95 is about 3.7x the median
REPEAT_TAIL_SHARE = 0.3  # continuations that first repeat a tail of the partial

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "at",
    "by",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "river",
    "stone",
    "cloud",
    "signal",
    "harbor",
    "lantern",
    "meadow",
    "engine",
    "orbit",
    "copper",
    "garden",
    "silver",
    "window",
    "thunder",
    "candle",
    "mirror",
    "forest",
    "ladder",
    "pocket",
    "rocket",
    "violet",
    "winter",
    "summer",
    "bridge",
    "castle",
    "desert",
    "feather",
    "glacier",
    "island",
    "jungle",
    "kettle",
    "marble",
    "needle",
    "ocean",
    "pepper",
    "quartz",
    "saddle",
    "timber",
    "valley",
    "wander",
    "yellow",
    "zephyr",
    "anchor",
    "basket",
    "cactus",
    "dragon",
    "ember",
    "falcon",
    "gravel",
    "hollow",
    "ivory",
    "jasmine",
    "kernel",
    "lemon",
    "meteor",
    "nectar",
    "quickly",
    "slowly",
    "softly",
    "boldly",
    "gently",
    "rarely",
    "barely",
    "nearly",
    "always",
    "never",
    "often",
    "builds",
    "carries",
    "follows",
    "gathers",
    "holds",
    "keeps",
    "lifts",
    "moves",
    "opens",
    "pulls",
    "reads",
    "sends",
    "café",
    "naïve",
    "façade",
    "über",
    "résumé",
    "jalapeño",
    "smörgåsbord",
    "crème",
    "brûlée",
    "déjà",
    "vu",
    "東京",
    "北京",
    "データ",
    "☕",
    "🚀",
    "ünïcode",
]


# -- answers -------------------------------------------------------------------


def expected_answer(prompt: str) -> str:
    """The one answer to ``prompt``: 30-60 words, fixed by the prompt alone."""
    rng = random.Random(f"answer|{prompt}")
    words = [rng.choice(WORDS) for _ in range(rng.randint(30, 60))]
    words[0] = words[0].capitalize()
    for i in range(5, len(words) - 3, 9):
        words[i] += rng.choice(",;:")
    return " ".join(words) + "."


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def reply_text(messages: list[dict[str, Any]], rng: random.Random) -> str:
    """What the pool replies to ``messages``: the answer, or the rest of it.

    A continuation (last user message is the instruction, after an assistant
    message holding the partial) gets the original answer after the partial's
    length; with probability ``REPEAT_TAIL_SHARE`` (drawn from ``rng``) it first
    repeats the partial's last one to three words (:func:`repeated_tail`).
    """
    if (
        len(messages) >= 3
        and messages[-1].get("role") == "user"
        and message_text(messages[-1]) == CONTINUE_INSTRUCTION
        and messages[-2].get("role") == "assistant"
    ):
        partial = message_text(messages[-2])
        prompt = last_user_text(messages[:-2])
        rest = expected_answer(prompt)[len(partial) :]
        if rng.random() < REPEAT_TAIL_SHARE:
            return repeated_tail(partial, rng.randint(1, 3)) + rest
        return rest
    return expected_answer(last_user_text(messages))


def repeated_tail(partial: str, words: int) -> str:
    """The end of ``partial`` from the start of its last ``words`` words.

    A cut word counts as one, as a model restarting the cut word or sentence
    repeats it; at least three characters, or nothing when the partial is shorter.
    """
    starts = [match.start() for match in re.finditer(r"\S+", partial)][::-1]
    for start in starts[words - 1 :] or starts[-1:]:
        if len(partial) - start >= 3:
            return partial[start:]
    return ""


def original_prompt(messages: list[dict[str, Any]]) -> str:
    """The prompt a request answers (for a continuation, the one before the partial)."""
    if messages and message_text(messages[-1]) == CONTINUE_INSTRUCTION:
        return last_user_text(messages[:-2])
    return last_user_text(messages)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def pieces(text: str, rng: random.Random) -> list[str]:
    """``text`` cut into stream chunks of one to three words; they join to ``text``."""
    tokens = re.findall(r"\S+\s*|\s+", text)
    out = []
    while tokens:
        n = rng.randint(1, 3)
        out.append("".join(tokens[:n]))
        del tokens[:n]
    return out


# -- fates ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fate:
    kind: str  # "ok" or a key of FAILURES
    delay: float  # seconds before the first byte
    pieces: list[str]
    cut: int  # pieces sent before a mid-stream failure
    status: int = 200
    retry_after: int = 0
    clean_end: bool = False  # a break ends the body instead of resetting


def draw_fate(
    spec: ProviderSpec,
    messages: list[dict[str, Any]],
    rng: random.Random,
    drift_at: int | None = None,
) -> Fate:
    delay = spec.ttfb_median * math.exp(rng.gauss(0.0, TTFB_SIGMA))
    failed = rng.random() < failure_rate(spec, original_prompt(messages), drift_at)
    kind = rng.choices(list(FAILURES), weights=list(FAILURES.values()))[0] if failed else "ok"
    chunks = pieces(reply_text(messages, rng), rng)
    cut = rng.randint(1, len(chunks) - 1) if len(chunks) > 1 else 0
    return Fate(
        kind,
        delay,
        chunks,
        cut,
        status=rng.choice((500, 502, 503)) if kind == "5xx" else 200,
        retry_after=rng.randint(1, 5) if kind == "429" else 0,
        clean_end=rng.random() < 0.5,
    )


# -- the server ----------------------------------------------------------------

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body><h1>Checking your browser before accessing the site.</h1></body></html>"
)
REASONS = {
    200: "OK",
    404: "Not Found",
    400: "Bad Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class Pool:
    """The six providers behind one asyncio server; see the module docstring."""

    def __init__(
        self,
        seed: int,
        stall: float,
        words_per_second: float,
        providers: tuple[ProviderSpec, ...] | None = None,
        drift_at: int | None = None,
    ) -> None:
        self.seed = seed
        self.drift_at = drift_at
        providers = providers if providers is not None else providers_for(seed)
        self.stall = stall
        self.words_per_second = words_per_second
        self.specs = {spec.name: spec for spec in providers}
        self.sent: Counter[tuple[str, str, str]] = Counter()  # (run, provider, request key)
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.continuations: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.kinds: defaultdict[str, Counter[str]] = defaultdict(Counter)

    async def serve(self, port: int) -> None:
        server = await self.start(port)
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    async def start(self, port: int = 0) -> asyncio.Server:
        return await asyncio.start_server(self.connection, "127.0.0.1", port, backlog=512)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self.exchange(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.transport.abort()

    async def exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; ``False`` when the connection is done."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers = {}
        for line in header_lines:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", 0) or 0))
        keep_alive = headers.get("connection", "").lower() != "close"
        parts = path.split("?")[0].strip("/").split("/")
        if method == "GET" and len(parts) == 2 and parts[0] == "_stats":
            return await self.stats(writer, parts[1]) and keep_alive
        if method == "POST" and len(parts) == 4 and parts[1:] == ["v1", "chat", "completions"]:
            spec = self.specs.get(parts[0])
            try:
                payload = json.loads(body)
            except ValueError:
                await self.send(writer, 400, b'{"error": {"message": "the body is not JSON"}}')
                return keep_alive
            if spec is not None and isinstance(payload, dict):
                return await self.completion(spec, payload, writer) and keep_alive
        await self.send(writer, 404, b'{"error": {"message": "not found"}}')
        return keep_alive

    async def stats(self, writer: asyncio.StreamWriter, run: str) -> bool:
        figures = {
            "requests": dict(self.requests[run]),
            "continuations": dict(self.continuations[run]),
            "kinds": dict(self.kinds[run]),
            "server_cpu_s": time.process_time(),
        }
        await self.send(writer, 200, json.dumps(figures).encode())
        return True

    def fate(self, spec: ProviderSpec, run: str, payload: dict[str, Any]) -> Fate:
        messages = payload.get("messages") or []
        key = json.dumps(messages, sort_keys=True)
        self.sent[run, spec.name, key] += 1
        nth = self.sent[run, spec.name, key]
        rng = random.Random(f"{self.seed}|{spec.name}|{key}|{nth}")
        fate = draw_fate(spec, messages, rng, self.drift_at)
        self.requests[run][spec.name] += 1
        self.kinds[run][fate.kind] += 1
        if message_text(messages[-1] if messages else {}) == CONTINUE_INSTRUCTION:
            self.continuations[run][spec.name] += 1
        return fate

    async def completion(
        self, spec: ProviderSpec, payload: dict[str, Any], writer: asyncio.StreamWriter
    ) -> bool:
        model = str(payload.get("model", ""))
        run = model.split("bench-", 1)[1] if "bench-" in model else "-"
        fate = self.fate(spec, run, payload)
        await asyncio.sleep(fate.delay)
        if fate.kind == "reset":
            return reset(writer)
        if fate.kind == "stall":
            await asyncio.sleep(self.stall)
            return reset(writer)
        if fate.kind == "5xx":
            error = {"error": {"message": "upstream failed", "type": "server_error"}}
            await self.send(writer, fate.status, json.dumps(error).encode())
            return True
        if fate.kind == "429":
            error = {"error": {"message": "rate limited", "type": "rate_limit_exceeded"}}
            await self.send(
                writer,
                429,
                json.dumps(error).encode(),
                extra=f"Retry-After: {fate.retry_after}\r\n",
            )
            return True
        if fate.kind == "html":
            await self.send(writer, 200, HTML_PAGE, content_type="text/html; charset=utf-8")
            return True
        if not payload.get("stream"):
            return await self.whole(writer, model, fate)
        return await self.stream(writer, model, fate, payload)

    async def whole(self, writer: asyncio.StreamWriter, model: str, fate: Fate) -> bool:
        if fate.kind in ("break", "stall_mid"):
            if fate.kind == "stall_mid":
                await asyncio.sleep(self.stall)
            return reset(writer)
        text = "".join(fate.pieces)
        await asyncio.sleep(len(text.split()) / self.words_per_second)
        body = {
            "id": "chatcmpl-pool",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage(text),
        }
        await self.send(writer, 200, json.dumps(body).encode())
        return True

    async def stream(
        self, writer: asyncio.StreamWriter, model: str, fate: Fate, payload: dict[str, Any]
    ) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        frame = {
            "id": "chatcmpl-pool",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        await event(
            writer,
            {
                **frame,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            },
        )
        for i, piece in enumerate(fate.pieces):
            if i == fate.cut and fate.kind in ("break", "stall_mid"):
                return await self.cut(writer, fate)
            await event(
                writer,
                {
                    **frame,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                },
            )
            await asyncio.sleep(len(piece.split()) / self.words_per_second)
        await event(
            writer, {**frame, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        )
        if (payload.get("stream_options") or {}).get("include_usage"):
            await event(writer, {**frame, "choices": [], "usage": usage("".join(fate.pieces))})
        writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True

    async def cut(self, writer: asyncio.StreamWriter, fate: Fate) -> bool:
        """Break a stream mid-answer: a reset, a clean end of the body, or a stall."""
        if fate.kind == "break" and fate.clean_end:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if fate.kind == "stall_mid":
            await asyncio.sleep(self.stall)
        return reset(writer)

    async def send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        extra: str = "",
    ) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()


def usage(text: str) -> dict[str, int]:
    words = len(text.split())
    return {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words}


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def event(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
    writer.write(chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"))
    await writer.drain()


def reset(writer: asyncio.StreamWriter) -> bool:
    """Close with a TCP reset, as a crashed or overloaded upstream does."""
    sock = writer.get_extra_info("socket")
    if sock is not None and not writer.transport.is_closing():
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stall", type=float, default=30.0, help="length of a stall, s")
    parser.add_argument("--words-per-second", type=float, default=20.0)
    parser.add_argument("--drift-at", type=int, help="the prompt number where rates swap")
    args = parser.parse_args()
    pool = Pool(args.seed, args.stall, args.words_per_second, drift_at=args.drift_at)
    try:
        asyncio.run(pool.serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
