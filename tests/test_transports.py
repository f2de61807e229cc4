"""The HTTP transport seam's aiohttp implementation against a real loopback server: head, body, drop, keep-alive, errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest
import trustme
from aiohttp import web
from loopback import serving_app

from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.transports.aiohttp import AiohttpTransport
from langchain_pplx_labs.transports.base import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    ReadError,
    Request,
)


class _Server:
    """A loopback app whose routes note what they were sent and when a client left them."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.left = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""

    async def _note(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.ports.append(peer[1] if peer else 0)
        self.bodies.append(await request.read())
        self.headers.append(dict(request.headers))

    async def chunks(self, request: web.Request) -> web.StreamResponse:
        await self._note(request)
        response = web.StreamResponse(status=201, headers={"Content-Type": "text/event-stream"})
        response.headers.add("X-Seen", "one")
        response.headers.add("X-Seen", "two")
        await response.prepare(request)
        for part in (b"first ", b"second ", b"third"):
            await response.write(part)
            await asyncio.sleep(0.01)  # so the parts arrive as separate reads
        await response.write_eof()
        return response

    async def endless(self, request: web.Request) -> web.StreamResponse:
        await self._note(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(b"data: 1\n\n")
            while True:  # until the client leaves: then the server cancels this handler
                await asyncio.sleep(0.01)
                await response.write(b": still here\n\n")
        finally:
            self.left.set()

    async def broken(self, request: web.Request) -> web.StreamResponse:
        await self._note(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"half an answer")
        assert request.transport is not None
        request.transport.abort()  # no last chunk: the body broke off mid-way
        return response


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    served = _Server()
    app = web.Application()
    app.router.add_post("/chunks", served.chunks)
    app.router.add_get("/chunks", served.chunks)
    app.router.add_get("/endless", served.endless)
    app.router.add_get("/broken", served.broken)
    async with serving_app(app) as served.url:
        yield served


@pytest.fixture
async def transport() -> AsyncIterator[AiohttpTransport]:
    http = AiohttpTransport(connect_timeout=2.0)
    try:
        yield http
    finally:
        await http.aclose()


async def test_a_response_has_its_status_lowered_headers_and_body_in_the_parts_sent(
    server: _Server, transport: AiohttpTransport
) -> None:
    connected: list[str] = []
    request = Request(
        "POST",
        server.url + "/chunks",
        {"X-Asked": "yes", "Content-Type": "application/json"},
        b'{"q": 1}',
        on_connected=lambda: connected.append("now"),
    )
    async with await transport.handle_request(request) as response:
        assert response.status == 201
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-seen"] == "one, two"
        parts = [part async for part in response.aiter_bytes()]
        assert response.ended
    assert b"".join(parts) == b"first second third"
    assert len(parts) == 3
    assert connected == ["now"]
    assert server.bodies == [b'{"q": 1}']
    assert server.headers[0]["X-Asked"] == "yes"


async def test_read_with_a_limit_stops_there(server: _Server, transport: AiohttpTransport) -> None:
    async with await transport.handle_request(Request("GET", server.url + "/chunks")) as response:
        assert await response.read(8) == b"first se"


async def test_a_reader_that_leaves_early_drops_the_connection_and_the_server_sees_it(
    server: _Server, transport: AiohttpTransport
) -> None:
    response = await transport.handle_request(Request("GET", server.url + "/endless"))
    assert await response.receive() == b"data: 1\n\n"
    response.close()
    assert not response.ended
    await asyncio.wait_for(server.left.wait(), 5)  # the handler's stream broke: the client went away
    # The next request cannot have reused the dropped connection.
    async with await transport.handle_request(Request("GET", server.url + "/chunks")) as again:
        await again.read()
    assert server.ports[0] != server.ports[1]


async def test_two_requests_read_to_their_end_share_one_keep_alive_connection(
    server: _Server, transport: AiohttpTransport
) -> None:
    connected: list[int] = []
    for number in (1, 2):
        request = Request("GET", server.url + "/chunks", on_connected=lambda n=number: connected.append(n))
        async with await transport.handle_request(request) as response:
            assert await response.read() == b"first second third"
    assert connected == [1, 2]  # a reused connection is reported too
    assert len(server.ports) == 2
    assert server.ports[0] == server.ports[1]


async def test_a_body_that_breaks_off_is_a_read_error(server: _Server, transport: AiohttpTransport) -> None:
    response = await transport.handle_request(Request("GET", server.url + "/broken"))
    with pytest.raises(ReadError) as caught:
        await response.read()
    response.close()
    assert caught.value.__cause__ is not None  # the aiohttp error, kept for whoever names it


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_refused_connect_is_a_connect_error(transport: AiohttpTransport) -> None:
    port = _closed_port()
    with pytest.raises(ConnectError) as caught:
        await transport.handle_request(Request("GET", f"http://127.0.0.1:{port}/"))
    assert not isinstance(caught.value, ConnectTimeout)
    assert f"127.0.0.1:{port}" in str(caught.value)


async def test_an_untrusted_certificate_is_a_certificate_error(transport: AiohttpTransport) -> None:
    # Its own type, so the layers above can say what to do without knowing aiohttp's errors.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
    async with serving_app(web.Application(), ssl_context=context) as url:
        with pytest.raises(CertificateError) as caught:
            await transport.handle_request(Request("GET", url + "/"))
    assert "certificate" in str(caught.value).lower()


@contextlib.contextmanager
def _full_backlog() -> Iterator[int]:
    """A listening port that accepts nothing and whose backlog is full: Linux drops further SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_connect_past_its_timeout_is_a_connect_timeout() -> None:
    http = AiohttpTransport(connect_timeout=0.2)
    try:
        with _full_backlog() as port, pytest.raises(ConnectTimeout):
            await http.handle_request(Request("GET", f"http://127.0.0.1:{port}/"))
    finally:
        await http.aclose()


async def test_a_closed_transport_refuses_requests(server: _Server) -> None:
    http = AiohttpTransport()
    await http.aclose()
    with pytest.raises(ConnectError, match="closed"):
        await http.handle_request(Request("GET", server.url + "/chunks"))


@pytest.mark.parametrize("proxy", [None, "http://127.0.0.1:3128", "socks5://127.0.0.1:1080"])
async def test_the_connector_keeps_idle_connections_as_long_as_the_pool_direct_or_through_a_proxy(
    proxy: str | None,
) -> None:
    # Through a proxy as directly: a connector with aiohttp's own 15 s would drop the pool's warm connection.
    transport = http_transport(connect_timeout=1.0, proxy=proxy, keep_idle=300.0)
    assert isinstance(transport, AiohttpTransport)
    try:
        connector = transport.session().connector
        assert connector is not None
        assert connector._keepalive_timeout == 300.0
    finally:
        await transport.aclose()
