"""The ``langchain-g4f`` command line (also ``python -m langchain_g4f``).

``demo`` runs offline: it starts the local replica of the providers' protocols
on 127.0.0.1 and shows every provider invoked, streamed and streamed async.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from langchain_g4f import providers
from langchain_g4f.errors import G4FError


def _demo(args: argparse.Namespace) -> int:
    from langchain_g4f import ChatG4F
    from langchain_g4f.testing import Replica

    out = sys.stdout
    with Replica() as replica:
        out.write(f"local replica of the provider protocols at {replica.url}\n\n")
        for name in providers.names():
            provider = providers.get(name)
            llm = ChatG4F(provider=name, base_url=replica.base_url(name))
            out.write(f"== {name} ({llm.model_name}; {provider.url}{provider.path})\n")

            message = llm.invoke(args.prompt)
            out.write(f"invoke:       {message.content}\n")
            out.write(f"  metadata:   {message.response_metadata}\n")

            out.write("stream:       ")
            for chunk in llm.stream(args.prompt):
                out.write(f"{chunk.content}|" if chunk.content else "")
                out.flush()
            out.write("\n")

            async def astream() -> None:
                out.write("astream:      ")
                async for chunk in llm.astream(args.prompt):
                    out.write(f"{chunk.content}|" if chunk.content else "")
                    out.flush()
                out.write("\n\n")

            asyncio.run(astream())
    out.write("('|' marks chunk boundaries; Aichat cannot stream, so its answer is one chunk)\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="langchain-g4f",
        description="LangChain chat models for gpt4free-style providers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="offline demo against the local replica")
    demo.add_argument("--prompt", default="Say hello to LangChain — café ☕")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except G4FError as exc:
        print(f"langchain-g4f: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
