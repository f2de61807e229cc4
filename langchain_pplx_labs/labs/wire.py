"""What a Labs connection needs from a Socket.IO wire (``Wire``), and where a wire reports what it heard (``WireListener``)."""

from __future__ import annotations

from typing import Any, Protocol


class WireListener(Protocol):
    """Where a wire reports what the server sent; called from the wire's reader, never awaited."""

    def on_event(self, event: str, *args: Any) -> None: ...

    def on_connect(self) -> None: ...

    def on_connect_error(self, data: Any = None) -> None: ...

    def on_disconnect(self, reason: Any = None) -> None: ...

    def on_bad_packet(self, data: Any, exc: Exception) -> None: ...


class Wire(Protocol):
    """One transport's socket: how it connects, sends a question and goes away."""

    # True: a query calls read_one() to read (in its own task) whenever it waits for a
    # frame, and release() when it ends. False: the wire reads in tasks of its own.
    reads_inline: bool

    @property
    def engine_open(self) -> bool:
        """The Engine.IO session is up (the Socket.IO CONNECT may still be unacknowledged)."""

    @property
    def namespace_ready(self) -> bool:
        """The server acknowledged our Socket.IO CONNECT."""

    @property
    def loops_running(self) -> bool:
        """The wire's background reader (and writer) still run, so a goodbye can be delivered."""

    async def connect(self, *, pipelined: bool) -> None:
        """Open the socket and send CONNECT; with ``pipelined``, return without waiting for its ack."""

    async def send_event(self, event: str, data: Any, *, before_ack: bool) -> None:
        """Send an EVENT to ``/``; raise ``LookupError`` when the socket is no longer connected."""

    async def read_one(self) -> None:
        """Read and dispatch the next message, in the caller's task."""

    def release(self) -> None:
        """The query that was reading inline is over."""

    async def goodbye(self) -> None:
        """Leave politely (DISCONNECT, then close); the caller bounds how long it may take."""

    async def abort(self) -> None:
        """Drop the socket at once and stop the wire's tasks; also tidies after a goodbye."""
