"""Recorded Labs conversations (cassettes): format, redaction, recording and replay through the emulator."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

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
    )
    from langchain_pplx_labs.recording.redact import Redactor
    from langchain_pplx_labs.recording.replay import (
        CassetteMismatchError,
        CassetteNotFoundError,
        CassetteResponder,
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
        ("UpstreamUnreachableError", "record_cassette", "record_interaction"),
        "langchain_pplx_labs.recording.recorder",
    ),
    "Redactor": "langchain_pplx_labs.recording.redact",
    **dict.fromkeys(
        ("CassetteMismatchError", "CassetteNotFoundError", "CassetteResponder", "payload_diff"),
        "langchain_pplx_labs.recording.replay",
    ),
}

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


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first access and keep it (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        # AttributeError lets ``from langchain_pplx_labs.recording import replay`` import the submodule.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's own names plus the lazy public ones, for ``dir()`` and completion."""
    return sorted({*globals(), *__all__})
