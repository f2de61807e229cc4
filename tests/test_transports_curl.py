"""The seam's curl_cffi transport against real loopback servers: head, body, drop, keep-alive, errors, voice.

The same cases as ``test_transports.py`` for aiohttp, and what only this transport has: a stream left
unread stops at once (curl_cffi 0.17 alone would read it to its end), the browser's ClientHello, an
``ssl.SSLContext`` turned into curl's CA file, proxies and the cookie jar.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from loopback import serving_app
from test_proxy_tls import _tunnels_to, pproxy_server
from test_transports import _closed_port, _full_backlog, _Server

from langchain_pplx_labs.emulator.ja4 import ClientHello, Incomplete, ja4
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.transports.aiohttp import AiohttpTransport
from langchain_pplx_labs.transports.base import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    ProxyConnectError,
    ReadError,
    Request,
    TransportError,
)
from langchain_pplx_labs.transports.curl_cffi import CurlCffiTransport, fetch_headers

__all__ = ["pproxy_server"]  # the module-scoped fixture of the proxy tests

# Debian's Chromium 156 (headless), captured on loopback with a server name: docs/browser_voice.md.
CHROMIUM_156_JA4 = "t13d1517h2_8daaf6152771_cb7bf5808d99"
# Within this bound the server sees a reader that left (the issue's "Done when").
LEFT_WITHIN_SECONDS = 1.0


class _QuietServer(_Server):
    """Adds a stream that says one thing and then nothing: only a dropped connection tells it the client left."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()

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
async def server() -> AsyncIterator[_QuietServer]:
    served = _QuietServer()
    app = web.Application()
    app.router.add_post("/chunks", served.chunks)
    app.router.add_get("/chunks", served.chunks)
    app.router.add_get("/endless", served.endless)
    app.router.add_get("/quiet", served.quiet)
    app.router.add_get("/broken", served.broken)
    app.router.add_get("/slow-head", served.slow_head)
    app.router.add_get("/cookies", served.cookies)
    app.router.add_get("/set-cookie", served.set_cookie)
    app.router.add_get("/moved", served.moved)
    async with serving_app(app) as served.url:
        yield served


@pytest.fixture
async def transport() -> AsyncIterator[CurlCffiTransport]:
    http = CurlCffiTransport(connect_timeout=2.0)
    try:
        yield http
    finally:
        await http.aclose()


