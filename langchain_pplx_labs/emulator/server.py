"""The Labs emulator: a real python-socketio server on aiohttp that speaks the playground protocol."""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import socketio
from aiohttp import web

from langchain_pplx_labs.emulator.gate import (
    BOT_COOKIE,
    CHALLENGE_PAGE,
    FingerprintGate,
    PeekingListener,
    Peer,
    bot_cookie_header,
    challenge_headers,
    new_ray,
    peer_of,
    request_cookies,
)
from langchain_pplx_labs.emulator.script import (
    Drop,
    Emit,
    LabsRequest,
    Raw,
    Responder,
    Scenario,
    Stall,
    Step,
    default_responder,
)
from langchain_pplx_labs.emulator.web import WebEndpoint, WebVariant
from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol

logger = logging.getLogger(__name__)

CLOUDFLARE_PAGE = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="refresh" content="390"></head><body><div class="main-wrapper" role="main">
<h1>www.perplexity.ai</h1><h2>Checking if the site connection is secure</h2>
<script src="/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1"></script>
<div>Performance &amp; security by Cloudflare</div></div></body></html>"""

MAIN_SITE_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Perplexity</title>
<link rel="canonical" href="https://www.perplexity.ai/"></head>
<body><main><h1>Ask anything</h1><p>A stand-in for the main site's page, served where Engine.IO was expected.</p>
</main></body></html>"""
"""What a retired Labs answers at the Socket.IO path: the main site's HTML (``main_site=True``)."""

MAX_RECORDED_REQUESTS = 1000
_MAX_NOTED_HELLOS = 4096
# An admitted request without Cloudflare's bot cookie: its answer sets one.
# aiohttp.web.RequestKey where there is one (newer aiohttp warns on a plain key); a plain key on the lowest
# aiohttp we allow (3.11), which has none.
_SETS_BOT_COOKIE: Any = getattr(web, "RequestKey", lambda name, _kind: name)(
    "pplx_labs_sets_bot_cookie", bool
)


