"""The polling fallback: a Labs socket through python-socketio's client (polling handshake, then upgrade)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import engineio
import socketio
from engineio import base_client as eio_base_client
from engineio import packet as eio_packet
from engineio import payload as eio_payload
from socketio import exceptions as sio_exceptions
from socketio import packet as sio_packet

from langchain_pplx_labs._json import OrjsonPacket
from langchain_pplx_labs._teardown import GRACEFUL_CLOSE_SECONDS, stop_tasks, track
from langchain_pplx_labs.errors import PerplexityLabsConnectionError
from langchain_pplx_labs.labs.dial import LabsDialer, sever
from langchain_pplx_labs.labs.wire import WireListener
from langchain_pplx_labs.settings import ConnectionSettings

logger = logging.getLogger(__name__)


class PoolSessionClosed(PerplexityLabsConnectionError):
    """engine.io wanted a new HTTP session because the pool's was closed (the pool is closing)."""


class _BorrowingEngineIO(engineio.AsyncClient):  # type: ignore[misc]
    """engine.io's client on the pool's HTTP session, which it borrows and so never closes."""

    def __del__(self) -> None:
        # engine.io's own __del__ closes an open session on asyncio.get_event_loop(): from the
        # main thread on 3.11 that creates (and leaves unclosed) a loop, and runs the close of a
        # session that belongs to the pool's loop on it. The pool closes its session itself.
        pass


class _LabsSocketIO(socketio.AsyncClient):  # type: ignore[misc]
    """python-socketio client that reports undecodable packets instead of only logging them."""

    def __init__(self, listener: WireListener, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listener = listener

    def _engineio_client_class(self) -> type[engineio.AsyncClient]:
        return _BorrowingEngineIO

    async def _handle_eio_disconnect(self, reason: Any) -> None:
        # python-socketio reports a lost transport only to connected namespaces: before the
        # CONNECT ack nobody would hear of it.
        if not self.namespaces:
            self._listener.on_disconnect(reason)
        await super()._handle_eio_disconnect(reason)

    async def _handle_eio_message(self, data: Any) -> None:
        try:
            await super()._handle_eio_message(data)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self._binary_packet = None
            self._listener.on_bad_packet(data, exc)

    async def emit_before_ack(self, event: str, data: Any) -> None:
        """Send an EVENT to ``/`` right behind our CONNECT, before the server acknowledged it."""
        await self._send_packet(self.packet_class(sio_packet.EVENT, namespace="/", data=[event, data]))


class PollingWire:
    """A Labs socket that starts with the Engine.IO polling handshake, then upgrades to a WebSocket.

    Used only when a server refuses the direct WebSocket; python-socketio does the work,
    in its own tasks: events reach the listener, and a query waits for them there.
    """

    reads_inline = False

    def __init__(self, settings: ConnectionSettings, dialer: LabsDialer, listener: WireListener) -> None:
        self._settings = settings
        timeouts = settings.timeouts
        self._sio = _LabsSocketIO(
            listener,
            reconnection=False,
            http_session=dialer.session(),
            serializer=OrjsonPacket,
            request_timeout=timeouts.connect + timeouts.handshake,
            logger=False,
            engineio_logger=False,
        )
        # engine.io silently builds (and never closes) a session of its own when ours is
        # closed, which happens when the pool closes mid-connect: refuse instead.
        self._sio.eio.http_factory = _refuse_new_session
        self._sio.on("*", listener.on_event)
        self._sio.on("disconnect", listener.on_disconnect)
        self._sio.on("connect", listener.on_connect)
        self._sio.on("connect_error", self._on_connect_error)
        self._listener = listener
        # Set when the server itself refuses our CONNECT: python-socketio would then wait for
        # a long-poll the server answers only at its next ping before it gives up.
        self._refusal: asyncio.Future[str] | None = None

    @property
    def engine_open(self) -> bool:
        return bool(self._sio.connected) and self._sio.eio.state == "connected"

    @property
    def namespace_ready(self) -> bool:
        return "/" in self._sio.namespaces

    @property
    def loops_running(self) -> bool:
        eio = self._sio.eio
        loops = (eio.read_loop_task, eio.write_loop_task)
        return all(task is not None and not task.done() for task in loops)

    async def connect(self, *, pipelined: bool) -> None:
        del pipelined  # the polling handshake waits for the CONNECT ack anyway
        self._refusal = asyncio.get_running_loop().create_future()
        connecting = asyncio.ensure_future(
            self._sio.connect(
                self._settings.base_url,  # python-socketio keeps its scheme and host: the path goes below
                headers=self._settings.header_dict,
                auth=dict(self._settings.protocol.auth),
                transports=["polling", "websocket"],
                socketio_path=engineio_path(self._settings),
                wait_timeout=self._settings.timeouts.handshake,
            )
        )
        try:
            await asyncio.wait([connecting, self._refusal], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not connecting.done():
                # python-socketio's connect, cancelled, still waits out its own disconnect: the
                # abort that follows a failed open ends that; only keep it referenced meanwhile.
                connecting.cancel()
                track(connecting)
        if self._refusal.done():
            raise ConnectionRefusedError(
                f"the server refused the Socket.IO CONNECT: {self._refusal.result()}"
            )
        connecting.result()

    def _on_connect_error(self, data: Any = None) -> None:
        if isinstance(data, dict) and self._refusal is not None and not self._refusal.done():
            self._refusal.set_result(str(data.get("message", data)))
        self._listener.on_connect_error(data)

    async def send_event(self, event: str, data: Any, *, before_ack: bool) -> None:
        try:
            if before_ack:
                await self._sio.emit_before_ack(event, data)
            else:
                await self._sio.emit(event, data)
        except sio_exceptions.BadNamespaceError as exc:
            raise LookupError(str(exc)) from exc

    async def read_one(self) -> None:
        raise NotImplementedError("python-socketio reads in its own tasks")

    def release(self) -> None:
        pass  # python-socketio's read loop never stopped

    async def goodbye(self) -> None:
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

    async def abort(self) -> None:
        eio = self._sio.eio
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


def _refuse_new_session() -> aiohttp.ClientSession:
    raise PoolSessionClosed("The Labs connection pool is closed")


def engineio_path(settings: ConnectionSettings) -> str:
    """The Engine.IO path under the server's host, the base URL's own path first (``/labs`` + ``socket.io``).

    python-socketio drops a path given in the URL; the WebSocket and the web app keep it, so must we.
    """
    root = urlsplit(settings.base_url).path.strip("/")
    return "/".join(part for part in (root, settings.protocol.engineio_path) if part)


def say_goodbye(eio: Any) -> None:
    """Send a polling server our CLOSE without waiting for it.

    Unlike a WebSocket, a dropped polling session is not noticed by the server: it
    would keep it (and keep answering into it) until its ping timeout.
    """
    body = eio_payload.Payload(packets=[eio_packet.Packet(eio_packet.CLOSE)]).encode()

    async def post() -> None:
        try:
            response = await eio._send_request(
                "POST",
                eio.base_url,
                body=body,
                headers={"Content-Type": "text/plain"},
                timeout=GRACEFUL_CLOSE_SECONDS,
            )
            if isinstance(response, aiohttp.ClientResponse):
                response.release()
        except Exception as exc:  # best effort: the server times the session out anyway
            logger.debug("polling goodbye failed: %r", exc)

    track(asyncio.ensure_future(post()))