async def test_a_response_has_its_status_lowered_headers_and_body_as_it_arrives(
    server: _QuietServer, transport: CurlCffiTransport
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
    assert connected == ["now"]
    assert server.bodies == [b'{"q": 1}']
    assert server.headers[0]["X-Asked"] == "yes"
    assert "Expect" not in server.headers[0]  # libcurl's 100-continue, which no browser sends


async def test_the_request_speaks_as_the_impersonated_browser(
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    given = {"User-Agent": "MyBot/1.0", "sec-ch-ua": '"MyBot";v="1"', "Accept": "application/json"}
    async with await transport.handle_request(Request("GET", server.url + "/chunks", given)) as response:
        await response.read()
    sent = {name.lower(): value for name, value in server.headers[0].items()}
    assert "Chrome/" in sent["user-agent"]  # the browser's, never a given one: they would disagree
    assert "Chromium" in sent["sec-ch-ua"]  # the pair comes from one browser, not ours and curl's
    assert "upgrade" not in sent  # no h2c upgrade in the clear: a browser speaks HTTP/2 over TLS only
    # A page's fetch(), not a navigation: curl_cffi's Chrome headers are a navigation's.
    assert sent["accept"] == "application/json"
    assert (sent["sec-fetch-site"], sent["sec-fetch-mode"], sent["sec-fetch-dest"]) == (
        "same-origin",
        "cors",
        "empty",
    )
    for navigation in ("upgrade-insecure-requests", "sec-fetch-user", "cache-control"):
        assert navigation not in sent


def test_fetch_headers_keep_the_callers_and_leave_the_voice_to_the_browser() -> None:
    assert fetch_headers({"Accept": "text/event-stream", "Cache-Control": "no-cache", "user-agent": "x"}) == [
        ("Accept", "text/event-stream"),
        ("Cache-Control", "no-cache"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
        ("upgrade-insecure-requests", None),  # None: curl_cffi leaves its own out
        ("sec-fetch-user", None),
    ]


async def test_the_response_is_handed_over_at_its_head_and_connected_before_it(
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    # curl_cffi's stream mode returns at the body's first bytes: a head, then silence, would look
    # unanswered (and "connected" would come only then).
    connected: list[str] = []
    asking = asyncio.create_task(
        transport.handle_request(
            Request("GET", server.url + "/slow-head", on_connected=lambda: connected.append("now"))
        )
    )
    await asyncio.wait_for(server.asked.wait(), 5)
    for _ in range(50):  # the request is out: "connected", while its answer has no head yet
        if connected:
            break
        await asyncio.sleep(0.01)
    assert connected == ["now"]
    asking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asking
    async with _raw_server(_HEAD_THEN_SILENCE) as url:
        response = await asyncio.wait_for(transport.handle_request(Request("GET", url)), 5)
        assert response.status == 200  # the final head, past the 103 Early Hints before it
        assert response.headers["content-type"] == "text/event-stream"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(response.receive(), 0.2)  # nothing yet, and no b"" as if it ended
        response.close()


# A 103 Early Hints head (Cloudflare sends them), then the answer's head, then nothing.
_HEAD_THEN_SILENCE = (
    b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


@contextlib.asynccontextmanager
async def _raw_server(answer: bytes) -> AsyncIterator[str]:
    """A loopback port that reads a request head, writes ``answer`` and holds the connection open."""
    writers: list[asyncio.StreamWriter] = []

    async def answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await reader.read()  # until the client goes

    listener = await asyncio.start_server(answering, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/"
    finally:
        for writer in writers:
            writer.close()
        listener.close()
        await listener.wait_closed()


async def test_read_with_a_limit_stops_there(server: _QuietServer, transport: CurlCffiTransport) -> None:
    async with await transport.handle_request(Request("GET", server.url + "/chunks")) as response:
        assert await response.read(8) == b"first se"


async def test_a_reader_that_leaves_a_quiet_stream_drops_the_connection_at_once(
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    # curl_cffi 0.17's own close waits for the transfer's end (its PR #751): here that would be 30 s,
    # and a server writing nothing has no write error to find out sooner.
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
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    response = await transport.handle_request(Request("GET", server.url + "/endless"))
    assert await response.receive() == b"data: 1\n\n"
    response.close()
    await asyncio.wait_for(server.left.wait(), LEFT_WITHIN_SECONDS)


async def test_a_request_cancelled_before_its_head_drops_its_connection(
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    # curl_cffi runs the transfer in a task of its own, which a cancel of the request does not reach.
    asking = asyncio.create_task(transport.handle_request(Request("GET", server.url + "/slow-head")))
    await asyncio.wait_for(server.asked.wait(), 5)
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    await asyncio.wait_for(server.left.wait(), LEFT_WITHIN_SECONDS)
    async with await transport.handle_request(Request("GET", server.url + "/chunks")) as again:
        assert await again.read() == b"first second third"  # the session still works


async def test_two_requests_read_to_their_end_share_one_keep_alive_connection(
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    connected: list[int] = []
    for number in (1, 2):
        request = Request("GET", server.url + "/chunks", on_connected=lambda n=number: connected.append(n))
        async with await transport.handle_request(request) as response:
            assert await response.read() == b"first second third"
    assert connected == [1, 2]  # a reused connection is reported too
    assert len(server.ports) == 2
    assert server.ports[0] == server.ports[1]


async def test_a_body_that_breaks_off_is_a_read_error(
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    response = await transport.handle_request(Request("GET", server.url + "/broken"))
    with pytest.raises(ReadError) as caught:
        await response.read()
    response.close()
    assert caught.value.__cause__ is not None  # curl_cffi's error, kept for whoever names it


async def test_a_redirect_is_returned_not_followed(
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    async with await transport.handle_request(Request("GET", server.url + "/moved")) as response:
        assert response.status == 302
        assert response.headers["location"] == "/chunks"
    assert server.bodies == []  # /chunks was never asked


async def test_a_cookie_the_server_set_goes_back_beside_the_given_cookie_header(
    server: _QuietServer, transport: CurlCffiTransport
) -> None:
    # Cloudflare's __cf_bm lives in the jar; the session cookie comes as a header. curl_cffi 0.17 sends
    # both (as two Cookie lines over HTTP/1.1, two crumbs over HTTP/2): neither drops the other.
    async with await transport.handle_request(Request("GET", server.url + "/set-cookie")) as first:
        await first.read()
    request = Request("GET", server.url + "/cookies", {"Cookie": "session=abc"})
    async with await transport.handle_request(request) as response:
        sent = (await response.read()).decode()
    assert "__cf_bm=bm-1" in sent
    assert "session=abc" in sent


async def test_a_refused_connect_is_a_connect_error(transport: CurlCffiTransport) -> None:
    port = _closed_port()
    with pytest.raises(ConnectError) as caught:
        await transport.handle_request(Request("GET", f"http://127.0.0.1:{port}/"))
    assert not isinstance(caught.value, ConnectTimeout)
    assert str(port) in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_a_refused_proxy_is_a_proxy_connect_error_without_its_password() -> None:
    port = _closed_port()
    http = CurlCffiTransport(connect_timeout=2.0, proxy=f"socks5://user:secret@127.0.0.1:{port}")
    try:
        with pytest.raises(ProxyConnectError) as caught:
            await http.handle_request(Request("GET", "http://127.0.0.1:9/"))
    finally:
        await http.aclose()
    assert str(caught.value).startswith(f"Couldn't connect to proxy 127.0.0.1:{port} (")
    assert "secret" not in str(caught.value)
    assert caught.value.__cause__ is not None


async def test_a_connect_past_its_timeout_is_a_connect_timeout() -> None:
    http = CurlCffiTransport(connect_timeout=0.2)
    try:
        with _full_backlog() as port, pytest.raises(ConnectTimeout):
            await http.handle_request(Request("GET", f"http://127.0.0.1:{port}/"))
    finally:
        await http.aclose()


async def test_a_stream_closed_after_its_transport_is_quietly_closed(server: _QuietServer) -> None:
    http = CurlCffiTransport()
    response = await http.handle_request(Request("GET", server.url + "/quiet"))
    assert await response.receive() == b"data: 1\n\n"
    await http.aclose()  # the session ends every transfer, this one too
    response.close()
    await asyncio.wait_for(server.left.wait(), LEFT_WITHIN_SECONDS)


async def test_a_closed_transport_refuses_requests(server: _QuietServer) -> None:
    http = CurlCffiTransport()
    await http.aclose()
    with pytest.raises(ConnectError, match="closed"):
        await http.handle_request(Request("GET", server.url + "/chunks"))


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@contextlib.asynccontextmanager
async def _tls_app(authority: trustme.CA) -> AsyncIterator[str]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello over tls")

    app = web.Application()
    app.router.add_get("/", hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    async with serving_app(app, ssl_context=context) as url:
        yield url


async def test_an_untrusted_certificate_is_a_certificate_error(
    authority: trustme.CA, transport: CurlCffiTransport
) -> None:
    async with _tls_app(authority) as url:
        with pytest.raises(CertificateError) as caught:
            await transport.handle_request(Request("GET", url + "/"))
    assert "certificate" in str(caught.value).lower()


async def test_an_ssl_context_with_the_ca_is_trusted_and_its_file_removed_on_close(
    authority: trustme.CA,
) -> None:
    context = ssl.create_default_context()
    authority.configure_trust(context)
    http = CurlCffiTransport(ssl_option=context)
    ca_file = http._ca_file
    assert ca_file is not None
    assert _exists(ca_file)
    try:
        async with (
            _tls_app(authority) as url,
            await http.handle_request(Request("GET", url + "/")) as response,
        ):
            assert await response.read() == b"hello over tls"
    finally:
        await http.aclose()
    assert not _exists(ca_file)


def _exists(path: str) -> bool:
    return os.path.exists(path)


@pytest.mark.parametrize("option", ["false", "context that verifies nothing"])
async def test_verification_turned_off_accepts_any_certificate(authority: trustme.CA, option: str) -> None:
    ssl_option: ssl.SSLContext | bool = False
    if option != "false":
        ssl_option = ssl.create_default_context()
        ssl_option.check_hostname = False
        ssl_option.verify_mode = ssl.CERT_NONE
    http = CurlCffiTransport(ssl_option=ssl_option)
    try:
        async with (
            _tls_app(authority) as url,
            await http.handle_request(Request("GET", url + "/")) as response,
        ):
            assert response.status == 200
    finally:
        await http.aclose()


def test_an_ssl_context_whose_cas_cannot_be_read_is_refused_clearly() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, but holds no CA curl could be given
    with pytest.raises(PerplexityLabsInputError, match="load_verify_locations"):
        CurlCffiTransport(ssl_option=context)


# -- the voice: the ClientHello a server sees before any TLS ---------------------------------------


@contextlib.asynccontextmanager
async def _hello_catcher() -> AsyncIterator[tuple[int, list[ClientHello]]]:
    """A TCP port that reads each client's ClientHello, notes it and hangs up (no TLS is done)."""
    hellos: list[ClientHello] = []

    async def caught(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        try:
            while True:
                try:
                    hellos.append(ClientHello.from_records(data))
                    break
                except Incomplete as wanted:
                    more = await reader.read(max(wanted.needed - len(data), 1))
                    if not more:
                        break
                    data += more
        finally:
            writer.close()

    listener = await asyncio.start_server(caught, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1], hellos
    finally:
        listener.close()
        await listener.wait_closed()


async def _hello_of(http: CurlCffiTransport | AiohttpTransport) -> ClientHello:
    async with _hello_catcher() as (port, hellos):
        try:
            # "localhost": a name, so the hello carries SNI as a browser's to the web app does.
            with contextlib.suppress(TransportError):
                await http.handle_request(Request("GET", f"https://localhost:{port}/"))
        finally:
            await http.aclose()
    assert hellos, "no ClientHello arrived"
    return hellos[0]


async def test_impersonating_chrome_sends_chromium_s_client_hello() -> None:
    hello = await _hello_of(CurlCffiTransport(impersonate="chrome"))
    # A newer curl_cffi may speak as a newer Chrome: then measure Chromium again (docs/browser_voice.md).
    assert ja4(hello) == CHROMIUM_156_JA4
    assert hello.alpn == (b"h2", b"http/1.1")
    assert hello.server_name == "localhost"


async def test_http_transport_picks_curl_cffi_when_asked_to_impersonate() -> None:
    picked = http_transport(connect_timeout=1.0, impersonate="chrome")
    assert isinstance(picked, CurlCffiTransport)
    assert ja4(await _hello_of(picked)) == CHROMIUM_156_JA4
    plain = http_transport(connect_timeout=1.0)
    assert isinstance(plain, AiohttpTransport)
    # aiohttp as this project uses it: 18 ciphers, no GREASE (issue #27's measure); it offers HTTP/1.1 by
    # ALPN on current releases ("h1", 12 extensions) and no ALPN at all on the lowest we allow (3.11.2: "00").
    assert ja4(await _hello_of(plain)) in {
        "t13d1812h1_85036bcba153_d41ae481755e",
        "t13d181100_85036bcba153_d41ae481755e",
    }


# -- proxies --------------------------------------------------------------------------------------


@pytest.mark.system  # the proxy is a real pproxy process
@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_requests_go_through_the_proxy(
    scheme: str, pproxy_server: tuple[int, Path], server: _QuietServer
) -> None:
    proxy_port, log = pproxy_server
    target_port = int(server.url.rsplit(":", 1)[1])
    before = _tunnels_to(log, target_port)
    http = CurlCffiTransport(proxy=f"{scheme}://127.0.0.1:{proxy_port}")
    try:
        async with await http.handle_request(Request("GET", server.url + "/chunks")) as response:
            assert await response.read() == b"first second third"
    finally:
        await http.aclose()
    for _ in range(50):  # pproxy writes its log line once the tunnel closes
        if _tunnels_to(log, target_port) > before:
            break
        await asyncio.sleep(0.05)
    assert _tunnels_to(log, target_port) > before


async def test_a_dead_proxy_is_a_connect_error(server: _QuietServer) -> None:
    http = CurlCffiTransport(proxy=f"socks5://127.0.0.1:{_closed_port()}", connect_timeout=2.0)
    try:
        with pytest.raises(ConnectError):
            await http.handle_request(Request("GET", server.url + "/chunks"))
    finally:
        await http.aclose()
