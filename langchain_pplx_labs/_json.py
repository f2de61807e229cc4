"""orjson-backed JSON codec and Socket.IO packet class, so frames parse at C speed."""

from __future__ import annotations

from typing import Any

import orjson
from socketio import packet


class OrjsonCodec:
    """The ``dumps``/``loads`` pair python-socketio calls, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        return orjson.loads(data)


class OrjsonPacket(packet.Packet):  # type: ignore[misc]
    """Socket.IO packet that encodes and decodes its JSON with orjson."""

    json = OrjsonCodec
