"""Which timeouts are retried, and errors that say how many attempts were made and the time spent."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.errors import PerplexityLabsConnectionError, PerplexityLabsTimeoutError

# "... (attempt 1 of 1, 0.52s in total)": the suffix every timeout that ends a query carries.
_ACCOUNT = r" \(attempt (\d+) of (\d+), (\d+\.\d\d)s in total\)$"


def _model(base_url: str, **overrides: Any) -> ChatPerplexityLabs:
    settings: dict[str, Any] = {
        "base_url": base_url,
        "model": "sonar",
        "timeout": 30,
        "connect_timeout": 5,
        "handshake_timeout": 5,
        "first_token_timeout": 5,
        "idle_timeout": 5,
    }
    settings.update(overrides)
    return ChatPerplexityLabs(transport="labs", **settings)


def _accounting(error: PerplexityLabsTimeoutError, fired: str) -> tuple[int, int]:
    """Check the message is ``fired`` plus the accounting suffix; returns (attempt, allowed)."""
    match = re.fullmatch(re.escape(fired) + _ACCOUNT, str(error))
    assert match, str(error)
    assert match.group(3) == f"{error.elapsed:.2f}"
    return int(match.group(1)), int(match.group(2))


@pytest.fixture
async def mute_server() -> AsyncIterator[tuple[str, list[int]]]:
    """Accepts connections and reads the upgrade request, then never answers; counts connections."""
    held: list[asyncio.StreamWriter] = []
    accepted = [0]

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        held.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


# -- not retried: the server had the question ----------------------------------------------------


async def test_first_token_timeout_is_not_retried_and_says_so(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(stall_after=0)  # a model that never starts answering
    async with _model(base_url, first_token_timeout=0.3, max_retries=5) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    error = caught.value
    assert error.which == "first_token"
    assert _accounting(error, "Perplexity Labs first_token timeout fired after 0.3s") == (1, 1)
    assert error.attempts == 1
    assert error.elapsed is not None
    assert 0.3 <= error.elapsed < 5  # five retries would have taken 1.8 s plus backoff
    assert len(emulator.requests) == 1


def test_first_token_timeout_is_not_retried_on_the_sync_path(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(stall_after=0)
    with (
        _model(base_url, first_token_timeout=0.3, max_retries=3) as chat,
        pytest.raises(PerplexityLabsTimeoutError) as caught,
    ):
        chat.invoke("hello")
    assert _accounting(caught.value, "Perplexity Labs first_token timeout fired after 0.3s") == (1, 1)
    assert len(emulator.requests) == 1


async def test_first_token_timeout_on_a_pooled_socket_is_not_retried_either(
    base_url: str, emulator: LabsEmulator
) -> None:
    async with _model(base_url, first_token_timeout=0.3, max_retries=2) as chat:
        await chat.ainvoke("warm up")  # the next question goes out on this warm socket
        emulator.script(stall_after=0)
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "first_token"
    assert caught.value.attempts == 1
    assert len(emulator.requests) == 2
    assert emulator.connections == 1


async def test_idle_timeout_after_text_is_attempt_one_of_one(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer="abcdefghij" * 3, chunk_size=10, stall_after=1)
    async with _model(base_url, idle_timeout=0.3, max_retries=3) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert _accounting(caught.value, "Perplexity Labs idle timeout fired after 0.3s") == (1, 1)
    assert caught.value.partial_content == "abcdefghij"
    assert len(emulator.requests) == 1


async def test_total_timeout_is_not_retried(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(stall_after=0)
    async with _model(base_url, timeout=0.5, first_token_timeout=None, max_retries=3) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert _accounting(caught.value, "Perplexity Labs total timeout fired after 0.5s") == (1, 1)
    assert len(emulator.requests) == 1


# -- retried: the server never had the question --------------------------------------------------


async def test_connect_timeout_is_retried_and_counts_every_attempt(blackhole: str) -> None:
    async with _model(blackhole, connect_timeout=0.2, max_retries=2) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    error = caught.value
    assert error.which == "connect"
    assert _accounting(error, "Perplexity Labs connect timeout fired after 0.2s") == (3, 3)
    assert error.attempts == 3
    assert error.elapsed is not None
    assert error.elapsed >= 0.6  # three connects of 0.2 s each: the total time, not one attempt's


async def test_handshake_timeout_is_retried_and_counts_every_attempt(
    mute_server: tuple[str, list[int]],
) -> None:
    url, accepted = mute_server
    async with _model(url, handshake_timeout=0.2, max_retries=1) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "handshake"
    assert _accounting(caught.value, "Perplexity Labs handshake timeout fired after 0.2s") == (2, 2)
    assert accepted[0] == 2


async def test_total_budget_cutting_retries_short_says_how_many_were_left(blackhole: str) -> None:
    # Each connect times out after 0.3 s; the 0.5 s budget has no room for a third attempt.
    async with _model(blackhole, connect_timeout=0.3, timeout=0.5, max_retries=5) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    limit = {"connect": "0.3s", "total": "0.5s"}[caught.value.which]
    fired = f"Perplexity Labs {caught.value.which} timeout fired after {limit}"
    attempt, allowed = _accounting(caught.value, fired)
    assert allowed == 6
    assert attempt in (1, 2)


async def test_connection_errors_carry_attempts_and_elapsed(emulator: LabsEmulator, refused_url: str) -> None:
    async with _model(refused_url, max_retries=2) as chat:
        with pytest.raises(PerplexityLabsConnectionError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.attempts == 3
    assert caught.value.elapsed is not None
    assert "attempt" not in str(caught.value)  # only timeouts grow the suffix; the message is the cause
