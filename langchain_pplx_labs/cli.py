"""The ``pplx-labs`` command: ask a question, or serve the offline emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TextIO

from langchain_pplx_labs.protocol import DEFAULT_BASE_URL, DEFAULT_MODEL, KNOWN_MODELS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pplx-labs``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pplx-labs", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="stream an answer and print its sources as footnotes")
    ask.add_argument("question")
    ask.add_argument("--model", default=DEFAULT_MODEL, help=f"one of {', '.join(KNOWN_MODELS)} or newer")
    where = ask.add_mutually_exclusive_group()
    where.add_argument("--emulator", action="store_true", help="answer offline from an in-process emulator")
    where.add_argument("--base-url", default=None, help=f"server root (default {DEFAULT_BASE_URL})")
    ask.add_argument("--system", default="Answer concisely and cite your sources.", help="system prompt")
    ask.add_argument("--show-reasoning", action="store_true", help="also print the model's thinking")
    ask.set_defaults(run=_run_ask)

    serve = commands.add_parser("serve", help="run the Labs emulator; prints its base URL first")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument("--chunk-size", type=int, default=24, help="characters per progress frame")
    serve.add_argument("--delay", type=float, default=0.0, help="seconds between frames")
    serve.add_argument("--blocked", action="store_true", help="answer every request with a Cloudflare 403")
    serve.add_argument("--refuse-websocket", action="store_true", help="only allow the polling transport")
    serve.add_argument("--fail", metavar="TEXT", default=None, help="fail every query with this server text")
    serve.set_defaults(run=_run_serve)
    return parser


def _run_ask(args: argparse.Namespace) -> int:
    return asyncio.run(_ask(args, sys.stdout))


async def _ask(args: argparse.Namespace, out: TextIO) -> int:
    from langchain_core.prompts import ChatPromptTemplate

    from langchain_pplx_labs.chat_models import ChatPerplexityLabs
    from langchain_pplx_labs.errors import PerplexityLabsError

    async with _maybe_emulator(args.emulator) as emulator_url:
        base_url = emulator_url or args.base_url
        model = ChatPerplexityLabs(model=args.model, **({"base_url": base_url} if base_url else {}))
        prompt = ChatPromptTemplate.from_messages([("system", "{system}"), ("human", "{question}")])
        chain = prompt | model
        citations: list[str] = []
        thinking = False
        try:
            async for chunk in chain.astream({"system": args.system, "question": args.question}):
                reasoning = chunk.additional_kwargs.get("reasoning_content", "")
                if args.show_reasoning and reasoning:
                    out.write(("" if thinking else "[thinking] ") + reasoning)
                    thinking = True
                if chunk.content:
                    if thinking:
                        out.write("\n[answer] ")
                        thinking = False
                    out.write(str(chunk.content))
                out.flush()
                citations = chunk.response_metadata.get("citations", citations)
        except PerplexityLabsError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
            return 1
        finally:
            await model.aclose()
        out.write("\n")
        if citations:
            out.write("\nSources:\n")
            for number, url in enumerate(citations, start=1):
                out.write(f"[{number}] {url}\n")
    return 0


@contextlib.asynccontextmanager
async def _maybe_emulator(enabled: bool) -> AsyncIterator[str | None]:
    if not enabled:
        yield None
        return
    from langchain_pplx_labs.emulator import LabsEmulator

    async with LabsEmulator() as emulator:
        yield emulator.base_url


def _run_serve(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.emulator import LabsEmulator, Scenario

    scenario = Scenario(chunk_size=args.chunk_size, delay=args.delay, fail=args.fail)
    emulator = LabsEmulator(
        lambda _request: scenario,
        host=args.host,
        port=args.port,
        blocked=args.blocked,
        refuse_websocket=args.refuse_websocket,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with emulator:
        print(emulator.base_url, flush=True)
        print(f"Perplexity Labs emulator serving on {emulator.base_url} (Ctrl+C to stop)", file=sys.stderr)
        await stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
