"""Recorded Labs conversations (cassettes): format, redaction, recording and replay through the emulator."""

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
)
from langchain_pplx_labs.recording.redact import Redactor
from langchain_pplx_labs.recording.replay import (
    CassetteMismatchError,
    CassetteNotFoundError,
    CassetteResponder,
    payload_diff,
)

__all__ = [
    "Cassette",
    "CassetteError",
    "CassetteMismatchError",
    "CassetteNotFoundError",
    "CassetteResponder",
    "Frame",
    "HttpRefusal",
    "Interaction",
    "Redactor",
    "UpstreamUnreachableError",
    "load_cassette",
    "payload_diff",
    "record_cassette",
    "record_interaction",
    "save_cassette",
]
