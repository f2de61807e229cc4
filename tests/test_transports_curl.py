"""What only the seam's curl_cffi transport has, against real loopback servers: voice, early head, TLS files, proxies, cookie jar.

The seam's contract (head, body, drop, keep-alive, errors) runs on it in ``test_transports.py``; here,
the browser's ClientHello and headers, a head handed over before its body, an ``ssl.SSLContext`` turned
into curl's CA file, proxies and the cookie jar.
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
from test_transports import _closed_port, _Server, server

from langchain_pplx_labs.emulator.ja4 import ClientHello, Incomplete, ja4
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.transports.aiohttp import AiohttpTransport
from langchain_pplx_labs.transports.base import (
    ConnectError,
    ProxyConnectError,
    ReadError,
    Request,
    TransportError,
)
from langchain_pplx_labs.transports.curl_cffi import (
    CURL_WRITEFUNC_ERROR,
    CurlCffiTransport,
    _Sink,
    fetch_headers,
)

__all__ = ["pproxy_server", "server"]  # fixtures: the proxy tests' (module-scoped) and the contract's server

# Debian's Chromium 156 (headless), captured on loopback with a server name: docs/browser_voice.md.
CHROMIUM_156_JA4 = "t13d1517h2_8daaf6152771_cb7bf5808d99"


@pytest.fixture
async def transport() -> AsyncIterator[CurlCffiTransport]:
    http = CurlCffiTransport(connect_timeout=2.0)
    try:
        yield http
    finally:
        await http.aclose()


async def test_the_request_speaks_as_the_impersonated_browser(
    server: _Server, transport: CurlCffiTransport
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
    server: _Server, transport: CurlCffiTransport
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


async def test_a_body_that_breaks_off_hands_over_what_came_before_its_read_error(
    server: _Server, transport: CurlCffiTransport
) -> None:
    # aiohttp's StreamReader raises its error before the bytes it still holds: only curl_cffi keeps them.
    response = await transport.handle_request(Request("GET", server.url + "/broken"))
    await asyncio.sleep(0.3)  # the half answer and the break have both arrived
    assert await response.receive() == b"half an answer"
    with pytest.raises(ReadError):
        await response.receive()
    response.close()


def test_the_sink_wakes_curl_cffi_s_queue_once_per_batch_and_refuses_once_closed() -> None:
    # libcurl writes each HTTP chunk alone: one wake-up per batch the reader takes, not one per chunk.
    woken: list[bytes] = []

    def wake(chunk: bytes) -> int:
        woken.append(chunk)
        return 0

    sink = _Sink(wake)
    assert [sink.write(b"ab"), sink.write(b"cde"), sink.write(b"f")] == [2, 3, 1]
    assert woken == [b""]
    assert sink.take() == [b"ab", b"cde", b"f"]
    assert sink.write(b"g") == 1
    assert woken == [b"", b""]  # the next batch wakes the reader again
    sink.closed = True  # the reader left
    assert sink.write(b"h") == CURL_WRITEFUNC_ERROR
    assert sink.take() == [b"g"]


def test_the_sink_passes_on_curl_cffi_s_refusal_of_a_quit_stream() -> None:
    sink = _Sink(lambda chunk: CURL_WRITEFUNC_ERROR)
    assert sink.write(b"late") == CURL_WRITEFUNC_ERROR


async def test_a_cookie_the_server_set_goes_back_beside_the_given_cookie_header(
    server: _Server, transport: CurlCffiTransport
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
    scheme: str, pproxy_server: tuple[int, Path], server: _Server
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


async def test_a_dead_proxy_is_a_connect_error(server: _Server) -> None:
    http = CurlCffiTransport(proxy=f"socks5://127.0.0.1:{_closed_port()}", connect_timeout=2.0)
    try:
        with pytest.raises(ConnectError):
            await http.handle_request(Request("GET", server.url + "/chunks"))
    finally:
        await http.aclose()
