"""Cloudflare's gate, as the emulator plays it: TLS on ``localhost``, the ClientHello read before TLS, a challenge.

Cloudflare, in front of the web app, judges a client before any HTTP: by its TLS ClientHello (JA4) and
its HTTP/2 opening. A client whose fingerprint is not a browser's gets a challenge it cannot solve
(403, ``cf-mitigated: challenge``, the "Just a moment..." page); what it admits gets Cloudflare's bot
cookie, ``__cf_bm``, and reaches the app. The emulator plays the first half: :class:`PeekingListener`
accepts each connection, peeks at its ClientHello (``MSG_PEEK``: the bytes stay for TLS to read), notes
its JA4 (:mod:`~langchain_pplx_labs.emulator.ja4`), then hands the socket to TLS and aiohttp; the
:class:`FingerprintGate` admits the fingerprints on its allowlist (:data:`BROWSER_FINGERPRINTS`,
captures with their dates) and challenges the rest. HTTP/2 is not played: the emulator speaks HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from langchain_pplx_labs.emulator.ja4 import ClientHello, Incomplete, NotAClientHello, ja4

CHALLENGE_PAGE = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8"><meta name="robots" content="noindex,nofollow">
</head><body><div class="main-wrapper" role="main"><div class="main-content">
<h1 class="zone-name-title h1">www.perplexity.ai</h1><h2 class="h2" id="challenge-running">Verifying you are human.
This may take a few seconds.</h2><noscript>Enable JavaScript and cookies to continue</noscript></div></div>
<script>(function(){window._cf_chl_opt={cType:'managed',cRay:'{ray}'};var a=document.createElement('script');
a.src='/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1?ray={ray}';document.head.appendChild(a);}());</script>
<div class="footer" role="contentinfo">Performance &amp; security by Cloudflare</div></body></html>"""
"""Cloudflare's managed challenge page ("Just a moment..."), ``{ray}`` its ``cf-ray``."""

BOT_COOKIE = "__cf_bm"
"""Cloudflare's bot-management cookie, set on what it admits (30 minutes)."""
BOT_COOKIE_SECONDS = 1800


@dataclass(frozen=True)
class Fingerprint:
    """A browser's TLS fingerprint as captured: what, when and where it was measured."""

    ja4: str
    client: str
    captured: str
    """The capture's date (ISO 8601)."""
    source: str


BROWSER_FINGERPRINTS: tuple[Fingerprint, ...] = (
    Fingerprint(
        "t13d1517h2_8daaf6152771_cb7bf5808d99",
        "Chromium 156.0.8078.129 (Debian 12, headless), to a server name",
        "2026-12-07",
        "docs/browser_voice.md (captured on loopback; curl_cffi 0.17's impersonate='chrome' sends the same)",
    ),
)
"""The gate's default allowlist: browsers' fingerprints captured here, newest last. A browser not on it is
challenged, as Cloudflare challenged stale Chrome fingerprints (perplexity-web-mcp #5, 2026-05)."""


@dataclass(frozen=True)
class Passage:
    """One request at the gate: its path, its connection's JA4 (``None``: no ClientHello was read), the verdict."""

    path: str
    ja4: str | None
    admitted: bool
    cookies: tuple[tuple[str, str], ...]
    """Every cookie the request carried, from all its ``Cookie`` lines, in order."""


class FingerprintGate:
    """Admits the connections whose ClientHello's JA4 is on ``allowed``; challenges the rest (see the module).

    :attr:`passages` tells what came through, the latest last.
    """

    def __init__(self, allowed: Iterable[Fingerprint] = BROWSER_FINGERPRINTS) -> None:
        self.allowed = {fingerprint.ja4: fingerprint for fingerprint in allowed}
        self.passages: collections.deque[Passage] = collections.deque(maxlen=256)
        self.challenged = 0
        self.admitted = 0

    def admits(self, fingerprint: str | None) -> bool:
        return fingerprint is not None and fingerprint in self.allowed

    def note(
        self, path: str, fingerprint: str | None, admitted: bool, cookies: Iterable[tuple[str, str]]
    ) -> None:
        self.passages.append(Passage(path, fingerprint, admitted, tuple(cookies)))
        if admitted:
            self.admitted += 1
        else:
            self.challenged += 1

    def reset(self) -> None:
        self.passages.clear()
        self.challenged = self.admitted = 0


def challenge_headers(ray: str) -> dict[str, str]:
    """The headers of Cloudflare's challenge answer."""
    return {
        "cf-mitigated": "challenge",
        "server": "cloudflare",
        "cf-ray": ray,
        "cache-control": "private, max-age=0, no-store, no-cache, must-revalidate, post-check=0, pre-check=0",
        "x-frame-options": "SAMEORIGIN",
    }


def new_ray() -> str:
    """A ``cf-ray`` value: 16 hex digits and a data centre (``EMU``, this emulator)."""
    return f"{secrets.token_hex(8)}-EMU"


def bot_cookie_header() -> str:
    """A ``Set-Cookie`` of a new ``__cf_bm``, with Cloudflare's attributes (on the host itself: no Domain)."""
    value = secrets.token_urlsafe(32)
    return f"{BOT_COOKIE}={value}; Path=/; Max-Age={BOT_COOKIE_SECONDS}; HttpOnly; Secure; SameSite=None"


