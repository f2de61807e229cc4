"""One Socket.IO connection to Labs: the handshake, then one query at a time as a stream of frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import socketio
from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from engineio import base_client as eio_base_client
from socketio import exceptions as sio_exceptions
from socketio import packet as sio_packet

from langchain_pplx_labs._json import OrjsonPacket
from langchain_pplx_labs._teardown import (
    GRACEFUL_CLOSE_SECONDS,
    being_cancelled,
    say_goodbye,
    sever,
    stop_tasks,
    track,
)
from langchain_pplx_labs._tracing import OPENING, Opening, is_traced
from langchain_pplx_labs.errors import (
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsProtocolError,
    PerplexityLabsTimeoutError,
    excerpt_of,
)
from langchain_pplx_labs.protocol import (
    ANONYMOUS_AUTH,
    LABS_ORIGIN,
    QUERY_EVENT,
    SOCKETIO_PATH,
    is_progress_event,
)

logger = logging.getLogger(__name__)

Transport = Literal["websocket", "polling"]

BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
DEFAULT_HEADERS: Mapping[str, str] = {
    "Origin": LABS_ORIGIN,
    "Referer": LABS_ORIGIN + "/",
    "User-Agent": BROWSER_USER_AGENT,
}
# aiohttp-socks raises these outside aiohttp's hierarchy, so engineio lets them escape.
_PROXY_ERRORS = (ProxyError, ProxyConnectionError, ProxyTimeoutError)
_BLOCK_MARKERS = ("cloudflare", "cf-chl", "challenge-platform", "just a moment", "attention required")


@dataclass(frozen=True)
class Timeouts:
    """Every wait a query can make, in seconds; ``None`` waits forever."""

    connect: float = 10.0
    handshake: float = 10.0
    first_token: float | None = 60.0
    idle: float | None = 30.0
    total: float | None = 300.0


@dataclass(frozen=True)
class ConnectionSettings:
    """What a connection needs to know; hashable, so pools can be keyed by it."""

    base_url: str
    # Kept out of repr: user headers may carry cookies, and settings end up in logs and tracebacks.
    headers: tuple[tuple[str, str], ...] = field(
        default_factory=lambda: tuple(DEFAULT_HEADERS.items()), repr=False
    )
    timeouts: Timeouts = Timeouts()

    @property
    def header_dict(self) -> dict[str, str]:
        return dict(self.headers)


class _PoolSessionClosed(PerplexityLabsConnectionError):
    """engine.io wanted a new HTTP session because the pool's was closed (the pool is closing)."""


