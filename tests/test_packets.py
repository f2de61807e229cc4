"""The direct WebSocket's packet codec agrees with python-socketio's and classifies every packet type."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from socketio import packet as sio_packet

from langchain_pplx_labs._json import OrjsonPacket
from langchain_pplx_labs.labs import packets

FRAME = {
    "output": 'He said "hi" [1]',
    "final": False,
    "status": "pending",
    "citations": ["https://a.example"],
}


@pytest.mark.parametrize(
    "data",
    [["sonar_query_progress", FRAME], ["event_only"], ["two", 1, {"b": [None, True]}], ["ünï", "çødé ✓"]],
)
def test_event_fast_path_matches_python_socketio(data: list[Any]) -> None:
    encoded = OrjsonPacket(sio_packet.EVENT, data=data).encode()
    assert encoded.startswith("2[")
    assert packets.decode("4" + encoded) == ("event", OrjsonPacket(encoded_packet=encoded).data)
    assert packets.encode_event(data[0], data[1] if len(data) > 1 else None).startswith("42[")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('40{"sid":"abc"}', ("connect", {"sid": "abc"})),
        ('44{"message":"Not authorized"}', ("connect_error", {"message": "Not authorized"})),
        ("41", ("disconnect", None)),
        ('42/other,["x_query_progress",{}]', ("ignore", None)),  # not our namespace
        ('4212["x",1]', ("event", ["x", 1])),  # an ack id before the data
        ('43["ack"]', ("ignore", None)),
        ("2", ("ping", "")),
        ("2probe", ("ping", "probe")),
        ("1", ("close", None)),
        ("3", ("ignore", None)),
        ("6", ("ignore", None)),
    ],
)
def test_every_packet_type_is_classified(message: str, expected: tuple[str, Any]) -> None:
    assert packets.decode(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        "",
        "7",
        "x",
        '42{"not": "a list"}',
        "42[]",
        "42[1, 2]",
        "42[",
        '451-["x",{"_placeholder":true,"num":0}]',
    ],
)
def test_malformed_packets_raise_a_decode_error(message: str) -> None:
    with pytest.raises(packets.DECODE_ERRORS):
        packets.decode(message)


def test_open_packet_gives_the_ping_timing_in_seconds() -> None:
    handshake = {"sid": "s", "upgrades": [], "pingInterval": 25000, "pingTimeout": 20000, "maxPayload": 1e6}
    assert packets.decode_open("0" + orjson.dumps(handshake).decode()) == (25.0, 20.0)
    for bad in ("hello", '0{"nosid": 1}', "40", b"0{}"):
        with pytest.raises(packets.DECODE_ERRORS):
            packets.decode_open(bad)


def test_connect_carries_the_auth_payload() -> None:
    assert packets.encode_connect({"jwt": "anonymous-ask-user"}) == '40{"jwt":"anonymous-ask-user"}'
