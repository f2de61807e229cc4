"""An offline Perplexity Labs playground: a real Socket.IO server, scriptable for tests and demos."""

from langchain_pplx_labs.emulator.script import (
    Drop,
    Emit,
    LabsRequest,
    Raw,
    Responder,
    Scenario,
    Stall,
    Step,
    default_responder,
    progress_frame,
)
from langchain_pplx_labs.emulator.server import EmulatorThread, LabsEmulator

__all__ = [
    "Drop",
    "Emit",
    "EmulatorThread",
    "LabsEmulator",
    "LabsRequest",
    "Raw",
    "Responder",
    "Scenario",
    "Stall",
    "Step",
    "default_responder",
    "progress_frame",
]
