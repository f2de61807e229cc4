"""Shared fixtures: one real Labs emulator on a real port for the session, reset before each test."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

# pytester forgets every module an inner run imported, and hypothesis's plugin imports its package at
# the end of each inner run: without a bytecode cache, pytest then rewrites ~80 hypothesis modules
# again for every runpytest (about 2 s each). Imported here once, the package stays for every inner run.
import hypothesis.internal.observability  # noqa: F401
import pytest
import trustme
from aiohttp import web

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator


@pytest.fixture(autouse=True)
def _no_login_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's ``pplx-labs login`` session: a model's default cookies stay none."""
    monkeypatch.setenv("PPLX_LABS_SESSION_FILE", "")


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
        transport="labs", base_url=base_url, timeout=20, first_token_timeout=5, idle_timeout=5, max_retries=1
    )
    yield chat
    chat.close()


@pytest.fixture
async def amodel(base_url: str) -> AsyncIterator[ChatPerplexityLabs]:
    """Like ``model`` but closed on the test's own event loop."""
    chat = ChatPerplexityLabs(
        transport="labs", base_url=base_url, timeout=20, first_token_timeout=5, idle_timeout=5, max_retries=1
    )
    yield chat
    await chat.aclose()


SocketHandler = Callable[[web.Request], Awaitable[web.WebSocketResponse]]


@pytest.fixture
async def socketio_endpoint() -> AsyncIterator[Callable[[SocketHandler], Awaitable[str]]]:
    """Serve a hand-written ``/socket.io/`` WebSocket handler on a real port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def serve(handler: SocketHandler) -> str:
        app = web.Application()
        app.router.add_get("/socket.io/", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        runners.append(runner)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]  # the bound port (site.name shows 0 on older aiohttp)
        return f"http://{host}:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A port whose TCP connect never completes: its accept backlog is full, so the kernel drops SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(address)
    yield f"http://127.0.0.1:{address[1]}"
    for filler in fillers:
        filler.close()
    listener.close()


@pytest.fixture
def untrusted_tls() -> ssl.SSLContext:
    """A server TLS context for 127.0.0.1 whose certificate comes from a fresh CA that no client trusts."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def refused_url() -> str:
    """A loopback URL whose port was free a moment ago: connecting there is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def over_the_web(monkeypatch: pytest.MonkeyPatch, emulator: LabsEmulator) -> Iterator[LabsEmulator]:
    """Models built from the environment ask over the web (``PPLX_LABS_TRANSPORT=web``); afterwards the
    emulator saw no Socket.IO handshake at all."""
    monkeypatch.setenv("PPLX_LABS_TRANSPORT", "web")
    yield emulator
    assert sum(emulator.handshakes.values()) == 0


@pytest.fixture
def over_labs(monkeypatch: pytest.MonkeyPatch, emulator: LabsEmulator) -> Iterator[LabsEmulator]:
    """Models built from the environment speak Labs' Socket.IO (``PPLX_LABS_TRANSPORT=labs``), not the
    default web app; afterwards the emulator saw no web ask at all."""
    monkeypatch.setenv("PPLX_LABS_TRANSPORT", "labs")
    yield emulator
    assert emulator.web.asks == 0
