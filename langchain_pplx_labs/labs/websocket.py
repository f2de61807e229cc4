"""The direct WebSocket: Engine.IO v4 on an aiohttp WebSocket of our own, read in the query's task.

python-engineio's client runs every incoming message in a new Task and wraps every read
in ``wait_for``; on a stream of answer frames that per-message cost was larger than the
whole reference client's. Here, while a query runs, the query's own task reads the socket
and decodes each message (``packets``) inline: no hand-off between tasks per frame. While
no query runs, a background task reads, so pings are answered and a close is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp

from langchain_pplx_labs._teardown import GRACEFUL_CLOSE_SECONDS, stop_tasks
from langchain_pplx_labs.labs import packets
from langchain_pplx_labs.labs.dial import LabsDialer, sever
from langchain_pplx_labs.labs.wire import WireListener
from langchain_pplx_labs.settings import ConnectionSettings

logger = logging.getLogger(__name__)


class NotEngineIOError(ValueError):
    """The server's first WebSocket message was not an Engine.IO OPEN packet."""


class WebSocketWire:
    """A Labs socket over a direct WebSocket (``transport=websocket``, no polling first)."""

    reads_inline = True

    def __init__(self, settings: ConnectionSettings, dialer: LabsDialer, listener: WireListener) -> None:
        self._settings = settings
        self._dialer = dialer
        self._listener = listener
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        # The reader being handed over to a query: its cancel is a pause, not a close.
        self._pausing: asyncio.Task[None] | None = None
        self._keepalive_period = 5.0
        self._silence_limit = 45.0
        self._last_heard = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._reads = 0  # messages read inline by a query: the keepalive checks it moves
        self._query_reading = False  # a query holds the socket for a read (from before the pause on)
        self._closing = False  # saying goodbye: nothing may start a reader any more
        self._acked = False
        self.sid = ""  # the Socket.IO session id, once the server acknowledged our CONNECT
        self._lost: str | None = None
        self._gone_reported = False
        self._refusal: str | None = None
        # Set once the CONNECT is answered either way, or the socket is gone.
        self._settled = asyncio.Event()

    @property
    def engine_open(self) -> bool:
        return self._lost is None and self._ws is not None and not self._ws.closed

    @property
    def namespace_ready(self) -> bool:
        return self._acked and self.engine_open

    @property
    def loops_running(self) -> bool:
        return self.engine_open

    async def connect(self, *, pipelined: bool) -> None:
        ws = await self._dialer.session().ws_connect(
            self._url(),
            headers=self._settings.header_dict,
            # Bounds the close handshake of a goodbye; reads are bounded by our own timeouts.
            timeout=aiohttp.ClientWSTimeout(ws_close=GRACEFUL_CLOSE_SECONDS),
        )
        self._ws = ws
        message = await ws.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionResetError(
                f"the server closed the WebSocket before Engine.IO's OPEN ({_why_closed(ws, message)})"
            )
        try:
            ping_interval, ping_timeout = packets.decode_open(message.data)
        except packets.DECODE_ERRORS as exc:
            raise NotEngineIOError(str(exc)) from exc
        self._silence_limit = ping_interval + ping_timeout
        # A ping must be answered within ping_timeout; the keepalive may notice a stalled caller
        # up to two periods late. The floor keeps a server that sends 0 from spinning us.
        self._keepalive_period = max(ping_timeout / 3, 0.05)
        self._last_heard = time.monotonic()
        await ws.send_str(packets.encode_connect(self._settings.protocol.auth))
        self._start_reader()
        self._watchdog = asyncio.get_running_loop().call_later(self._silence_limit, self._check_heard)
        if not pipelined:
            await self._wait_for_ack()

    def _url(self) -> str:
        scheme, rest = self._settings.base_url.split("://", 1)
        ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        return self._settings.protocol.endpoint(f"{ws_scheme}://{rest}", "websocket")

    async def _wait_for_ack(self) -> None:
        await self._settled.wait()
        if self._refusal is not None:
            raise ConnectionRefusedError(f"the server refused the Socket.IO CONNECT: {self._refusal}")
        if not self._acked:
            raise ConnectionResetError("the server closed the socket before acknowledging CONNECT")

    async def send_event(self, event: str, data: Any, *, before_ack: bool) -> None:
        del before_ack  # the server handles a socket's packets in order either way
        ws = self._ws
        if ws is None or not self.engine_open:
            raise LookupError("the socket is not connected")
        try:
            await ws.send_str(packets.encode_event(event, data))
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise LookupError(f"the socket closed while sending: {exc}") from exc

    async def read_one(self) -> None:
        """Read and handle the next message in the caller's task (a running query's).

        The background reader pauses until :meth:`release`; if the caller stops reading
        (a slow consumer), it resumes before the server's ping timeout, so pings are
        still answered. A cancel (the query's deadline) leaves the socket to be closed.
        """
        # Held from before the pause: the keepalive must not restart a reader under us.
        self._query_reading = True
        try:
            if self._reader is not None:
                await self._pause_reader()
                if self._keepalive is None and self._lost is None:
                    self._keepalive = asyncio.get_running_loop().call_later(
                        self._keepalive_period, self._keep_alive, self._reads
                    )
            ws = self._ws
            if self._lost is not None or ws is None:
                self._listener.on_disconnect(self._lost or "the socket is not connected")
                return
            self._reads += 1
            message = await ws.receive()
        finally:
            self._query_reading = False
        try:
            reason = await self._handle(ws, message)
        except (aiohttp.ClientError, ConnectionError) as exc:  # a pong that could not be sent
            reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            self._gone(reason)

    def release(self) -> None:
        """The query is over: read in the background again."""
        if self._lost is None and self._reader is None and self._ws is not None and not self._closing:
            self._start_reader()

    async def goodbye(self) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        # The reader would see the server's close reply and drop the socket, and with it
        # goodbye frames still in the send buffer: ws.close() reads that reply itself.
        self._closing = True
        await self._pause_reader()
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await ws.send_str(packets.DISCONNECT_DEFAULT_NAMESPACE)
            await ws.send_str(packets.CLOSE)
        await ws.close()

    async def abort(self) -> None:
        self._lost = self._lost or "the connection was closed"
        self._stop_timers()
        if self._ws is not None and not self._ws.closed:
            sever(self._ws)
        if self._reader is not None:
            await stop_tasks([self._reader])

    # -- reading ---------------------------------------------------------------------

    def _start_reader(self) -> None:
        assert self._ws is not None
        self._reader = asyncio.get_running_loop().create_task(
            self._read_in_background(self._ws), name="labs-websocket-reader"
        )

    async def _pause_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is None or reader.done():
            return
        self._pausing = reader
        reader.cancel()
        await asyncio.wait([reader])
        self._pausing = None  # left set if we are cancelled meanwhile: the reader still only pauses

    def _keep_alive(self, reads_before: int) -> None:
        """A query holds the socket but has not read for a while: read for it meanwhile."""
        self._keepalive = None
        if self._lost is not None or self._reader is not None or self._closing:
            return  # gone, released (the background reader runs again) or saying goodbye
        if self._reads == reads_before and not self._query_reading:
            logger.debug("Labs query not reading; the background reader answers pings meanwhile")
            self._start_reader()
            return
        loop = asyncio.get_running_loop()
        self._keepalive = loop.call_later(self._keepalive_period, self._keep_alive, self._reads)

    async def _read_in_background(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while (reason := await self._handle(ws, await ws.receive())) is None:
                pass
        except asyncio.CancelledError:
            if self._pausing is asyncio.current_task():
                return  # handed over to a query's read_one
            self._gone("the connection was closed")
            raise
        except Exception as exc:  # reported to the query below; nobody awaits this task's result
            logger.debug("Labs WebSocket reader failed: %r", exc)
            reason = f"{type(exc).__name__}: {exc}"
        self._gone(reason)

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, message: aiohttp.WSMessage) -> str | None:
        """Dispatch one message to the listener; return why the socket is gone, or None."""
        if message.type is not aiohttp.WSMsgType.TEXT:
            if message.type is aiohttp.WSMsgType.BINARY:
                self._listener.on_bad_packet(message.data, ValueError("binary WebSocket message"))
                return None
            return _why_closed(ws, message)
        self._last_heard = time.monotonic()
        try:
            kind, data = packets.decode(message.data)
        except packets.DECODE_ERRORS as exc:
            self._listener.on_bad_packet(message.data, exc)
            return None
        if kind == "event":
            self._listener.on_event(*data)
        elif kind == "ping":
            await ws.send_str(packets.PONG + data)
        elif kind == "connect":
            self._acked = True
            self.sid = str(data.get("sid", "")) if isinstance(data, dict) else ""
            self._settled.set()
            self._listener.on_connect()
        elif kind == "connect_error":
            self._refusal = str(data.get("message") if isinstance(data, dict) else data)
            self._settled.set()
            self._listener.on_connect_error(data)
        elif kind == "disconnect":
            return "the server disconnected the namespace"
        elif kind == "close":
            return "the server closed the Engine.IO session"
        return None

    def _gone(self, reason: str) -> None:
        """The socket is lost: tell the listener once, and let the server see us go."""
        if self._gone_reported:
            self._listener.on_disconnect(self._lost)  # a query started since: it must hear too
            return
        self._gone_reported = True
        self._lost = self._lost or reason
        self._settled.set()
        self._stop_timers()
        if self._ws is not None and not self._ws.closed:
            sever(self._ws)
        self._listener.on_disconnect(self._lost)

    # -- liveness --------------------------------------------------------------------

    def _check_heard(self) -> None:
        """Drop a socket the server has stopped pinging: it is half-open, or the server is gone."""
        left = self._last_heard + self._silence_limit - time.monotonic()
        if left > 0:
            self._watchdog = asyncio.get_running_loop().call_later(left, self._check_heard)
            return
        logger.debug("no ping from the Labs server for %.1fs; dropping the socket", self._silence_limit)
        self._gone(f"no ping from the server for {self._silence_limit:.0f}s")

    def _stop_timers(self) -> None:
        for timer in (self._watchdog, self._keepalive):
            if timer is not None:
                timer.cancel()
        self._watchdog = self._keepalive = None


def _why_closed(ws: aiohttp.ClientWebSocketResponse, message: aiohttp.WSMessage) -> str:
    if message.type is aiohttp.WSMsgType.ERROR:
        return f"WebSocket error: {message.data}"
    code = ws.close_code
    return f"the WebSocket was closed (code {code})" if code is not None else "the WebSocket was closed"
