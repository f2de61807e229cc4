"""Pure Engine.IO v4 / Socket.IO v5 text packets as a direct WebSocket carries them (no I/O)."""

from __future__ import annotations

from typing import Any, Final, Literal

import orjson
from socketio import packet as sio_packet

from langchain_pplx_labs._json import OrjsonPacket

Inbound = Literal["event", "connect", "connect_error", "disconnect", "ping", "close", "ignore"]

# Engine.IO packet types (the first character of a text message).
_EIO_OPEN, _EIO_CLOSE, _EIO_PING, _EIO_MESSAGE = "0", "1", "2", "4"
_EIO_IGNORED = frozenset("356")  # PONG, UPGRADE, NOOP
# A Socket.IO EVENT on the default namespace without an ack id: what every answer frame is.
_DEFAULT_EVENT_PREFIX: Final = "42["

PONG: Final = "3"
DISCONNECT_DEFAULT_NAMESPACE: Final = "41"
CLOSE: Final = "1"

# What decoding a malformed packet may raise (orjson's JSONDecodeError is a ValueError).
DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError)


def decode_open(message: object) -> tuple[float, float]:
    """Parse the Engine.IO OPEN packet: (ping interval, ping timeout) in seconds."""
    if not isinstance(message, str) or not message.startswith(_EIO_OPEN):
        raise ValueError(f"expected an Engine.IO OPEN packet, got {message!r:.80}")
    handshake = orjson.loads(message[1:])
    if not isinstance(handshake, dict) or not isinstance(handshake.get("sid"), str):
        raise ValueError(f"the Engine.IO OPEN packet has no sid: {message!r:.80}")
    return int(handshake["pingInterval"]) / 1000.0, int(handshake["pingTimeout"]) / 1000.0


def encode_connect(auth: object) -> str:
    """The Socket.IO CONNECT to the default namespace, carrying ``auth``."""
    return "40" + orjson.dumps(auth).decode()


def encode_event(event: str, data: object) -> str:
    """A Socket.IO EVENT on the default namespace, as an Engine.IO MESSAGE."""
    return "42" + orjson.dumps([event, data]).decode()


def decode(message: str) -> tuple[Inbound, Any]:
    """Classify one text message from the server: (what it is, its data).

    ``event`` data is ``[name, *args]``; ``connect_error`` data is the server's payload.
    Raises one of :data:`DECODE_ERRORS` for a malformed packet.
    """
    if message.startswith(_DEFAULT_EVENT_PREFIX):
        # The hot path, one parse and one copy: python-socketio's decoder slices the
        # message once per header field, a copy of the whole answer so far each time.
        return "event", _event_data(orjson.loads(message[2:]))
    kind = message[:1]
    if kind == _EIO_MESSAGE:
        return _decode_socketio(message[1:])
    if kind == _EIO_PING:
        return "ping", message[1:]
    if kind == _EIO_CLOSE:
        return "close", None
    if kind in _EIO_IGNORED or kind == _EIO_OPEN:
        return "ignore", None
    raise ValueError(f"unknown Engine.IO packet type {kind!r}")


def _decode_socketio(encoded: str) -> tuple[Inbound, Any]:
    packet = OrjsonPacket(encoded_packet=encoded)
    if packet.namespace not in (None, "/"):
        return "ignore", None  # Labs talks on the default namespace only
    if packet.packet_type == sio_packet.EVENT:
        return "event", _event_data(packet.data)
    if packet.packet_type == sio_packet.CONNECT:
        return "connect", packet.data
    if packet.packet_type == sio_packet.CONNECT_ERROR:
        return "connect_error", packet.data
    if packet.packet_type == sio_packet.DISCONNECT:
        return "disconnect", None
    if packet.packet_type in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK):
        raise ValueError("binary Socket.IO packets are not part of the Labs protocol")
    return "ignore", None  # ACK: we never ask for one


def _event_data(data: object) -> list[Any]:
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ValueError("a Socket.IO EVENT must be a list starting with the event name")
    return data
