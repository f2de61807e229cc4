"""An offline Perplexity Labs playground: a real Socket.IO server, scriptable for tests and demos."""

from langchain_pplx_labs.emulator.script import (
    FAILED_FRAME,
    RATE_LIMIT_FRAME,
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
from langchain_pplx_labs.emulator.server import MAIN_SITE_PAGE, EmulatorThread, LabsEmulator

__all__ = [
    "FAILED_FRAME",
    "MAIN_SITE_PAGE",
    "RATE_LIMIT_FRAME",
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
