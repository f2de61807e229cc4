"""The direct WebSocket: Engine.IO v4 on an aiohttp WebSocket of our own, one reader task per socket.

python-engineio's client runs every incoming message in a new Task and wraps every read
in ``wait_for``; on a stream of answer frames that per-message cost was larger than the
whole reference client's. Here one task reads, decodes (``packets``) and hands each
frame to the listener synchronously; a single timer watches for the server's pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from langchain_pplx_labs import packets
from langchain_pplx_labs._teardown import GRACEFUL_CLOSE_SECONDS, sever, stop_tasks
from langchain_pplx_labs.protocol import ANONYMOUS_AUTH, SOCKETIO_PATH
from langchain_pplx_labs.wire import ConnectionSettings, WireListener

logger = logging.getLogger(__name__)


class NotEngineIOError(ValueError):
    """The server's first WebSocket message was not an Engine.IO OPEN packet."""


class WebSocketWire:
    """A Labs socket over a direct WebSocket (``transport=websocket``, no polling first)."""

    def __init__(
        self, settings: ConnectionSettings, session: aiohttp.ClientSession, listener: WireListener
    ) -> None:
        self._settings = settings
        self._session = session
        self._listener = listener
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._silence_limit = 0.0
        self._last_heard = 0.0
        self._acked = False
        self._lost = False
        self._refusal: str | None = None
        # Set once the CONNECT is answered either way, or the socket is gone.
        self._settled = asyncio.Event()

    @property
    def engine_open(self) -> bool:
        return not self._lost and self._ws is not None and not self._ws.closed and self.loops_running

    @property
    def namespace_ready(self) -> bool:
        return self._acked and self.engine_open

    @property
    def loops_running(self) -> bool:
        return self._reader is not None and not self._reader.done()

    async def connect(self, *, pipelined: bool) -> None:
        ws = await self._session.ws_connect(
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
        loop = asyncio.get_running_loop()
        self._silence_limit = ping_interval + ping_timeout
        self._last_heard = loop.time()
        await ws.send_str(packets.encode_connect(dict(ANONYMOUS_AUTH)))
        self._reader = loop.create_task(self._read(ws), name="labs-websocket-reader")
        self._watchdog = loop.call_at(self._last_heard + self._silence_limit, self._check_heard)
        if not pipelined:
            await self._wait_for_ack()

    def _url(self) -> str:
        base = self._settings.base_url
        scheme, rest = base.split("://", 1)
        ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        return f"{ws_scheme}://{rest}/{SOCKETIO_PATH}/?EIO=4&transport=websocket"

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

    async def goodbye(self) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            await ws.send_str(packets.DISCONNECT_DEFAULT_NAMESPACE)
            await ws.send_str(packets.CLOSE)
        await ws.close()

    async def abort(self) -> None:
        self._lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._ws is not None and not self._ws.closed:
            sever(self._ws)
        if self._reader is not None:
            await stop_tasks([self._reader])

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        reason = "the connection was closed"
        try:
            reason = await self._read_until_gone(ws)
        except Exception as exc:  # reported to the query below; nobody awaits this task's result
            reason = f"{type(exc).__name__}: {exc}"
            logger.debug("Labs WebSocket reader failed: %r", exc)
        finally:
            self._lost = True
            self._settled.set()
            if not ws.closed:
                sever(ws)  # the server said goodbye (or went silent): let it see us go now
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._listener.on_disconnect(reason)

    async def _read_until_gone(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        listener = self._listener
        loop = asyncio.get_running_loop()
        while True:
            message = await ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                if message.type is aiohttp.WSMsgType.BINARY:
                    listener.on_bad_packet(message.data, ValueError("binary WebSocket message"))
                    continue
                return _why_closed(ws, message)
            self._last_heard = loop.time()
            try:
                kind, data = packets.decode(message.data)
            except packets.DECODE_ERRORS as exc:
                listener.on_bad_packet(message.data, exc)
                continue
            if kind == "event":
                listener.on_event(*data)
            elif kind == "ping":
                await ws.send_str(packets.PONG + data)
            elif kind == "connect":
                self._acked = True
                self._settled.set()
                listener.on_connect()
            elif kind == "connect_error":
                self._refusal = str(data.get("message") if isinstance(data, dict) else data)
                self._settled.set()
                listener.on_connect_error(data)
            elif kind == "disconnect":
                return "the server disconnected the namespace"
            elif kind == "close":
                return "the server closed the Engine.IO session"

    def _check_heard(self) -> None:
        """Drop a socket the server has stopped pinging: it is half-open, or the server is gone."""
        loop = asyncio.get_running_loop()
        deadline = self._last_heard + self._silence_limit
        if loop.time() < deadline:
            self._watchdog = loop.call_at(deadline, self._check_heard)
            return
        logger.debug("no ping from the Labs server for %.1fs; dropping the socket", self._silence_limit)
        self._lost = True
        if self._ws is not None and not self._ws.closed:
            sever(self._ws)


def _why_closed(ws: aiohttp.ClientWebSocketResponse, message: aiohttp.WSMessage) -> str:
    if message.type is aiohttp.WSMsgType.ERROR:
        return f"WebSocket error: {message.data}"
    code = ws.close_code
    return f"the WebSocket was closed (code {code})" if code is not None else "the WebSocket was closed"
