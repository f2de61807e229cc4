"""Recorded Labs conversations (cassettes): format, redaction, recording and replay through the emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_pplx_labs._lazy import lazy_names

if TYPE_CHECKING:  # mypy and IDEs see the names; at run time they load on first use (PEP 562)
    from langchain_pplx_labs.recording.cassette import (
        Cassette,
        CassetteError,
        Frame,
        HttpRefusal,
        Interaction,
        load_cassette,
        save_cassette,
    )
    from langchain_pplx_labs.recording.recorder import (
        UpstreamUnreachableError,
        record_cassette,
        record_interaction,
        record_web_interaction,
    )
    from langchain_pplx_labs.recording.redact import Redactor
    from langchain_pplx_labs.recording.replay import (
        CassetteMismatchError,
        CassetteNotFoundError,
        CassetteResponder,
        CassetteTransportError,
        payload_diff,
    )

# Name -> defining module: reading a cassette (``pplx-labs cassette show``) needs neither the
# recorder's aiohttp and socketio nor the replay server's emulator.
_LAZY = {
    **dict.fromkeys(
        (
            "Cassette",
            "CassetteError",
            "Frame",
            "HttpRefusal",
            "Interaction",
            "load_cassette",
            "save_cassette",
        ),
        "langchain_pplx_labs.recording.cassette",
    ),
    **dict.fromkeys(
        ("UpstreamUnreachableError", "record_cassette", "record_interaction", "record_web_interaction"),
        "langchain_pplx_labs.recording.recorder",
    ),
    "Redactor": "langchain_pplx_labs.recording.redact",
    **dict.fromkeys(
        (
            "CassetteMismatchError",
            "CassetteNotFoundError",
            "CassetteResponder",
            "CassetteTransportError",
            "payload_diff",
        ),
        "langchain_pplx_labs.recording.replay",
    ),
}

__all__ = [
    "Cassette",
    "CassetteError",
    "CassetteMismatchError",
    "CassetteNotFoundError",
    "CassetteResponder",
    "CassetteTransportError",
    "Frame",
    "HttpRefusal",
    "Interaction",
    "Redactor",
    "UpstreamUnreachableError",
    "load_cassette",
    "payload_diff",
    "record_cassette",
    "record_interaction",
    "record_web_interaction",
    "save_cassette",
]

__getattr__, __dir__ = lazy_names(globals(), _LAZY)
