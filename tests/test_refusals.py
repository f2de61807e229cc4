"""A refused connect names its real cause: Cloudflare only on a Cloudflare signature, a 404 as no endpoint."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from langchain_pplx_labs import (
    ChatPerplexityLabs,
    LabsProtocol,
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsNotFoundError,
    PerplexityLabsRateLimitError,
)
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.web.session import web_refusal

Serve = Callable[[int, dict[str, str], str], Awaitable[str]]


@pytest.fixture
async def plain_server() -> AsyncIterator[Serve]:
    """A plain aiohttp web server on loopback answering every request with one fixed response."""
    runners: list[web.AppRunner] = []

    async def serve(status: int, headers: dict[str, str], body: str) -> str:
        async def answer(request: web.Request) -> web.Response:
            return web.Response(status=status, headers=headers, text=body, content_type="text/html")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def _ask(base_url: str, **fields: object) -> PerplexityLabsConnectionError:
    async with ChatPerplexityLabs(transport="labs", base_url=base_url, max_retries=0, **fields) as chat:
        with pytest.raises(PerplexityLabsConnectionError) as caught:
            await chat.ainvoke("Q")
    return caught.value


async def test_aiohttp_404_is_no_endpoint_not_a_cloudflare_block() -> None:
    app = web.Application()  # no routes at all: aiohttp's own "404: Not Found"
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        error = await _ask(base_url)
    finally:
        await runner.cleanup()
    assert isinstance(error, PerplexityLabsNotFoundError)
    assert not isinstance(error, PerplexityLabsBlockedError)
    tried = f"{base_url}/socket.io/?EIO=4&transport=polling"
    assert error.url == tried
    assert error.status == 404
    message = str(error)
    assert message.startswith(f"No Labs endpoint answers at {tried} (HTTP 404: '404: Not Found')")
    assert "LabsProtocol(socketio_path=...)" in message
    assert "Cloudflare" not in message
    assert "proxy" not in message


async def test_no_endpoint_is_not_retried() -> None:
    # A 404 at the Socket.IO path stays a 404: asking again, max_retries or not, only repeats it.
    hits: list[str] = []

    async def missing(request: web.Request) -> web.StreamResponse:
        hits.append(request.query.get("transport", ""))
        return web.Response(status=404, text="404: Not Found")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", missing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with ChatPerplexityLabs(
            transport="labs", base_url=f"http://127.0.0.1:{runner.addresses[0][1]}", max_retries=2
        ) as chat:
            with pytest.raises(PerplexityLabsNotFoundError) as caught:
                await chat.ainvoke("Q")
    finally:
        await runner.cleanup()
    assert caught.value.attempts == 1
    # One attempt: the WebSocket, engine.io's polling fallback, and the GET that diagnosed the 404.
    assert hits == ["websocket", "polling", "polling"]


async def test_a_moved_socketio_path_is_no_endpoint_at_the_old_url() -> None:
    async with LabsEmulator(protocol=LabsProtocol(socketio_path="/v2/socket.io/")) as emulator:
        error = await _ask(emulator.base_url)
    assert isinstance(error, PerplexityLabsNotFoundError)
    assert error.url == f"{emulator.base_url}/socket.io/?EIO=4&transport=polling"


async def test_cloudflare_404_is_still_no_endpoint(plain_server: Serve) -> None:
    # Cloudflare fronts every live answer: a cf-ray on a 404 means the path is wrong, not a block.
    base_url = await plain_server(
        404, {"cf-ray": "8f00-AMS", "Server": "cloudflare"}, "<html>Not Found</html>"
    )
    error = await _ask(base_url)
    assert isinstance(error, PerplexityLabsNotFoundError)
    assert "Cloudflare" not in str(error)


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (403, {"cf-mitigated": "challenge"}, "<html>anything</html>"),
        (503, {"cf-ray": "8f00-AMS"}, "<html>busy</html>"),
        (
            403,
            {},
            "<html><title>Just a moment...</title><script src='/cdn-cgi/challenge-platform/x'></script>",
        ),
        (429, {"Server": "cloudflare"}, "rate limited"),
    ],
    ids=["cf-mitigated", "503-cf-ray", "challenge-page", "429-server-cloudflare"],
)
async def test_a_cloudflare_signature_is_a_block(
    plain_server: Serve, status: int, headers: dict[str, str], body: str
) -> None:
    error = await _ask(await plain_server(status, headers, body))
    assert isinstance(error, PerplexityLabsBlockedError)
    assert error.status == status
    assert f"HTTP {status}" in str(error)
    assert "Cloudflare" in str(error)


async def test_a_plain_403_page_is_a_refusal_not_a_cloudflare_block(plain_server: Serve) -> None:
    base_url = await plain_server(403, {"Server": "nginx"}, "<html><h1>403 Forbidden</h1></html>")
    error = await _ask(base_url)
    assert not isinstance(error, PerplexityLabsBlockedError)
    assert str(error) == (
        f"The server at {base_url}/socket.io/?EIO=4&transport=polling refused the connection: "
        "HTTP 403: '<html><h1>403 Forbidden</h1></html>'"
    )


async def test_a_web_page_that_is_not_engineio_is_no_endpoint(plain_server: Serve) -> None:
    base_url = await plain_server(200, {}, "<html>Welcome to my blog</html>")
    error = await _ask(base_url)
    assert isinstance(error, PerplexityLabsNotFoundError)
    assert "HTTP 200 but not Engine.IO: '<html>Welcome to my blog</html>'" in str(error)


async def test_a_refused_origin_says_which_setting_to_change() -> None:
    async with LabsEmulator(allowed_origins=["https://www.perplexity.ai"]) as emulator:
        error = await _ask(emulator.base_url)
    assert not isinstance(error, PerplexityLabsBlockedError)
    assert "https://labs.perplexity.ai is not an accepted origin" in str(error)
    assert "LabsProtocol(origin=...)" in str(error)


@pytest.mark.parametrize("refuse_websocket", [False, True], ids=["websocket", "polling"])
async def test_a_refused_connect_names_the_servers_reason_on_either_transport(refuse_websocket: bool) -> None:
    # Over polling, python-socketio would wait out a long-poll (the server's ping interval) and
    # the handshake timeout would fire first, hiding the server's own reason.
    async with LabsEmulator(refuse_websocket=refuse_websocket) as emulator:
        error = await _ask(emulator.base_url, protocol=LabsProtocol(auth={}), handshake_timeout=30)
    assert type(error) is PerplexityLabsConnectionError
    assert "authentication required: send {'jwt': 'anonymous-ask-user'} as the CONNECT payload" in str(error)


async def test_a_refused_connect_over_polling_leaves_no_traceback_in_the_servers_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The client's goodbye races the session's close; engine.io answered it with a KeyError
    # ("Session is disconnected") that aiohttp logged with a traceback as a 500.
    caplog.set_level(logging.DEBUG)
    async with LabsEmulator(refuse_websocket=True) as emulator:
        # The model's close waits for its goodbye POSTs to be answered, so the server has handled them.
        error = await _ask(emulator.base_url, protocol=LabsProtocol(auth={}), handshake_timeout=30)
    assert "authentication required" in str(error)
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert "Session is disconnected" not in caplog.text


async def test_a_plain_429_is_a_rate_limit_on_either_service(plain_server: Serve) -> None:
    # One refusal classifier: what both services make of a 429 (and of Cloudflare) is one rule.
    body = '{"error_code": "TOO_MANY", "message": "slow down"}'
    base_url = await plain_server(429, {}, body)
    async with ChatPerplexityLabs(transport="labs", base_url=base_url, max_retries=0) as chat:
        with pytest.raises(PerplexityLabsRateLimitError) as caught:
            await chat.ainvoke("Q")
    assert caught.value.error_code == "TOO_MANY"
    assert f"HTTP 429 at {base_url}/socket.io/?EIO=4&transport=polling: slow down" in str(caught.value)
    url = f"{base_url}/api/auth/session"
    over_the_web = web_refusal(url, 429, {}, body, what="the session check")
    assert isinstance(over_the_web, PerplexityLabsRateLimitError)
    assert over_the_web.error_code == "TOO_MANY"
    assert f"HTTP 429 at {url}: slow down" in str(over_the_web)
