"""Shared fixtures: one real Labs emulator on a real port for the session, reset before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator


@pytest.fixture(scope="session")
def emulator_thread() -> Iterator[EmulatorThread]:
    """The emulator serving on its own loop in a thread, so sync and async tests share it."""
    with EmulatorThread() as thread:
        yield thread


@pytest.fixture
def emulator(emulator_thread: EmulatorThread) -> Iterator[LabsEmulator]:
    """The session emulator, back to default answers, no faults and zeroed counters."""
    emulator_thread.call(emulator_thread.emulator.reset)
    yield emulator_thread.emulator
    emulator_thread.call(emulator_thread.emulator.reset)


@pytest.fixture
def base_url(emulator: LabsEmulator) -> str:
    return emulator.base_url


@pytest.fixture
def model(base_url: str) -> Iterator[ChatPerplexityLabs]:
    """A model bound to the emulator with short timeouts, closed after the test."""
    chat = ChatPerplexityLabs(
        base_url=base_url, timeout=20, first_token_timeout=5, idle_timeout=5, max_retries=1
    )
    yield chat
    chat.close()


@pytest.fixture
async def amodel(base_url: str) -> AsyncIterator[ChatPerplexityLabs]:
    """Like ``model`` but closed on the test's own event loop."""
    chat = ChatPerplexityLabs(
        base_url=base_url, timeout=20, first_token_timeout=5, idle_timeout=5, max_retries=1
    )
    yield chat
    await chat.aclose()
