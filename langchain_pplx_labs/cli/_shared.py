"""What several ``pplx-labs`` commands do alike: ``--protocol``, the loopback rule, the emulator, serving until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from langchain_pplx_labs._cliargs import CliError, ca_file, impersonation, server_root
from langchain_pplx_labs.protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    KNOWN_MODELS,
    WEB_DEFAULT_MODEL,
    WEB_MODELS,
)

if TYPE_CHECKING:
    from langchain_pplx_labs.protocol import LabsProtocol

_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def add_protocol_flag(
    parser: argparse.ArgumentParser,
    *,
    default: str | None = None,
    help_text: str = "LabsProtocol fields (path, event names...)",
) -> None:
    """``--protocol FILE.json``: the Labs protocol fields a command speaks (read by ``labs_protocol``)."""
    parser.add_argument("--protocol", metavar="FILE.json", default=default, help=help_text)


MODEL_DEFAULT_HELP = (
    f"web: {', '.join(WEB_MODELS)}; labs: {', '.join(KNOWN_MODELS)}; or newer "
    f"(default {WEB_DEFAULT_MODEL}; {DEFAULT_MODEL} with --transport labs)"
)
"""What ``--model`` defaults to: the model's own default, which follows the transport."""


def add_transport_flag(parser: argparse.ArgumentParser) -> None:
    """``--transport web|labs``: the web app's SSE or the Labs playground's Socket.IO (read by ``transport_option``)."""
    parser.add_argument(
        "--transport",
        choices=["labs", "web"],
        default=None,
        help="web: the web app's Server-Sent Events; labs: the retired Labs playground's Socket.IO "
        "(default $PPLX_LABS_TRANSPORT, else web)",
    )


def transport_option(args: argparse.Namespace) -> dict[str, str]:
    """``{"transport": ...}`` for ``ChatPerplexityLabs`` when ``--transport`` was given; ``{}`` leaves it to the env."""
    transport = getattr(args, "transport", None)
    return {} if transport is None else {"transport": transport}


def add_base_url_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--base-url URL``: the server to ask, a server root; none given, the model reads the environment's."""
    parser.add_argument(
        "--base-url",
        type=server_root,
        default=None,
        help=f"server root (default $PPLX_LABS_BASE_URL, else {DEFAULT_BASE_URL})",
    )


def add_impersonate_flag(parser: argparse.ArgumentParser) -> None:
    """``--impersonate NAME|none``: the browser the web transport speaks as (read by ``impersonate_option``)."""
    parser.add_argument(
        "--impersonate",
        type=impersonation,
        default=None,
        metavar="NAME|none",
        help="the browser the web transport speaks as, one of curl_cffi's targets (chrome, chrome152, "
        "safari, ...); none: plain aiohttp, which Cloudflare challenges (default $PPLX_LABS_IMPERSONATE, "
        "else chrome)",
    )


def impersonate_option(args: argparse.Namespace) -> dict[str, str]:
    """``{"impersonate": ...}`` for ``ChatPerplexityLabs`` when ``--impersonate`` was given; ``{}`` leaves it to the env."""
    impersonate = getattr(args, "impersonate", None)
    return {} if impersonate is None else {"impersonate": impersonate}


def add_ca_file_flag(parser: argparse.ArgumentParser) -> None:
    """``--ca-file PEM``: a CA to trust for TLS (read by ``trusted_context``), as ``ssl_context=`` does in code."""
    parser.add_argument(
        "--ca-file",
        type=ca_file,
        default=None,
        metavar="PEM",
        help="trust the CA certificates in this PEM file (the one pplx-labs serve --tls prints, a private CA)",
    )


def trusted_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """A TLS context trusting ``--ca-file``'s CAs, or ``None`` without the flag."""
    path = getattr(args, "ca_file", None)
    return None if path is None else ssl.create_default_context(cafile=path)


def labs_protocol(args: argparse.Namespace) -> LabsProtocol:
    """The protocol ``--protocol FILE.json`` names, or the default one without the flag."""
    from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol

    path = getattr(args, "protocol", None)
    return DEFAULT_PROTOCOL if path is None else LabsProtocol.from_file(path)


def refusal_to_open(
    host: str, api_key: str | None, *, insecure_no_auth: bool, key_variable: str
) -> str | None:
    """Why a server must not listen on ``host`` as asked (beyond loopback, no key, no waiver), or ``None``.

    Every server command applies this rule: ``gateway`` and ``mcp``.
    """
    if is_loopback(host) or api_key is not None or insecure_no_auth:
        return None
    return (
        f"refusing to serve on {host} without --api-key: anyone who can reach it could use it; "
        f"pass --api-key KEY (or set {key_variable}), or --insecure-no-auth"
    )


def root_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` of a server listening there (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) reaches only this machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.asynccontextmanager
async def maybe_emulator(
    enabled: bool, protocol: LabsProtocol, *, follow_tools: bool = False
) -> AsyncIterator[str | None]:
    """An in-process emulator's base URL while the block runs, or ``None`` when ``enabled`` is false."""
    if not enabled:
        yield None
        return
    from langchain_pplx_labs.emulator import LabsEmulator

    responder = None
    if follow_tools:
        from langchain_pplx_labs.emulator.rules import schema_follower

        responder = schema_follower
    async with LabsEmulator(responder, protocol=protocol) as emulator:
        yield emulator.base_url


class StopSignals:
    """SIGINT and SIGTERM as they arrive, for a server that stops in steps: the first signal asks it to
    stop, a second to stop now; :meth:`restore` hands any further one back to Python's defaults.

    Install it before the URL is printed: whoever read it may stop us at once, and must get a clean exit.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._arrived: asyncio.Queue[int] = asyncio.Queue()
        self.received: list[int] = []
        """Every signal so far, in order."""
        for signum in _STOP_SIGNALS:
            self._loop.add_signal_handler(signum, self._arrive, signum)

    def _arrive(self, signum: int) -> None:
        self.received.append(signum)
        self._arrived.put_nowait(signum)

    async def next(self) -> int:
        """Wait for the next signal (one that came earlier is returned at once)."""
        return await self._arrived.get()

    @property
    def exit_code(self) -> int:
        """130 once a SIGINT came (Ctrl+C: interrupted, as the CLI says elsewhere), else 0 (SIGTERM: a clean stop)."""
        return 130 if signal.SIGINT in self.received else 0

    def restore(self) -> None:
        """Python's own handling again: another Ctrl+C raises ``KeyboardInterrupt``, SIGTERM ends the process."""
        for signum in _STOP_SIGNALS:
            self._loop.remove_signal_handler(signum)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.asynccontextmanager
async def listening(
    host: str, port: int, start: Callable[[], Awaitable[object]], stop: Callable[[], Awaitable[object]]
) -> AsyncIterator[None]:
    """Run ``start()`` (the bind), the block, then ``stop()``; a bind failure says which address failed."""
    try:
        await start()
    except OSError as exc:
        # Port taken, unknown host, no permission: the OS text alone does not say which address.
        await stop()
        raise CliError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        await stop()
