"""``pplx-labs serve``: the Labs emulator on a port, scripted by flags, following tools or replaying cassettes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from langchain_pplx_labs._cliargs import CliError, count, port, positive_int, seconds
from langchain_pplx_labs.cli._shared import add_protocol_flag, labs_protocol, listening, stop_on_signals

if TYPE_CHECKING:
    from langchain_pplx_labs.emulator.script import LabsRequest, Responder, Scenario, Step
    from langchain_pplx_labs.recording import CassetteResponder

# Scenario fault fields exposed as ``serve --<name> N``.
_FAULT_FLAGS = {
    "stall-after": "go silent with the socket open",
    "drop-after": "close the socket mid-answer",
    "garbage-after": "send an undecodable packet",
    "wrong-types-after": "send a frame whose output is not a string",
    "binary-after": "send a binary frame",
    "fail-after": "send status failed (with --fail TEXT)",
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``serve`` and its flags."""
    serve = commands.add_parser("serve", help="run the Labs emulator; prints its base URL first")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port, default=0, help="0 picks a free port")
    serve.add_argument("--chunk-size", type=positive_int, default=24, help="characters per progress frame")
    # Paced like the recorded cassettes by default, so a client that polls sees frames arrive.
    serve.add_argument("--delay", type=seconds, default=0.01, help="seconds between frames (0 for speed)")
    serve.add_argument("--blocked", action="store_true", help="answer every request with a Cloudflare 403")
    serve.add_argument("--refuse-websocket", action="store_true", help="only allow the polling transport")
    serve.add_argument("--fail", metavar="TEXT", default=None, help="fail every query with this server text")
    for flag, what in _FAULT_FLAGS.items():
        serve.add_argument(f"--{flag}", type=count, default=None, metavar="N", help=f"after N frames, {what}")
    serve.add_argument("--first-delay", type=seconds, default=0.05, help="seconds before the first frame")
    serve.add_argument(
        "--allowed-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="accept only this Origin (repeatable); default: none, any https://*.perplexity.ai, its own",
    )
    add_protocol_flag(serve)
    serve.add_argument(
        "--follow-tools",
        action="store_true",
        help="play a model that obeys tool and JSON-schema prompts (for agents and structured output)",
    )
    serve.add_argument(
        "--cassettes", metavar="PATH", default=None, help="replay cassettes (a file or a folder) instead"
    )
    serve.add_argument(
        "--speed", type=seconds, default=0.0, help="cassette timing: 0 = no waits, 1 = as recorded"
    )
    serve.set_defaults(run=run)
    return serve


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT / SIGTERM."""
    return asyncio.run(_serve(args))


def _tool_follower(pacing: Scenario) -> Responder:
    """``schema_follower``'s answers, paced and faulted as the command line asks."""
    from langchain_pplx_labs.emulator import Scenario
    from langchain_pplx_labs.emulator.rules import schema_follower

    flags = pacing.model_dump(exclude={"answer", "reasoning", "citations"})

    def follow(request: LabsRequest) -> Scenario | Sequence[Step]:
        reply = schema_follower(request)
        return reply.model_copy(update=flags) if isinstance(reply, Scenario) else reply

    return follow


def _cassette_responder(args: argparse.Namespace) -> CassetteResponder | None:
    if not args.cassettes:
        return None
    from langchain_pplx_labs.recording import CassetteResponder

    responder = CassetteResponder.from_paths([args.cassettes], speed=args.speed)
    if not responder.cassettes:
        # Serving nothing would answer every question with a mismatch; say so up front.
        raise CliError(f"no *.labs.yaml cassettes under {args.cassettes}")
    return responder


async def _serve(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.emulator import LabsEmulator, Scenario

    fields = (flag.replace("-", "_") for flag in _FAULT_FLAGS)
    faults = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    scenario = Scenario(
        chunk_size=args.chunk_size, delay=args.delay, first_delay=args.first_delay, fail=args.fail, **faults
    )
    if args.follow_tools and args.cassettes:
        raise CliError("--follow-tools and --cassettes both choose the answers; pass one of them")
    replay = _cassette_responder(args)
    emulator = LabsEmulator(
        replay or (_tool_follower(scenario) if args.follow_tools else lambda _request: scenario),
        host=args.host,
        port=args.port,
        blocked=args.blocked or bool(replay and replay.refuses_connections),
        refuse_websocket=args.refuse_websocket,
        protocol=labs_protocol(args),
        allowed_origins=args.allowed_origin,
    )
    stop = stop_on_signals()
    async with listening(args.host, args.port, emulator.start, emulator.stop):
        print(emulator.base_url, flush=True)
        print(f"Perplexity Labs emulator serving on {emulator.base_url} (Ctrl+C to stop)", file=sys.stderr)
        await stop.wait()
    return 0
