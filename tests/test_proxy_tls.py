"""Proxies and TLS reach the transport: a real pproxy in between, and a self-signed https emulator."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs import pool as pool_module
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.errors import PerplexityLabsConnectionError


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"pproxy exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("pproxy did not start listening")


@pytest.fixture(scope="module")
def pproxy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A real pproxy speaking http and socks5 on one port, logging each tunnel it opens."""
    port = _free_port()
    log = tmp_path_factory.mktemp("pproxy") / "pproxy.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "pproxy", "-l", f"http+socks5://127.0.0.1:{port}", "-v"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(port, process)
        yield port, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def _tunnels_to(log: Path, target_port: int) -> int:
    # pproxy -v prints one line per tunnel, e.g. "http 127.0.0.1:5xxxx -> 127.0.0.1:4xxxx".
    return sum(f"127.0.0.1:{target_port}" in line for line in log.read_text(errors="replace").splitlines())


@pytest.mark.system
@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_queries_go_through_the_proxy(
    scheme: str, pproxy_server: tuple[int, Path], base_url: str, emulator: LabsEmulator
) -> None:
    proxy_port, log = pproxy_server
    emulator.script(answer=f"via {scheme}")
    before = _tunnels_to(log, emulator.port)
    async with ChatPerplexityLabs(
        transport="labs",
        base_url=base_url,
        model="sonar",
        proxy=f"{scheme}://127.0.0.1:{proxy_port}",
        max_retries=0,
    ) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == f"via {scheme}"
    await asyncio.sleep(0.2)  # pproxy flushes its log line asynchronously
    assert _tunnels_to(log, emulator.port) > before, log.read_text()


async def test_dead_proxy_is_a_connection_error(base_url: str, emulator: LabsEmulator) -> None:
    async with ChatPerplexityLabs(
        transport="labs",
        base_url=base_url,
        model="sonar",
        proxy=f"socks5://127.0.0.1:{_free_port()}",
        max_retries=0,
    ) as chat:
        with pytest.raises(PerplexityLabsConnectionError):
            await chat.ainvoke("hello")
    assert emulator.requests == []


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_emulator(authority: trustme.CA) -> AsyncIterator[LabsEmulator]:
    """An emulator on https with a certificate for 127.0.0.1 signed by a private CA."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    async with LabsEmulator(ssl_context=server_context) as emulator:
        emulator.script(answer="over TLS")
        yield emulator


async def test_default_refuses_a_self_signed_certificate(tls_emulator: LabsEmulator) -> None:
    assert tls_emulator.base_url.startswith("https://")
    async with ChatPerplexityLabs(
        transport="labs", base_url=tls_emulator.base_url, model="sonar", max_retries=0
    ) as chat:
        with pytest.raises(PerplexityLabsConnectionError, match=r"(?i)certificate") as caught:
            await chat.ainvoke("hello")
    assert "ssl_context=" in str(caught.value)
    assert tls_emulator.requests == []


async def test_custom_ssl_context_with_the_ca_is_accepted(
    tls_emulator: LabsEmulator, authority: trustme.CA
) -> None:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    async with ChatPerplexityLabs(
        transport="labs", base_url=tls_emulator.base_url, model="sonar", ssl_context=context, max_retries=0
    ) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == "over TLS"
    assert len(tls_emulator.requests) == 1


async def test_verify_ssl_false_is_accepted(tls_emulator: LabsEmulator) -> None:
    async with ChatPerplexityLabs(
        transport="labs", base_url=tls_emulator.base_url, model="sonar", verify_ssl=False, max_retries=0
    ) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == "over TLS"


@pytest.mark.system
async def test_tls_through_a_socks5_proxy(
    tls_emulator: LabsEmulator, authority: trustme.CA, pproxy_server: tuple[int, Path]
) -> None:
    proxy_port, log = pproxy_server
    context = ssl.create_default_context()
    authority.configure_trust(context)
    async with ChatPerplexityLabs(
        transport="labs",
        base_url=tls_emulator.base_url,
        model="sonar",
        ssl_context=context,
        proxy=f"socks5://127.0.0.1:{proxy_port}",
        max_retries=0,
    ) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == "over TLS"
    await asyncio.sleep(0.2)
    assert _tunnels_to(log, tls_emulator.port) > 0


@pytest.mark.system
async def test_polling_transport_also_goes_through_the_proxy(
    pproxy_server: tuple[int, Path], base_url: str, emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # python-socketio gets our aiohttp session for polling too (http_session=), so the
    # handshake requests must tunnel through the proxy as well as the WebSocket.
    proxy_port, log = pproxy_server
    monkeypatch.setattr(
        pool_module, "_POLLING_ONLY", pool_module.FallbackMemory()
    )  # the pool remembers polling-only hosts
    emulator.refuse_websocket = True
    emulator.script(answer="polled via proxy")
    before = _tunnels_to(log, emulator.port)
    async with ChatPerplexityLabs(
        transport="labs",
        base_url=base_url,
        model="sonar",
        proxy=f"http://127.0.0.1:{proxy_port}",
        max_retries=0,
    ) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == "polled via proxy"
    assert emulator.handshakes["polling"] >= 1
    await asyncio.sleep(0.2)
    assert _tunnels_to(log, emulator.port) - before >= 2  # the refused WebSocket and the polling