class _LabsSocketIO(socketio.AsyncClient):  # type: ignore[misc]
    """python-socketio client that reports undecodable packets instead of only logging them."""

    def __init__(self, on_bad_packet: Any, on_lost: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_bad_packet = on_bad_packet
        self._on_lost = on_lost

    async def _handle_eio_disconnect(self, reason: Any) -> None:
        # python-socketio reports a lost transport only to connected namespaces: before the
        # CONNECT ack (a pipelined question is waiting) nobody would hear of it.
        if not self.namespaces:
            self._on_lost(reason)
        await super()._handle_eio_disconnect(reason)

    async def _handle_eio_message(self, data: Any) -> None:
        try:
            await super()._handle_eio_message(data)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self._binary_packet = None
            self._on_bad_packet(data, exc)

    async def emit_before_ack(self, event: str, data: Any) -> None:
        """Send an EVENT to ``/`` right behind our CONNECT, before the server acknowledged it.

        Socket.IO servers handle a socket's packets in order, so the question is
        processed once the namespace is connected; this saves the CONNECT round trip.
        """
        await self._send_packet(self.packet_class(sio_packet.EVENT, namespace="/", data=[event, data]))


class PipelinedQueryDropped(PerplexityLabsDisconnectedError):
    """The server closed a socket whose question was sent before the CONNECT ack.

    Node's Socket.IO server closes the connection on an EVENT for a namespace whose
    (asynchronous) connect has not finished; python-socketio processes it in order.
    The pool then stops pipelining for that base URL and asks again at once.
    """


class LabsConnection:
    """A connected Labs socket that runs one query at a time."""

    def __init__(self, settings: ConnectionSettings, session: aiohttp.ClientSession) -> None:
        """``session`` should carry :func:`labs_trace_config`, as the pool's does."""
        self.settings = settings
        self._traced = is_traced(session)
        self.transport: Transport | None = None
        self.queries_run = 0
        self._inbox: asyncio.Queue[tuple[str, Any]] | None = None
        self._closed = False
        self._sio = _LabsSocketIO(
            self._on_bad_packet,
            self._on_disconnect,
            reconnection=False,
            http_session=session,
            serializer=OrjsonPacket,
            request_timeout=settings.timeouts.connect + settings.timeouts.handshake,
            logger=False,
            engineio_logger=False,
        )
        # engine.io silently builds (and never closes) a session of its own when ours is
        # closed, which happens when the pool closes mid-connect: refuse instead.
        self._sio.eio.http_factory = _refuse_new_session
        self._opening = Opening()
        # Set while open() runs: close() from another task (the pool closing) ends the connect.
        self._cut_short: Callable[[], None] | None = None
        self._sio.on("*", self._on_event)
        self._sio.on("disconnect", self._on_disconnect)
        self._sio.on("connect", self._on_connect)
        self._sio.on("connect_error", self._on_connect_error)
        self._ready = asyncio.Event()
        self._refused: str | None = None
        self._sent_before_ack = False
        self.pipelining_dropped = False

    @property
    def alive(self) -> bool:
        """True while the socket is connected and not closed by us."""
        return (
            not self._closed
            and self._refused is None
            and bool(self._sio.connected)
            and self._sio.eio.state == "connected"
        )

    @property
    def busy(self) -> bool:
        return self._inbox is not None

    async def open(self, transport: Transport, *, pipelined: bool = True) -> None:
        """Connect with ``transport``: a direct WebSocket, or the polling handshake then upgrade.

        On any failure, a cancel included, nothing this call opened stays open.
        """
        token = OPENING.set(self._opening)
        try:
            await self._connect(transport, pipelined)
        except BaseException as exc:
            abandoned = self._closed and isinstance(exc, Exception)
            await self.close(graceful=False)
            if abandoned:
                # close() ran while we connected: drop what the connect made after it.
                await self._shutdown(graceful=False)
            error = _closed_while_connecting() if abandoned else self._open_error(exc, transport)
            if error is None:
                raise
            raise error from (None if isinstance(error, PerplexityLabsTimeoutError) else exc)
        finally:
            self._opening.active = False
            OPENING.reset(token)
        if self._closed:
            # close() ran (the pool closed) just as the connect finished: drop what it opened.
            await self._shutdown(graceful=False)
            raise _closed_while_connecting()
        self._opening.responses.clear()
        self.transport = transport

    async def _connect(self, transport: Transport, pipelined: bool) -> None:
        transports = ["websocket"] if transport == "websocket" else ["polling", "websocket"]
        timeouts = self.settings.timeouts
        loop = asyncio.get_running_loop()
        # Until the first TCP (+ proxy, TLS) connection is made only ``connect`` applies; then
        # only ``handshake``. The pool's session is traced (labs_trace_config) to tell them apart;
        # an untraced one gets both budgets at once. Not aiohttp's sock_connect alone: engine.io
        # replaces the session's timeouts on its polling requests.
        first = timeouts.connect if self._traced else timeouts.connect + timeouts.handshake
        async with asyncio.timeout(first) as budget:

            def connected() -> None:
                if not budget.expired():
                    budget.reschedule(loop.time() + timeouts.handshake)

            def cut_short() -> None:
                if not budget.expired():
                    budget.reschedule(loop.time())

            self._opening.on_connected = connected
            self._cut_short = cut_short
            try:
                await self._sio.connect(
                    self.settings.base_url,
                    headers=self.settings.header_dict,
                    auth=dict(ANONYMOUS_AUTH),
                    transports=transports,
                    socketio_path=SOCKETIO_PATH,
                    wait_timeout=timeouts.handshake,
                    # Direct WebSocket: don't wait for the CONNECT ack, the question is
                    # pipelined behind it (see _emit); polling keeps the standard wait.
                    wait=not (pipelined and transport == "websocket"),
                )
            finally:
                self._cut_short = self._opening.on_connected = None

    def _open_error(self, exc: BaseException, transport: Transport) -> BaseException | None:
        """The typed error for a failed connect, or None to re-raise ``exc`` (a cancel) as is."""
        timeouts = self.settings.timeouts
        url = self.settings.base_url
        if isinstance(exc, TimeoutError):
            if self._traced and not self._opening.tcp_connected:
                return PerplexityLabsTimeoutError("connect", timeouts.connect)
            return PerplexityLabsTimeoutError("handshake", timeouts.handshake)
        if isinstance(exc, PerplexityLabsConnectionError):
            return exc
        if isinstance(exc, (sio_exceptions.ConnectionError, *_PROXY_ERRORS)):
            if _caused_by(exc, aiohttp.ConnectionTimeoutError) or _caused_by(exc, ProxyTimeoutError):
                return PerplexityLabsTimeoutError("connect", timeouts.connect)
            return PerplexityLabsConnectionError(f"Could not connect to {url} over {transport}: {exc}")
        if isinstance(exc, Exception):
            # engine.io lets parsing errors escape when the server's first message is not
            # Engine.IO (a plain WebSocket, a proxy's page): a connection failure, retried.
            return PerplexityLabsConnectionError(
                f"Could not connect to {url} over {transport}: the server's reply is not "
                f"Engine.IO ({type(exc).__name__}: {exc})"
            )
        return None

    async def wait_ready(self) -> None:
        """Wait for the server to acknowledge our CONNECT (``open`` does not, on a WebSocket)."""
        limit = self.settings.timeouts.handshake
        try:
            await asyncio.wait_for(self._ready.wait(), limit)
        except TimeoutError:
            raise PerplexityLabsTimeoutError("handshake", limit) from None
        if self._refused is not None:
            raise self._refusal(self._refused)

    async def close(self, *, graceful: bool = True) -> None:
        """Disconnect; safe to call twice and from a cancelled task.

        ``graceful`` says goodbye first, bounded by ``GRACEFUL_CLOSE_SECONDS``; without it
        (an answer that did not end cleanly, a dead or half-open socket) the socket is
        dropped at once, so no error waits on a peer that may be gone.
        """
        if self._closed:
            return
        self._closed = True
        if self._cut_short is not None:
            self._cut_short()
        # A query running in another task (the pool closing under it) ends now.
        self._on_disconnect("the connection was closed")
        closing = track(asyncio.ensure_future(self._shutdown(graceful)))
        # Shielded: a cancel lands in our caller (and is re-raised to it, never swallowed),
        # while the close itself runs to its end in the background.
        await asyncio.shield(closing)

    async def _shutdown(self, graceful: bool) -> None:
        """Close, then drop whatever is left; raises nothing but a cancel of its own task.

        It runs unattended after a cancel, and at interpreter shutdown asyncio may already
        have cancelled engine.io's loops, whose CancelledError must not skip the drop.
        """
        cancelled = False
        if graceful and self._loops_running():
            try:
                async with asyncio.timeout(GRACEFUL_CLOSE_SECONDS):
                    await self._disconnect()
            except asyncio.CancelledError:
                cancelled = being_cancelled()
                logger.debug("graceful close of a Labs socket was cancelled")
            except Exception as exc:  # a slow or failed goodbye ends in the drop below
                logger.debug("graceful close of a Labs socket failed: %r", exc)
        try:
            await self._abort()
        except Exception as exc:
            logger.debug("error while dropping a Labs socket: %r", exc)
        if cancelled:
            raise asyncio.CancelledError

    def _loops_running(self) -> bool:
        eio = self._sio.eio
        loops = (eio.read_loop_task, eio.write_loop_task)
        return all(task is not None and not task.done() for task in loops)

    async def _disconnect(self) -> None:
        eio = self._sio.eio
        read_loop, write_loop = eio.read_loop_task, eio.write_loop_task
        if eio.current_transport == "polling" and eio.state == "connected" and read_loop and write_loop:
            # A graceful polling close also waits for the pending long-poll GET, which the
            # server answers only at its next ping (25 s on Labs): let the write loop deliver
            # DISCONNECT/CLOSE, then stop the read instead of waiting for it.
            closing = asyncio.ensure_future(self._sio.disconnect())
            try:
                await asyncio.wait([write_loop])
                read_loop.cancel()
                await asyncio.wait([closing, read_loop])
            finally:
                closing.cancel()
            return
        if eio.state == "connected" and read_loop is not None:
            await self._sio.disconnect()

    async def _abort(self) -> None:
        """Drop the socket now: no goodbye, no waiting for the peer; also tidies after a goodbye."""
        eio = self._sio.eio
        for response in self._opening.responses:
            response.close()
        if eio.ws is not None:
            sever(eio.ws)
        await stop_tasks([task for task in (eio.read_loop_task, eio.write_loop_task) if task])
        if eio.state in ("connected", "disconnecting") and eio.current_transport == "polling":
            # "disconnecting": a goodbye that was cut short may not have reached the server.
            say_goodbye(eio)
        # Bookkeeping only now: the WebSocket is severed, so engine.io's ws.close() returns at once.
        await eio.disconnect(abort=True)
        with contextlib.suppress(ValueError):
            eio_base_client.connected_clients.remove(eio)

    async def query(
        self, payload: Mapping[str, Any], *, started: float | None = None
    ) -> AsyncGenerator[Any, None]:
        """Send one question and yield the data of each progress frame until the caller stops.

        The caller ends the iteration when a frame is final or failed; this method
        only enforces the first-token, idle and total timeouts and turns a lost
        socket or an undecodable packet into a typed error.
        """
        if self._inbox is not None:
            raise RuntimeError("a Labs connection runs one query at a time")
        timeouts = self.settings.timeouts
        begun = time.monotonic() if started is None else started
        inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._inbox = inbox
        self.queries_run += 1
        try:
            await self._emit(payload)
            which, limit = self._first_wait()
            while True:
                kind, value = await self._next(inbox, which, limit, begun, timeouts.total)
                if kind == "frame":
                    which, limit = "idle", timeouts.idle
                    yield value
                elif kind == "ready":
                    which, limit = "first_token", timeouts.first_token
                elif kind == "gone" and self._sent_before_ack and which != "idle":
                    self.pipelining_dropped = True
                    raise PipelinedQueryDropped(
                        f"Perplexity Labs closed the connection before answering a pipelined question ({value})"
                    )
                elif kind == "gone":
                    raise PerplexityLabsDisconnectedError(
                        f"Perplexity Labs closed the connection mid-answer ({value})"
                    )
                elif kind == "refused":
                    raise self._refusal(value)
                else:
                    raise PerplexityLabsProtocolError(
                        "Received a Socket.IO packet that cannot be decoded", excerpt=excerpt_of(value)
                    )
        finally:
            self._inbox = None

    def _first_wait(self) -> tuple[str, float | None]:
        """Which timeout applies before the first frame, and its limit."""
        timeouts = self.settings.timeouts
        if self._sent_before_ack and not self._ready.is_set():
            # The question went out behind a CONNECT not yet acknowledged: until the ack
            # (a "ready" item), a silent server is stuck in the handshake, not the answer.
            return "handshake", timeouts.handshake
        return "first_token", timeouts.first_token

    async def _emit(self, payload: Mapping[str, Any]) -> None:
        self._sent_before_ack = False
        try:
            if "/" in self._sio.namespaces:
                await self._sio.emit(QUERY_EVENT, dict(payload))
            elif self._refused is not None:
                raise self._refusal(self._refused)
            elif self._sio.eio.state == "connected":
                self._sent_before_ack = True
                await self._sio.emit_before_ack(QUERY_EVENT, dict(payload))
            else:
                raise sio_exceptions.BadNamespaceError("/ is not connected")
        except sio_exceptions.BadNamespaceError as exc:
            # The socket went away between the pool's liveness check and the send.
            raise PerplexityLabsDisconnectedError(
                "Perplexity Labs closed the connection before the question was sent"
            ) from exc

    @staticmethod
    async def _next(
        inbox: asyncio.Queue[tuple[str, Any]],
        which: str,
        limit: float | None,
        begun: float,
        total: float | None,
    ) -> tuple[str, Any]:
        if not inbox.empty():
            return inbox.get_nowait()
        if total is not None:
            left = total - (time.monotonic() - begun)
            if limit is None or left < limit:
                which, limit = "total", total
                if left <= 0:
                    raise PerplexityLabsTimeoutError("total", total)
                try:
                    return await _get_within(inbox, left)
                except TimeoutError:
                    raise PerplexityLabsTimeoutError("total", total) from None
        try:
            return await _get_within(inbox, limit)
        except TimeoutError:
            raise PerplexityLabsTimeoutError(which, limit or 0.0) from None

    def _on_event(self, event: str, *args: Any) -> None:
        if self._inbox is None or not is_progress_event(event):
            logger.debug("ignoring Labs event %r", event)
            return
        self._inbox.put_nowait(("frame", args[0] if args else None))

    def _refusal(self, reason: Any) -> PerplexityLabsConnectionError:
        return PerplexityLabsConnectionError(
            f"Perplexity Labs refused the Socket.IO connection to {self.settings.base_url}: {reason}"
        )

    def _on_connect(self) -> None:
        self._ready.set()
        if self._inbox is not None and self._sent_before_ack:
            self._inbox.put_nowait(("ready", None))

    def _on_connect_error(self, data: Any = None) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        self._refused = str(message or "connection refused")
        self._ready.set()
        if self._inbox is not None:
            self._inbox.put_nowait(("refused", self._refused))

    def _on_disconnect(self, reason: Any = None) -> None:
        if self._inbox is not None:
            self._inbox.put_nowait(("gone", reason or "disconnected"))

    def _on_bad_packet(self, data: Any, exc: Exception) -> None:
        logger.debug("undecodable Socket.IO packet (%s): %s", exc, excerpt_of(data))
        if self._inbox is not None:
            self._inbox.put_nowait(("bad", data))


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is anywhere in the chain of ``exc`` (engine.io re-raises aiohttp errors bare)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _closed_while_connecting() -> PerplexityLabsConnectionError:
    return PerplexityLabsConnectionError("The Labs connection was closed while it was connecting")


def _refuse_new_session() -> aiohttp.ClientSession:
    raise _PoolSessionClosed("The Labs connection pool is closed")


async def _get_within(inbox: asyncio.Queue[tuple[str, Any]], seconds: float | None) -> tuple[str, Any]:
    # asyncio.timeout, not wait_for: wait_for wraps each get in a new Task, per frame.
    async with asyncio.timeout(seconds):
        return await inbox.get()


async def diagnose_refusal(
    settings: ConnectionSettings, session: aiohttp.ClientSession, cause: BaseException
) -> PerplexityLabsConnectionError:
    """Ask the polling endpoint why a connect failed, turning a block page into a clear error.

    Only runs after a failure, so the happy path pays nothing for it.
    """
    url = f"{settings.base_url}/{SOCKETIO_PATH}/?EIO=4&transport=polling"
    try:
        async with session.get(
            url,
            headers=settings.header_dict,
            timeout=aiohttp.ClientTimeout(total=settings.timeouts.connect),
        ) as response:
            body = (await response.content.read(4096)).decode("utf-8", "replace")
            status = response.status
            content_type = response.headers.get("Content-Type", "")
    except (aiohttp.ClientError, TimeoutError, *_PROXY_ERRORS) as exc:
        hint = ""
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            hint = " (TLS certificate not trusted: pass ssl_context= with your CA, or verify_ssl=False)"
        return PerplexityLabsConnectionError(
            f"Cannot reach Perplexity Labs at {settings.base_url}: {exc or type(exc).__name__}{hint}"
        )
    looks_html = "html" in content_type.lower() or body.lstrip().lower().startswith(("<!doctype", "<html"))
    if status in (403, 429, 503) or (looks_html and status >= 400):
        blocked_by = (
            "a Cloudflare challenge page"
            if any(m in body.lower() for m in _BLOCK_MARKERS)
            else "an HTML error page"
        )
        return PerplexityLabsBlockedError(
            f"Perplexity Labs blocked the connection: HTTP {status} with {blocked_by}. "
            "The playground sits behind Cloudflare, which refuses many non-browser clients; "
            "try again later, from another network, or through a proxy (proxy=...)",
            status=status,
            excerpt=excerpt_of(body),
        )
    if status >= 300:
        return PerplexityLabsConnectionError(
            f"Perplexity Labs refused the connection: HTTP {status}: {excerpt_of(body)}"
        )
    return PerplexityLabsConnectionError(f"Perplexity Labs refused the Socket.IO handshake: {cause}")
