"""``pplx-labs mcp``: its flags, and serving the MCP server over stdio or streamable HTTP until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any

from langchain_pplx_labs._cliargs import CliError, port, positive_int
from langchain_pplx_labs.cli._shared import (
    MODEL_DEFAULT_HELP,
    StopSignals,
    add_base_url_flag,
    add_impersonate_flag,
    add_protocol_flag,
    add_transport_flag,
    impersonate_option,
    labs_protocol,
    maybe_emulator,
    refusal_to_open,
    root_url,
    transport_option,
)

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

KEY_VARIABLE = "PPLX_LABS_MCP_API_KEY"
"""The environment variable that holds the key HTTP clients must send (``--api-key``'s default)."""

STOP_TIMEOUT = 3.0
"""Seconds the calls in flight get to finish after SIGINT / SIGTERM before they are cancelled."""

_HTTP_ONLY = ("host", "port", "api_key", "insecure_no_auth")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``mcp`` on the ``pplx-labs`` command line."""
    parser = subparsers.add_parser(
        "mcp",
        help="serve Perplexity as a Model Context Protocol server (tools ask, list_models) over stdio or HTTP",
        description="Serve Perplexity's answers and their sources as MCP tools: ask and list_models. Over "
        "stdio by default (for a desktop assistant that starts it); --http serves streamable HTTP and prints "
        "its URL first.",
    )
    parser.add_argument(
        "--http", action="store_true", help="serve streamable HTTP on --host/--port instead of stdio"
    )
    parser.add_argument("--host", default=None, help="with --http: address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=port, default=None, help="with --http: 0 picks a free port (default 8000)"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"with --http: bearer token clients must send (default ${KEY_VARIABLE}); required off loopback",
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="with --http: allow a non-loopback --host without a key",
    )
    where = parser.add_mutually_exclusive_group()
    add_base_url_flag(where)
    where.add_argument("--emulator", action="store_true", help="answer from an in-process emulator (offline)")
    parser.add_argument(
        "--model", default=None, help=f"the model ask uses when none is named: {MODEL_DEFAULT_HELP}"
    )
    parser.add_argument(
        "--max-connections", type=positive_int, default=8, help="answers in flight at once (default 8)"
    )
    add_protocol_flag(parser)
    add_transport_flag(parser)
    add_impersonate_flag(parser)
    parser.set_defaults(run=lambda args: run(args, parser))
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check the flags (a usage error exits 2), then serve until SIGINT (exit 130), SIGTERM or the end of stdin (0)."""
    if args.http:
        api_key = args.api_key or os.environ.get(KEY_VARIABLE) or None
        host = args.host or "127.0.0.1"
        refusal = refusal_to_open(
            host, api_key, insecure_no_auth=args.insecure_no_auth, key_variable=KEY_VARIABLE
        )
        if refusal is not None:
            parser.error(refusal)
        args.api_key, args.host = api_key, host
        args.port = 8000 if args.port is None else args.port
    else:
        given = [name for name in _HTTP_ONLY if getattr(args, name) not in (None, False)]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} is for --http (stdio has no address)")
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs
    from langchain_pplx_labs.gateway.mcp import Asker, create_server

    signals = StopSignals()
    protocol = labs_protocol(args)
    async with maybe_emulator(args.emulator, protocol) as emulator_url:
        options: dict[str, Any] = {
            "protocol": protocol,
            "max_connections": args.max_connections,
            "reasoning": False,  # the tools return the answer, not the plan
            **transport_option(args),
            **impersonate_option(args),
        }
        base_url = emulator_url or args.base_url
        if base_url is not None:
            options["base_url"] = base_url
        if args.model is not None:
            options["model"] = args.model
        model = ChatPerplexityLabs(**options)
        try:
            server = create_server(Asker(model))
            if args.http:
                serving = _serve_http(server, args)
            else:
                print("pplx-labs mcp: serving on stdio (Ctrl+C to stop)", file=sys.stderr, flush=True)
                serving = server.run_stdio_async()
            await _until_stopped(serving, signals)
        finally:
            await model.aclose()
    return signals.exit_code


async def _until_stopped(serving: Coroutine[Any, Any, None], signals: StopSignals) -> None:
    """Run ``serving`` until it ends (stdin closed) or a signal comes; then it is cancelled, bounded in time."""
    task = asyncio.ensure_future(serving)
    stop = asyncio.ensure_future(signals.next())
    try:
        await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not task.done():
        signals.restore()  # should the stop itself hang, another Ctrl+C ends the process
        task.cancel()
        # stdio reads stdin in a worker thread that a cancel cannot interrupt: do not wait for its line.
        await asyncio.wait((task,), timeout=STOP_TIMEOUT)
        return
    task.result()  # its failure, if it failed


async def _serve_http(server: MCPServer[Any], args: argparse.Namespace) -> None:
    import uvicorn

    from langchain_pplx_labs.gateway.mcp import MCP_PATH, with_key

    app = with_key(server.streamable_http_app(host=args.host, streamable_http_path=MCP_PATH), args.api_key)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=int(STOP_TIMEOUT)
    )
    with _bound(args.host, args.port) as sock:
        uv_server = _quiet_uvicorn(config)
        task = asyncio.ensure_future(uv_server.serve(sockets=[sock]))
        url = f"{root_url(args.host, sock.getsockname()[1])}{MCP_PATH}"
        print(url, flush=True)
        print(f"pplx-labs mcp on {url} (Ctrl+C to stop)", file=sys.stderr, flush=True)
        try:
            await asyncio.shield(task)
        finally:
            uv_server.should_exit = True  # a stop: uvicorn closes its connections and ends the lifespan
            await asyncio.wait((task,), timeout=STOP_TIMEOUT + 1.0)


def _quiet_uvicorn(config: Any) -> Any:
    """uvicorn's server without its own signal handling: this command's ``StopSignals`` decide when to stop."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        def capture_signals(self) -> Any:
            return contextlib.nullcontext()

    return QuietServer(config)


@contextlib.contextmanager
def _bound(host: str, port_number: int) -> Iterator[socket.socket]:
    """A listening socket on ``host``:``port_number``; a failure says which address failed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port_number), family=family)
    except OSError as exc:
        raise CliError(f"cannot serve on {host}:{port_number}: {exc.strerror or exc}") from None
    try:
        yield sock
    finally:
        sock.close()