def request_cookies(cookie_lines: Iterable[str]) -> list[tuple[str, str]]:
    """Every ``name=value`` of every ``Cookie`` line (a client may send the jar's and its own on two lines)."""
    found: list[tuple[str, str]] = []
    for line in cookie_lines:
        for crumb in line.split(";"):
            name, equals, value = crumb.strip().partition("=")
            if name and equals:
                found.append((name, value))
    return found


# -- the listener: the ClientHello read before TLS ------------------------------------------------

Peer = tuple[str, int]
HELLO_SECONDS = 10.0
"""How long a new connection may take to send its whole ClientHello."""
_PEEK_BYTES = 16 * 1024
_PEEK_AGAIN_SECONDS = (
    0.005  # a peeked socket stays readable: wait for more bytes this long, not for readiness
)


class PeekingListener:
    """A TLS listening port that reads each client's ClientHello before TLS starts.

    Each accepted socket is peeked at (``MSG_PEEK``) until its ClientHello is whole; ``on_hello(peer,
    fingerprint)`` gets its JA4 (``None`` for what is no ClientHello: the connection is closed); then
    the socket becomes a TLS connection served by ``protocol_factory`` (aiohttp's server).
    """

    def __init__(
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        ssl_context: ssl.SSLContext,
        on_hello: Callable[[Peer, str | None], None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._factory = protocol_factory
        self._ssl = ssl_context
        self._on_hello = on_hello
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._greeting: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen; return the port."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server((self._host, self._port), family=family, backlog=128)
        listener.setblocking(False)
        self._socket = listener
        self._accepting = asyncio.get_running_loop().create_task(
            self._accept(listener), name="labs-gate-accept"
        )
        port: int = listener.getsockname()[1]
        return port

    async def stop(self) -> None:
        """Stop accepting; end the connections still saying hello (those past TLS are aiohttp's to close)."""
        tasks = [task for task in (self._accepting, *self._greeting) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, address = await loop.sock_accept(listener)
            except OSError:  # the listener closed, or a client gone before its accept
                if listener.fileno() < 0:
                    return
                continue
            task = loop.create_task(self._greet(connection, (address[0], address[1])), name="labs-gate-hello")
            self._greeting.add(task)
            task.add_done_callback(self._greeting.discard)

    async def _greet(self, connection: socket.socket, peer: Peer) -> None:
        connection.setblocking(False)
        try:
            async with asyncio.timeout(HELLO_SECONDS):
                hello = await _peek_hello(connection)
        except (NotAClientHello, TimeoutError, OSError):
            self._on_hello(peer, None)
            connection.close()
            return
        except asyncio.CancelledError:
            connection.close()
            raise
        self._on_hello(peer, ja4(hello))
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                self._factory, connection, ssl=self._ssl, ssl_handshake_timeout=HELLO_SECONDS
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError):
            connection.close()  # a failed handshake (an untrusted certificate, a client gone)


async def _peek_hello(connection: socket.socket) -> ClientHello:
    """The ClientHello at the start of ``connection``'s stream, left unread for TLS."""
    loop = asyncio.get_running_loop()
    seen = 0
    while True:
        await _readable(loop, connection)
        data = connection.recv(_PEEK_BYTES, socket.MSG_PEEK)
        if not data:
            raise ConnectionResetError("the client closed before its ClientHello ended")
        try:
            return ClientHello.from_records(data)
        except Incomplete:
            if len(data) == seen:
                await asyncio.sleep(_PEEK_AGAIN_SECONDS)  # nothing new yet: readiness would say so at once
            seen = len(data)


async def _readable(loop: asyncio.AbstractEventLoop, connection: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(connection.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(connection.fileno())


# -- TLS for localhost ------------------------------------------------------------------------------


@dataclass
class LocalhostTLS:
    """A self-signed CA and a certificate for ``localhost`` (and 127.0.0.1, ::1) it issued, for the emulator.

    ``ca_file``: the CA's certificate as a PEM file, for clients to trust (``ssl_context`` with it, or
    ``verify_ssl=False``); :meth:`remove` deletes it.
    """

    server_context: ssl.SSLContext
    ca_file: str

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA."""
        return ssl.create_default_context(cafile=self.ca_file)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.ca_file)


def localhost_tls(directory: str | None = None) -> LocalhostTLS:
    """A new :class:`LocalhostTLS` (``trustme`` makes the certificates: ``pip install trustme``)."""
    try:
        import trustme
    except ImportError as exc:  # a test dependency, not the package's
        raise RuntimeError("the emulator's TLS needs trustme: pip install trustme") from exc

    authority = trustme.CA(organization_name="pplx-labs emulator")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost", "127.0.0.1", "::1").configure_cert(context)
    handle, path = tempfile.mkstemp(prefix="pplx-labs-emulator-ca-", suffix=".pem", dir=directory)
    with os.fdopen(handle, "wb") as file:
        file.write(authority.cert_pem.bytes())
    return LocalhostTLS(context, path)


def peer_of(transport: Any) -> Peer | None:
    """The client's ``(host, port)`` of a connection, as :class:`PeekingListener` noted it."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    return (peer[0], peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else None
