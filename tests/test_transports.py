"""The HTTP transport seam's contract, for each transport against real loopback servers: head, body, drop, keep-alive, errors.

Every case runs on aiohttp and curl_cffi alike; what only one of them has lives in its own file
(``test_transports_curl.py``: the browser's ClientHello, CA files, proxies, the cookie jar).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator

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
    HTTPTransport,
    ReadError,
    Request,
)
from langchain_pplx_labs.transports.curl_cffi import CurlCffiTransport

# Within this bound the server sees a reader that left (issue #27's "Done when").
LEFT_WITHIN_SECONDS = 1.0
TRANSPORTS: dict[str, Callable[..., HTTPTransport]] = {
    "aiohttp": AiohttpTransport,
    "curl_cffi": CurlCffiTransport,
}


class _Server:
    """A loopback app whose routes note what they were sent and when a client left them."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.left = asyncio.Event()
        self.release = asyncio.Event()
        self.asked = asyncio.Event()
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

    async def many(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for number in range(200):
            await response.write(b"data: %03d\n\n" % number)
            await asyncio.sleep(0)  # one socket write each: the client's side sees many reads
        await response.write_eof()
        return response

    async def broken(self, request: web.Request) -> web.StreamResponse:
        await self._note(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"half an answer")
        assert request.transport is not None
        request.transport.abort()  # no last chunk: the body broke off mid-way
        return response

    async def quiet(self, request: web.Request) -> web.StreamResponse:
        await self._note(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: 1\n\n")
        for _ in range(3000):  # 30 s at most; nothing written, so no write error tells of a leaver
            if request.transport is None or request.transport.is_closing():
                self.left.set()
                break
            await asyncio.sleep(0.01)
        return response

    async def slow_head(self, request: web.Request) -> web.Response:
        await self._note(request)
        self.asked.set()
        for _ in range(3000):  # 30 s before any answer, unless the client goes
            if request.transport is None or request.transport.is_closing():
                self.left.set()
                break
            await asyncio.sleep(0.01)
        return web.Response(text="late")

    async def cookies(self, request: web.Request) -> web.Response:
        await self._note(request)
        return web.Response(text="\n".join(request.headers.getall("Cookie", [])))

    async def set_cookie(self, request: web.Request) -> web.Response:
        response = web.Response(text="set")
        response.set_cookie("__cf_bm", "bm-1", path="/")
        return response

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/chunks")


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    served = _Server()
    app = web.Application()
    app.router.add_post("/chunks", served.chunks)
    app.router.add_get("/chunks", served.chunks)
    app.router.add_get("/endless", served.endless)
    app.router.add_get("/quiet", served.quiet)
    app.router.add_get("/broken", served.broken)
    app.router.add_get("/many", served.many)
    app.router.add_get("/slow-head", served.slow_head)
    app.router.add_get("/cookies", served.cookies)
    app.router.add_get("/set-cookie", served.set_cookie)
    app.router.add_get("/moved", served.moved)
    async with serving_app(app) as served.url:
        yield served


@pytest.fixture(params=sorted(TRANSPORTS))
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def transport(kind: str) -> AsyncIterator[HTTPTransport]:
    http = TRANSPORTS[kind](connect_timeout=2.0)
    try:
        yield http
    finally:
        await http.aclose()


async def test_a_response_has_its_status_lowered_headers_and_body_as_it_arrives(
    server: _Server, transport: HTTPTransport, kind: str
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
    assert len(parts) > 1  # streamed as it came, not read whole first
    if kind == "aiohttp":
        assert len(parts) == 3  # aiohttp hands over each read as it is
    assert connected == ["now"]
    assert server.bodies == [b'{"q": 1}']
    assert server.headers[0]["X-Asked"] == "yes"
    assert "Expect" not in server.headers[0]  # libcurl's 100-continue, which no browser sends


async def test_read_with_a_limit_stops_there(server: _Server, transport: HTTPTransport) -> None:
    async with await transport.handle_request(Request("GET", server.url + "/chunks")) as response:
        assert await response.read(8) == b"first se"


async def test_a_reader_that_leaves_a_quiet_stream_drops_the_connection_at_once(
    server: _Server, transport: HTTPTransport
) -> None:
    # A server writing nothing has no write error to find out by: only a dropped connection tells it.
    # (curl_cffi 0.17's own close waits for the transfer's end, its PR #751: here that would be 30 s.)
    response = await transport.handle_request(Request("GET", server.url + "/quiet"))
    assert await response.receive() == b"data: 1\n\n"
    response.close()
    assert not response.ended
    assert await response.receive() == b""
    await asyncio.wait_for(server.left.wait(), LEFT_WITHIN_SECONDS)
    # The next request cannot have reused the dropped connection.
    async with await transport.handle_request(Request("GET", server.url + "/chunks")) as again:
        assert await again.read() == b"first second third"
    assert server.ports[0] != server.ports[1]


async def test_a_reader_that_leaves_a_talking_stream_is_seen_to_go(
    server: _Server, transport: HTTPTransport
) -> None:
    response = await transport.handle_request(Request("GET", server.url + "/endless"))
    assert await response.receive() == b"data: 1\n\n"
    response.close()
    assert not response.ended
    await asyncio.wait_for(server.left.wait(), LEFT_WITHIN_SECONDS)  # its handler's write broke
    async with await transport.handle_request(Request("GET", server.url + "/chunks")) as again:
        await again.read()
    assert server.ports[0] != server.ports[1]


async def test_a_request_cancelled_before_its_head_drops_its_connection(
    server: _Server, transport: HTTPTransport
) -> None:
    # curl_cffi runs the transfer in a task of its own, which a cancel of the request does not reach.
    asking = asyncio.create_task(transport.handle_request(Request("GET", server.url + "/slow-head")))
    await asyncio.wait_for(server.asked.wait(), 5)
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    await asyncio.wait_for(server.left.wait(), LEFT_WITHIN_SECONDS)
    async with await transport.handle_request(Request("GET", server.url + "/chunks")) as again:
        assert await again.read() == b"first second third"  # the transport still works


async def test_two_requests_read_to_their_end_share_one_keep_alive_connection(
    server: _Server, transport: HTTPTransport
) -> None:
    connected: list[int] = []
    for number in (1, 2):
        request = Request("GET", server.url + "/chunks", on_connected=lambda n=number: connected.append(n))
        async with await transport.handle_request(request) as response:
            assert await response.read() == b"first second third"
    assert connected == [1, 2]  # a reused connection is reported too
    assert len(server.ports) == 2
    assert server.ports[0] == server.ports[1]


async def test_a_body_that_breaks_off_is_a_read_error(server: _Server, transport: HTTPTransport) -> None:
    response = await transport.handle_request(Request("GET", server.url + "/broken"))
    with pytest.raises(ReadError) as caught:
        await response.read()
    response.close()
    assert caught.value.__cause__ is not None  # the HTTP client's error, kept for whoever names it


async def test_bytes_that_arrived_while_nobody_read_come_as_one_read_and_the_end_after_them(
    server: _Server, transport: HTTPTransport
) -> None:
    # A reader behind the stream pays one wake-up per read, not one per socket read that queued up.
    expected = b"".join(b"data: %03d\n\n" % number for number in range(200))
    async with await transport.handle_request(Request("GET", server.url + "/many")) as response:
        await asyncio.sleep(0.5)  # the server writes all 200 meanwhile
        parts = [part async for part in response.aiter_bytes()]
        assert response.ended
    assert b"".join(parts) == expected
    assert len(parts) < 20


async def test_a_redirect_is_returned_not_followed(server: _Server, transport: HTTPTransport) -> None:
    async with await transport.handle_request(Request("GET", server.url + "/moved")) as response:
        assert response.status == 302
        assert response.headers["location"] == "/chunks"
    assert server.bodies == []  # /chunks was never asked


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_refused_connect_is_a_connect_error(transport: HTTPTransport) -> None:
    port = _closed_port()
    with pytest.raises(ConnectError) as caught:
        await transport.handle_request(Request("GET", f"http://127.0.0.1:{port}/"))
    assert not isinstance(caught.value, ConnectTimeout)
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_an_untrusted_certificate_is_a_certificate_error(transport: HTTPTransport) -> None:
    # Its own type, so the layers above can say what to do without knowing the HTTP client's errors.
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


async def test_a_connect_past_its_timeout_is_a_connect_timeout(kind: str) -> None:
    http = TRANSPORTS[kind](connect_timeout=0.2)
    try:
        with _full_backlog() as port, pytest.raises(ConnectTimeout):
            await http.handle_request(Request("GET", f"http://127.0.0.1:{port}/"))
    finally:
        await http.aclose()


async def test_a_stream_closed_after_its_transport_is_quietly_closed(server: _Server, kind: str) -> None:
    http = TRANSPORTS[kind]()
    response = await http.handle_request(Request("GET", server.url + "/quiet"))
    assert await response.receive() == b"data: 1\n\n"
    await http.aclose()  # the transport ends every transfer, this one too
    response.close()
    await asyncio.wait_for(server.left.wait(), LEFT_WITHIN_SECONDS)


async def test_a_closed_transport_refuses_requests(server: _Server, kind: str) -> None:
    http = TRANSPORTS[kind]()
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
