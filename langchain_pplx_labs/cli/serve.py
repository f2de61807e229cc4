"""``pplx-labs serve``: the Labs emulator on a port, scripted by flags (faults, a retired Labs), following tools or replaying cassettes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from langchain_pplx_labs._cliargs import CliError, count, port, positive_int, seconds
from langchain_pplx_labs.cli._shared import StopSignals, add_protocol_flag, labs_protocol, listening

if TYPE_CHECKING:
    from langchain_pplx_labs.emulator.gate import LocalhostTLS
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

# The switches of the one-answer group after ``--blocked`` and ``--redirect-to``, as ``serve --<name>``.
_VERDICT_SWITCHES = {
    "main-site": "answer the Socket.IO endpoint with the main site's HTML page, as a retired Labs may",
    "silent": "take every question and never answer, as a retired Labs may (a first_token timeout)",
    "failed": "fail every query with the public record's failed frame (status failed, 'Error in processing query')",
    "rate-limited": "refuse every query with the rate-limit frame (error_code FREE_TIER_RATE_LIMITED)",
}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``serve`` and its flags."""
    serve = commands.add_parser("serve", help="run the Labs emulator; prints its base URL first")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    serve.add_argument("--port", type=port, default=0, help="0 picks a free port")
    serve.add_argument("--chunk-size", type=positive_int, default=24, help="characters per progress frame")
    # Paced like the recorded cassettes by default, so a client that polls sees frames arrive.
    serve.add_argument("--delay", type=seconds, default=0.01, help="seconds between frames (0 for speed)")
    # One way to answer at a time: each of these is a verdict the client names (docs/retirement.md).
    answers = serve.add_mutually_exclusive_group()
    answers.add_argument("--blocked", action="store_true", help="answer every request with a Cloudflare 403")
    answers.add_argument(
        "--redirect-to",
        type=_redirect_target,
        metavar="URL",
        default=None,
        help="answer the Socket.IO endpoint with a 301 to URL, as a retired Labs may (e.g. https://www.perplexity.ai/)",
    )
    for flag, what in _VERDICT_SWITCHES.items():
        answers.add_argument(f"--{flag}", action="store_true", help=what)
    answers.add_argument(
        "--fail", metavar="TEXT", default=None, help="fail every query with this server text"
    )
    serve.add_argument("--refuse-websocket", action="store_true", help="only allow the polling transport")
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
    serve.add_argument(
        "--tls",
        action="store_true",
        help="serve https on localhost with a self-signed CA (needs trustme); the CA's PEM file to trust is "
        "printed on the second line",
    )
    serve.add_argument(
        "--gate",
        action="store_true",
        help="with --tls, play Cloudflare's fingerprint check: a client whose TLS ClientHello (JA4) is not a "
        "browser's gets its challenge (403, cf-mitigated: challenge); what passes gets __cf_bm",
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
    """Serve until SIGINT (exit 130, as the gateway) or SIGTERM (exit 0)."""
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


def _redirect_target(text: str) -> str:
    """``--redirect-to URL``: an absolute http(s) URL or a path of this host, sent as the ``Location``."""
    parts = urlsplit(text)
    if (parts.scheme in ("http", "https") and parts.netloc) or (not parts.scheme and text.startswith("/")):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL or a /path")


def _verdict_faults(args: argparse.Namespace) -> dict[str, object]:
    """The scenario fields of ``--silent``, ``--failed`` and ``--rate-limited`` (empty without them)."""
    from langchain_pplx_labs.emulator import FAILED_FRAME, RATE_LIMIT_FRAME

    if args.silent:
        if args.stall_after is not None:
            raise CliError("--silent never answers; --stall-after N answers N frames first: pass one of them")
        return {"stall_after": 0}
    if args.failed:
        return {"failure": FAILED_FRAME}
    if args.rate_limited:
        return {"failure": RATE_LIMIT_FRAME}
    return {}


async def _serve(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.emulator import Scenario

    fields = (flag.replace("-", "_") for flag in _FAULT_FLAGS)
    faults: dict[str, object] = {
        name: getattr(args, name) for name in fields if getattr(args, name) is not None
    }
    verdict = _verdict_faults(args)
    if verdict and args.cassettes:
        raise CliError("--cassettes choose the answers; --silent, --failed and --rate-limited cannot apply")
    scenario = Scenario(
        chunk_size=args.chunk_size,
        delay=args.delay,
        first_delay=args.first_delay,
        fail=args.fail,
        **faults,
        **verdict,
    )
    replay = _cassette_responder(args)
    tls = _localhost_tls() if args.tls else None
    try:
        return await _run_emulator(args, scenario, replay, tls)
    finally:
        if tls is not None:
            tls.remove()


def _localhost_tls() -> LocalhostTLS:
    from langchain_pplx_labs.emulator.gate import localhost_tls

    try:
        return localhost_tls()
    except RuntimeError as exc:  # no trustme
        raise CliError(f"--tls: {exc}") from None


async def _run_emulator(
    args: argparse.Namespace, scenario: Scenario, replay: CassetteResponder | None, tls: LocalhostTLS | None
) -> int:
    from langchain_pplx_labs.emulator import LabsEmulator
    from langchain_pplx_labs.emulator.gate import FingerprintGate

    # A browser (and curl_cffi impersonating one) sends the server's name as SNI: the gate's allowlist
    # holds fingerprints with one, so on this machine the name is localhost (the certificate's).
    loopback = args.host in ("127.0.0.1", "::1", "localhost")
    emulator = LabsEmulator(
        replay or (_tool_follower(scenario) if args.follow_tools else lambda _request: scenario),
        host=args.host,
        port=args.port,
        blocked=args.blocked or bool(replay and replay.refuses_connections),
        refuse_websocket=args.refuse_websocket,
        redirect_to=args.redirect_to,
        main_site=args.main_site,
        protocol=labs_protocol(args),
        allowed_origins=args.allowed_origin,
        ssl_context=tls.server_context if tls is not None else None,
        gate=FingerprintGate() if args.gate else None,
        server_name="localhost" if tls is not None and loopback else None,
    )
    signals = StopSignals()  # before the URL is printed: whoever reads it may stop us at once
    async with listening(args.host, args.port, emulator.start, emulator.stop):
        print(emulator.base_url, flush=True)
        if tls is not None:
            print(tls.ca_file, flush=True)
        print(f"Perplexity Labs emulator serving on {emulator.base_url} (Ctrl+C to stop)", file=sys.stderr)
        if tls is not None:
            gate = "; Cloudflare's fingerprint gate admits browsers' TLS only" if args.gate else ""
            print(
                f"TLS with a self-signed CA{gate}: trust {tls.ca_file} (--ca-file in pplx-labs, "
                "ssl_context=ssl.create_default_context(cafile=...) in code), or verify_ssl=False",
                file=sys.stderr,
            )
        await signals.next()
    return (
        signals.exit_code
    )  # 130 after Ctrl+C, as the gateway and every interrupted command; 0 after SIGTERM