class LabsEmulator:
    """A Labs playground on a real port, scripted by a responder.

    ``responder`` maps each question to a :class:`Scenario` or a list of steps;
    the HTTP-level faults (``blocked``, ``refuse_websocket``) apply to every request, as do
    the answers of a retired Labs: ``redirect_to`` (a 301 to that URL, e.g. the main site)
    and ``main_site`` (the main site's HTML page with a 200).
    Counters (``handshakes``, ``requests``, ``connections``, ``refusals``) let tests see what happened.
    ``protocol`` sets the path, event names and auth it serves, to rehearse a change of Labs.
    Like the live service, it accepts a handshake with no ``Origin``, any ``https://*.perplexity.ai``
    origin, the protocol's origin and its own; ``allowed_origins`` narrows that to a list.
    The same server answers the web app's SSE ask at ``protocol.web_path`` (see :attr:`web`),
    worded as ``web_variant`` says, through the same responder.
    ``gate`` plays Cloudflare's fingerprint check (over TLS: ``ssl_context`` is needed): each connection's
    ClientHello is read before TLS, a fingerprint the gate does not admit gets Cloudflare's challenge on
    every request, and what it admits gets ``__cf_bm`` (:mod:`~langchain_pplx_labs.emulator.gate`).
    ``server_name``: the host name :attr:`base_url` says (``localhost`` for TLS: a client sends it as
    its SNI, as a browser to the web app does); the listening address by default.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        blocked: bool = False,
        refuse_websocket: bool = False,
        redirect_to: str | None = None,
        main_site: bool = False,
        require_auth: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        protocol: LabsProtocol = DEFAULT_PROTOCOL,
        allowed_origins: Iterable[str] | None = None,
        web_variant: WebVariant | None = None,
        gate: FingerprintGate | None = None,
        server_name: str | None = None,
    ) -> None:
        if gate is not None and ssl_context is None:
            raise ValueError("the fingerprint gate reads the TLS ClientHello: give ssl_context too")
        self.gate = gate
        self.server_name = server_name
        self.hellos: collections.OrderedDict[Peer, str | None] = collections.OrderedDict()
        """With a gate: the JA4 of each connection's ClientHello by client address, the latest last
        (``None``: it sent none)."""
        self._listener: PeekingListener | None = None
        self.responder: Responder = responder or default_responder
        self.protocol = protocol
        self.allowed_origins = None if allowed_origins is None else frozenset(allowed_origins)
        self.host = host
        self.port = port
        self.blocked = blocked
        self.refuse_websocket = refuse_websocket
        self.redirect_to = redirect_to
        self.main_site = main_site
        self.require_auth = require_auth
        self.ssl_context = ssl_context
        self.handshakes: collections.Counter[str] = collections.Counter()
        self.refusals: collections.Counter[str] = collections.Counter()
        """Socket.IO requests answered by ``blocked``, ``redirect_to`` or ``main_site``, by transport."""
        # Bounded: a long-running ``serve`` must not grow with every handshake.
        self.handshake_headers: collections.deque[dict[str, str]] = collections.deque(maxlen=64)
        """HTTP headers of the latest handshakes, so tests can see what a client sent."""
        self.requests: list[dict[str, Any]] = []
        """Payloads of the latest questions, oldest first (the last ``MAX_RECORDED_REQUESTS``)."""
        self.connections = 0
        self.open_sockets = 0
        self.base_url = ""
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp",
            cors_allowed_origins=self._origin_allowed,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_http_buffer_size=16 * 1024 * 1024,
        )
        self.app = web.Application(middlewares=[self._gate])
        self.app.on_response_prepare.append(self._set_bot_cookie)
        self.sio.attach(self.app, socketio_path=protocol.engineio_path)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on(protocol.query_event, self._on_query)
        self.web = WebEndpoint(self, web_variant, max_recorded=MAX_RECORDED_REQUESTS)
        """The web app's side: ``POST <web_path>`` (SSE) and ``GET <web_session_path>``."""
        self.web.install(self.app)
        self._answers: dict[str, asyncio.Task[None]] = {}
        self._runner: web.AppRunner | None = None

    def script(self, responder: Responder | Scenario | Sequence[Step] | None = None, **scenario: Any) -> None:
        """Set how the next questions are answered: a responder, a scenario, steps, or scenario fields."""
        if responder is None:
            fixed: Scenario | Sequence[Step] = Scenario(**scenario)
        elif callable(responder):
            self.responder = responder
            return
        else:
            fixed = responder
        self.responder = lambda _request: fixed

    def reset(self) -> None:
        """Back to the default answers and no faults; counters cleared."""
        self.responder = default_responder
        self.blocked = False
        self.refuse_websocket = False
        self.redirect_to = None
        self.main_site = False
        self.handshakes.clear()
        self.refusals.clear()
        self.handshake_headers.clear()
        self.requests.clear()
        self.connections = 0
        self.web.reset()
        if self.gate is not None:
            self.gate.reset()

    async def start(self) -> str:
        """Listen and return the base URL, e.g. ``http://127.0.0.1:43121`` (``https`` with ``ssl_context``)."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        if self.gate is not None:
            assert self.ssl_context is not None
            assert self._runner.server is not None
            self._listener = PeekingListener(
                self._runner.server, self.ssl_context, self._hello, host=self.host, port=self.port
            )
            self.port = await self._listener.start()
        else:
            site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None)
            assert sockets, "aiohttp did not open a listening socket"
            self.port = sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context is not None else "http"
        host = self.server_name or self.host
        host = f"[{host}]" if ":" in host else host  # IPv6 literals need brackets in URLs
        self.base_url = f"{scheme}://{host}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop answering, close every socket and the port."""
        for task in list(self._answers.values()):
            task.cancel()
        self.web.close()
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._runner is not None:
            # Close client sockets first: aiohttp waits for open WebSocket handlers on cleanup.
            for socket in list(self.sio.eio.sockets.values()):
                await _close_without_waiting(socket)
            self.sio.eio.sockets.clear()
            await self.sio.shutdown()
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LabsEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _origin_allowed(self, origin: str, environ: dict[str, Any]) -> bool:
        """engine.io asks this for every handshake that sends an ``Origin`` (none is always accepted)."""
        if self.allowed_origins is not None:
            return origin in self.allowed_origins
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"
        return origin in (own, self.protocol.origin) or _is_perplexity_origin(origin)

    def _hello(self, peer: Peer, fingerprint: str | None) -> None:
        """The fingerprint gate's listener read a connection's ClientHello (``None``: it sent none)."""
        self.hellos[peer] = fingerprint
        self.hellos.move_to_end(peer)
        while len(self.hellos) > _MAX_NOTED_HELLOS:
            self.hellos.popitem(last=False)

    def _challenge(self, request: web.Request) -> web.Response | None:
        """Cloudflare's answer to a fingerprint the gate does not admit; ``None`` lets the request through."""
        assert self.gate is not None
        peer = peer_of(request.transport)
        fingerprint = self.hellos.get(peer) if peer is not None else None
        cookies = request_cookies(request.headers.getall("Cookie", []))
        admitted = self.gate.admits(fingerprint)
        self.gate.note(request.path, fingerprint, admitted, cookies)
        if admitted:
            request[_SETS_BOT_COOKIE] = all(name != BOT_COOKIE for name, _ in cookies)
            return None
        ray = new_ray()
        return web.Response(
            status=403,
            text=CHALLENGE_PAGE.replace("{ray}", ray.split("-")[0]),
            content_type="text/html",
            headers=challenge_headers(ray),
        )

    async def _set_bot_cookie(self, request: web.Request, response: web.StreamResponse) -> None:
        if request.get(_SETS_BOT_COOKIE):
            # A header, not set_cookie(): this hook runs after aiohttp wrote the response's cookies out.
            response.headers.add("Set-Cookie", bot_cookie_header())

    @web.middleware
    async def _gate(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.gate is not None and (challenge := self._challenge(request)) is not None:
            return challenge  # Cloudflare judges every path, before the app sees anything
        socketio = request.path.startswith(self.protocol.socketio_path.rstrip("/"))
        if not socketio and not self.web.serves(request.path):
            return await handler(request)
        # Web asks are counted as the "web" transport; Socket.IO names its own in the query.
        transport = request.query.get("transport", "") if socketio else "web"
        if self.blocked:
            self.refusals[transport] += 1
            return web.Response(
                status=403,
                text=CLOUDFLARE_PAGE,
                content_type="text/html",
                headers={"Server": "cloudflare", "cf-ray": "0000000000000000-EMU"},
            )
        if transport == "websocket" and self.refuse_websocket:
            return web.Response(status=400, text="WebSocket transport is disabled on this server")
        if self.redirect_to is not None:
            self.refusals[transport] += 1
            return web.Response(status=301, headers={"Location": self.redirect_to})
        if self.main_site:
            self.refusals[transport] += 1
            return web.Response(text=MAIN_SITE_PAGE, content_type="text/html")
        if not socketio:
            return await handler(request)
        if "sid" not in request.query:
            self.handshakes[transport] += 1
            self.handshake_headers.append(dict(request.headers))
            return await handler(request)
        try:
            return await handler(request)
        except KeyError as exc:
            # engine.io raises KeyError (an aiohttp 500 and a logged traceback) for a request on a
            # session that closed meanwhile, e.g. the goodbye of a client whose CONNECT was refused;
            # answer as engine.io does for an unknown session.
            if exc.args not in (("Session is disconnected",), ("Session not found",)):
                raise
            return web.Response(status=400, text=f"Invalid session {request.query['sid']}: {exc.args[0]}")

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.require_auth and not (isinstance(auth, dict) and auth.get("jwt")):
            raise socketio.exceptions.ConnectionRefusedError(
                f"authentication required: send {self.protocol.auth} as the CONNECT payload"
            )
        self.connections += 1
        self.open_sockets += 1

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.open_sockets -= 1
        task = self._answers.pop(sid, None)
        if task is not None:
            task.cancel()

    async def _on_query(self, sid: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        self.requests.append(payload)
        if len(self.requests) > MAX_RECORDED_REQUESTS:
            del self.requests[0]  # bounded, like handshake_headers: ``serve`` runs for days
        request = LabsRequest(payload, self.protocol)
        reply: Any = self.responder(request)
        if inspect.isawaitable(reply):
            # A recording proxy answers asynchronously, after asking the real server.
            reply = await reply
        steps = reply.steps(request) if isinstance(reply, Scenario) else list(reply)
        previous = self._answers.get(sid)
        if previous is not None:
            previous.cancel()
        self._answers[sid] = asyncio.get_running_loop().create_task(self._play(sid, steps))

    async def _play(self, sid: str, steps: Sequence[Step]) -> None:
        try:
            for step in steps:
                if isinstance(step, Stall):
                    await asyncio.sleep(step.seconds)
                    continue
                if step.delay:
                    await asyncio.sleep(step.delay)
                if isinstance(step, Emit):
                    await self.sio.emit(step.event, step.data, to=sid)
                elif isinstance(step, Raw):
                    await self.sio.eio.send(self.sio.manager.eio_sid_from_sid(sid, "/"), step.data)
                elif isinstance(step, Drop):
                    eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
                    socket = self.sio.eio.sockets.get(eio_sid)
                    if socket is not None:
                        await _close_without_waiting(socket)
                    return
        except asyncio.CancelledError:
            pass
        finally:
            if self._answers.get(sid) is asyncio.current_task():
                del self._answers[sid]


def _is_perplexity_origin(origin: str) -> bool:
    """``https://perplexity.ai`` or any subdomain: what clients sent the live service (www, labs, labs-api)."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    return (
        parts.scheme == "https"
        and port in (None, 443)
        and (host == "perplexity.ai" or host.endswith(".perplexity.ai"))
        and not parts.path.strip("/")
    )


async def _close_without_waiting(socket: Any) -> None:
    # engineio's default close waits for the send queue to drain, which never happens
    # once the peer is gone; a stopping server must not wait on a vanished client.
    await socket.close(wait=False, abort=False)


class EmulatorThread:
    """Runs a :class:`LabsEmulator` on its own loop in a daemon thread, for sync code and tests."""

    def __init__(self, emulator: LabsEmulator | None = None) -> None:
        self.emulator = emulator or LabsEmulator()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pplx-labs-emulator", daemon=True)

    @property
    def base_url(self) -> str:
        """The running emulator's base URL."""
        return self.emulator.base_url

    def start(self) -> str:
        """Start the thread and the emulator; return its base URL."""
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop).result(timeout=10)

    def call(self, func: Callable[[], Any]) -> Any:
        """Run ``func`` on the emulator's loop (for changing it while it serves)."""

        async def run() -> Any:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def stop(self) -> None:
        """Stop the emulator and its thread; a second call does nothing."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        await self.emulator.stop()
        # Server-side ping tasks outlive the sockets; end them before the loop closes.
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
