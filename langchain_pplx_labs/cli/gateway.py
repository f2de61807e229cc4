"""``pplx-labs gateway``: its flags, the loopback-or-key rule, and serving until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from langchain_pplx_labs._cliargs import port, positive_int, positive_seconds, seconds
from langchain_pplx_labs.cli._shared import (
    StopSignals,
    add_base_url_flag,
    add_impersonate_flag,
    add_protocol_flag,
    add_transport_flag,
    impersonate_option,
    labs_protocol,
    listening,
    maybe_emulator,
    refusal_to_open,
    root_url,
    transport_option,
)

if TYPE_CHECKING:
    from aiohttp import web

    from langchain_pplx_labs.gateway.app import Gateway

KEY_VARIABLE = "PPLX_LABS_GATEWAY_API_KEY"
"""The environment variable that holds the key clients must send (``--api-key``'s default)."""

SHUTDOWN_TIMEOUT = 3.0
"""Seconds the answers in flight get to finish after SIGINT / SIGTERM before they are cancelled."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``gateway`` on the ``pplx-labs`` command line."""
    parser = subparsers.add_parser(
        "gateway",
        help="serve Labs over the OpenAI / Perplexity chat-completions API; prints its root URL first",
        description="Serve Perplexity Labs over the chat-completions API. OpenAI clients use ROOT/v1, "
        "Perplexity clients ROOT, where ROOT is the URL printed on the first line.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=port, default=8000, help="0 picks a free port")
    where = parser.add_mutually_exclusive_group()
    add_base_url_flag(where)
    where.add_argument(
        "--emulator", action="store_true", help="answer from an in-process Labs emulator (offline)"
    )
    parser.add_argument(
        "--follow-tools", action="store_true", help="with --emulator: obey tool and JSON-schema prompts"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(KEY_VARIABLE) or None,
        help="bearer token clients must send (default $PPLX_LABS_GATEWAY_API_KEY); required off loopback",
    )
    parser.add_argument(
        "--insecure-no-auth", action="store_true", help="allow a non-loopback --host without --api-key"
    )
    parser.add_argument(
        "--reasoning",
        choices=["separate", "inline", "drop"],  # app.REASONING_MODES, not imported here: it is heavy
        default="separate",
        help="thinking in reasoning_content (separate), in content as <think>…</think> (inline), or dropped",
    )
    parser.add_argument(
        "--perplexity-stream",
        choices=["sources-first", "live"],
        default="sources-first",
        help="on ROOT/chat/completions: hold a stream until its sources are known (Labs sends them last), "
        "so the first chunk has citations as Perplexity's API does; or stream live",
    )
    parser.add_argument(
        "--max-connections", type=positive_int, default=64, help="Labs sockets (answers in flight)"
    )
    parser.add_argument(
        "--queue-timeout",
        type=positive_seconds,
        default=30.0,
        help="seconds to wait for a socket before a 503",
    )
    add_protocol_flag(
        parser,
        default=os.environ.get("PPLX_LABS_GATEWAY_PROTOCOL") or None,
        help_text="LabsProtocol fields (path, event names...) for Labs and --emulator "
        "(default $PPLX_LABS_GATEWAY_PROTOCOL)",
    )
    add_transport_flag(parser)
    add_impersonate_flag(parser)
    parser.add_argument(
        "--shutdown-timeout",
        type=seconds,
        default=SHUTDOWN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGINT / SIGTERM, seconds the answers in flight get to finish before they are cancelled "
        f"(default {SHUTDOWN_TIMEOUT:g}; a second signal cancels them at once)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=positive_int,
        default=4 * 1024 * 1024,
        metavar="BYTES",
        help="largest request body accepted, a 413 above it (default 4 MiB)",
    )
    parser.add_argument(
        "--max-messages",
        type=positive_int,
        default=512,
        metavar="N",
        help="most messages in one request, a 400 above it (default 512)",
    )
    parser.add_argument(
        "--max-input-chars",
        type=positive_int,
        default=None,
        metavar="N",
        help="most characters of one conversation, a 400 above it (default 256000, as max_input_chars)",
    )
    parser.add_argument(
        "--first-token-timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds each answer may wait for its first frame (default 60, as first_token_timeout)",
    )
    parser.set_defaults(run=lambda args: run(args, parser))
    return parser


def _limits(args: argparse.Namespace) -> dict[str, float]:
    """``--max-input-chars`` and ``--first-token-timeout`` as the model's fields, when given."""
    given = {"max_input_chars": args.max_input_chars, "first_token_timeout": args.first_token_timeout}
    return {name: value for name, value in given.items() if value is not None}


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check the flags (a usage error exits 2), then serve until SIGINT (exit 130) or SIGTERM (exit 0)."""
    refusal = refusal_to_open(
        args.host, args.api_key, insecure_no_auth=args.insecure_no_auth, key_variable=KEY_VARIABLE
    )
    if refusal is not None:
        parser.error(refusal)  # as `pplx-labs mcp`: a flag is missing, so a usage error
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from langchain_pplx_labs.gateway.app import GATEWAY, GatewaySettings, create_app, logger

    # One line per request on stderr (method, path, status, time): never bodies, headers or keys.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO)

    signals = StopSignals()
    protocol = labs_protocol(args)
    async with maybe_emulator(args.emulator, protocol, follow_tools=args.follow_tools) as emulator_url:
        settings = GatewaySettings(
            base_url=emulator_url or args.base_url,
            api_key=args.api_key,
            reasoning=args.reasoning,
            perplexity_stream=args.perplexity_stream,
            max_connections=args.max_connections,
            queue_timeout=args.queue_timeout,
            max_body_bytes=args.max_body_bytes,
            max_messages=args.max_messages,
            model_options={
                "protocol": protocol,
                **transport_option(args),
                **impersonate_option(args),
                **_limits(args),
            },
        )
        # handler_cancellation: a client that leaves mid-answer cancels its handler at once,
        # which releases the Labs socket even while Labs is silent.
        app = create_app(settings)
        # _shut_down cancels the handlers still running after --shutdown-timeout; aiohttp's own wait
        # is a bound behind it (its 0 would mean no bound at all, and its default is a minute).
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=args.shutdown_timeout + 1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)

        async def shut_down() -> None:
            await _shut_down(runner, app[GATEWAY], signals, args.shutdown_timeout)

        async with listening(args.host, args.port, site.start, shut_down):
            root = root_url(args.host, _bound_port(site))
            print(root, flush=True)
            print(
                f"pplx-labs gateway on {root}: OpenAI clients use {root}/v1, Perplexity clients {root} (Ctrl+C to stop)",
                file=sys.stderr,
                flush=True,
            )
            await signals.next()
    return signals.exit_code


async def _shut_down(runner: web.AppRunner, gateway: Gateway, signals: StopSignals, grace: float) -> None:
    """Stop listening; the answers in flight get ``grace`` seconds to finish, or until the next signal,
    and then are cancelled (a silent Labs would otherwise hold the exit until its own timeout)."""
    if gateway.in_flight:
        answers = "1 answer" if gateway.in_flight == 1 else f"{gateway.in_flight} answers"
        plan = (
            f"waiting {grace:g}s for {answers} in flight, then cancelling (Ctrl+C again to cancel now)"
            if grace
            else f"cancelling {answers} in flight"
        )
        print(f"pplx-labs gateway: stopping; {plan}", file=sys.stderr, flush=True)
    cleanup = asyncio.ensure_future(runner.cleanup())
    hurry = asyncio.ensure_future(signals.next())
    try:
        await asyncio.wait((cleanup, hurry), timeout=grace, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurry.cancel()
    if not cleanup.done():
        signals.restore()  # should the cancelled answers still hang, a third Ctrl+C ends the process
        gateway.cancel_in_flight()
    await cleanup


def _bound_port(site: Any) -> int:
    sockets = getattr(site._server, "sockets", None)
    assert sockets, "aiohttp did not open a listening socket"
    return int(sockets[0].getsockname()[1])
