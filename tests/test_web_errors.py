"""What goes wrong on the web transport, each on a real port: HTTP refusals, broken streams, timeouts, proxies, TLS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from webfake import ASK, FakeWebApp, answer_message, forever, serving, streaming

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator.server import CLOUDFLARE_PAGE
from langchain_pplx_labs.errors import (
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)


@pytest.fixture
async def fake_web() -> AsyncIterator[FakeWebApp]:
    async with serving() as fake:
        yield fake


def _web(base_url: str, **kwargs: Any) -> ChatPerplexityLabs:
    settings: dict[str, Any] = {"first_token_timeout": 5, "idle_timeout": 5, "timeout": 20, **kwargs}
    return ChatPerplexityLabs(transport="web", base_url=base_url, **settings)


async def _ask_fails(fake: FakeWebApp, kind: type[PerplexityLabsError], **kwargs: Any) -> Any:
    async with _web(fake.base_url, **kwargs) as chat:
        with pytest.raises(kind) as caught:
            await chat.ainvoke("What is the capital of France?")
    return caught.value


# -- HTTP refusals of the question -------------------------------------------------------------


async def test_redirect_to_another_host_is_not_found_naming_both_urls(fake_web: FakeWebApp) -> None:
    async def moved(request: web.Request) -> web.StreamResponse:
        return web.Response(status=301, headers={"Location": "https://ask.example.org/v2/ask"})

    fake_web.ask = moved
    error = await _ask_fails(fake_web, PerplexityLabsNotFoundError, max_retries=0)
    assert error.url == f"{fake_web.base_url}{ASK}"
    assert error.status == 301
    assert "https://ask.example.org/v2/ask" in str(error)
    assert "web_path" in str(error)
    assert fake_web.hits["ask"] == 1  # the redirect was not followed (a POST would turn into a GET)


async def test_cloudflare_page_is_blocked_and_not_retried(fake_web: FakeWebApp) -> None:
    async def challenge(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=403, text=CLOUDFLARE_PAGE, content_type="text/html", headers={"cf-ray": "8f0-EMU"}
        )

    fake_web.ask = challenge
    error = await _ask_fails(fake_web, PerplexityLabsBlockedError, max_retries=2)
    assert error.status == 403
    assert "Cloudflare" in str(error)
    assert "Just a moment" in error.excerpt
    assert fake_web.hits["ask"] == 1


async def test_cloudflare_page_at_the_session_check_is_blocked(fake_web: FakeWebApp) -> None:
    async def challenge(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text=CLOUDFLARE_PAGE, content_type="text/html")

    fake_web.session = challenge
    error = await _ask_fails(fake_web, PerplexityLabsBlockedError, max_retries=2)
    assert error.status == 403
    assert fake_web.hits == {"session": 1}  # not retried, and the question never went out


async def test_404_is_not_found_naming_the_url(fake_web: FakeWebApp) -> None:
    error = await _ask_fails(fake_web, PerplexityLabsNotFoundError, max_retries=0)
    assert error.url == f"{fake_web.base_url}{ASK}"
    assert error.status == 404
    assert f"{fake_web.base_url}{ASK}" in str(error)
    assert "404: Not Found" in str(error)


async def test_html_instead_of_an_event_stream_is_not_found(fake_web: FakeWebApp) -> None:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<!DOCTYPE html><title>Perplexity</title>", content_type="text/html")

    fake_web.ask = page
    error = await _ask_fails(fake_web, PerplexityLabsNotFoundError, max_retries=0)
    assert error.status == 200
    assert "text/html" in str(error)
    assert "not an event stream" in str(error)
    assert error.excerpt.startswith("<!DOCTYPE html>")


async def test_http_429_is_a_rate_limit_with_the_error_code_and_not_retried(fake_web: FakeWebApp) -> None:
    async def limited(request: web.Request) -> web.StreamResponse:
        body = {"error_code": "FREE_TIER_RATE_LIMITED", "message": "You have reached the free limit"}
        return web.json_response(body, status=429)

    fake_web.ask = limited
    error = await _ask_fails(fake_web, PerplexityLabsRateLimitError, max_retries=2)
    assert error.error_code == "FREE_TIER_RATE_LIMITED"
    assert "You have reached the free limit" in error.server_message
    assert fake_web.hits["ask"] == 1


async def test_a_500_is_a_connection_error_with_the_servers_text_and_retried(fake_web: FakeWebApp) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="upstream connect error")

    fake_web.ask = broken
    error = await _ask_fails(fake_web, PerplexityLabsConnectionError, max_retries=1)
    assert "HTTP 502" in str(error)
    assert "upstream connect error" in str(error)
    assert error.attempts == 2
    assert fake_web.hits["ask"] >= 2


async def test_signed_out_refusal_suggests_cookies(fake_web: FakeWebApp) -> None:
    async def unauthorised(request: web.Request) -> web.StreamResponse:
        return web.Response(status=401, text="Unauthorized")

    fake_web.ask = unauthorised
    error = await _ask_fails(fake_web, PerplexityLabsConnectionError, max_retries=0)
    assert "HTTP 401" in str(error)
    assert "cookies=" in str(error)


# -- broken and silent streams -----------------------------------------------------------------


async def test_silent_event_stream_is_a_first_token_timeout_not_retried(fake_web: FakeWebApp) -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": keep-alive comment, not a message\n\n")
        await asyncio.Event().wait()  # never answers; cancelled when the client leaves
        return response

    fake_web.ask = silent
    error = await _ask_fails(fake_web, PerplexityLabsTimeoutError, first_token_timeout=0.3, max_retries=2)
    assert error.which == "first_token"
    assert fake_web.hits["ask"] == 1


async def test_response_headers_that_never_come_are_a_first_token_timeout(fake_web: FakeWebApp) -> None:
    async def mute(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    fake_web.ask = mute
    error = await _ask_fails(fake_web, PerplexityLabsTimeoutError, first_token_timeout=0.3, max_retries=0)
    assert error.which == "first_token"


# -- connecting ---------------------------------------------------------------------------------


async def test_connection_refused_is_a_retried_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}"
    async with _web(refused, max_retries=2) as chat:
        with pytest.raises(PerplexityLabsConnectionError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.attempts == 3
    assert "over web" in str(caught.value)
    assert refused in str(caught.value)


async def test_connect_timeout_on_a_blackhole_is_retried(blackhole: str) -> None:
    async with _web(blackhole, connect_timeout=0.2, max_retries=1) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "connect"
    assert caught.value.attempts == 2


async def test_session_check_that_never_answers_is_a_handshake_timeout(fake_web: FakeWebApp) -> None:
    async def mute(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    fake_web.session = mute
    async with _web(fake_web.base_url, handshake_timeout=0.2, max_retries=1) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "handshake"
    assert fake_web.hits == {"session": 2}  # retried: the server never had the question


# -- broken streams -----------------------------------------------------------------------------


async def test_stream_that_ends_before_the_last_message_is_a_disconnect_keeping_the_text(
    fake_web: FakeWebApp,
) -> None:
    fake_web.ask = streaming([answer_message("Paris is"), answer_message("Paris is the capital")])
    error = await _ask_fails(fake_web, PerplexityLabsDisconnectedError, max_retries=2)
    assert "before the answer's last message" in str(error)
    assert error.partial_content == "Paris is the capital"
    assert fake_web.hits["ask"] == 1  # text was streamed: never asked again


async def test_message_that_is_not_json_is_a_protocol_error_quoting_it(fake_web: FakeWebApp) -> None:
    fake_web.ask = streaming([answer_message("Paris"), b"data: {not json\n\n"], then=forever)
    error = await _ask_fails(fake_web, PerplexityLabsProtocolError, max_retries=0)
    assert "not JSON" in str(error)
    assert error.excerpt == "{not json"


async def test_silence_after_the_first_message_is_an_idle_timeout(fake_web: FakeWebApp) -> None:
    fake_web.ask = streaming([answer_message("Paris")], then=forever)
    error = await _ask_fails(fake_web, PerplexityLabsTimeoutError, idle_timeout=0.3, max_retries=2)
    assert error.which == "idle"
    assert error.partial_content == "Paris"
    assert fake_web.hits["ask"] == 1


async def test_failed_message_is_a_server_error_with_the_servers_text(fake_web: FakeWebApp) -> None:
    fake_web.ask = streaming([{"status": "failed", "text": "Error in processing query."}])
    error = await _ask_fails(fake_web, PerplexityLabsServerError, max_retries=2)
    assert error.server_message == "Error in processing query."
    assert fake_web.hits["ask"] == 1


async def test_free_tier_rate_limit_message_is_a_server_error_not_retried(fake_web: FakeWebApp) -> None:
    # The main site's rate limit, as henrique-coder/perplexity-webui-scraper's tests show it.
    limited = {
        "error_code": "FREE_TIER_RATE_LIMITED",
        "experience": "upgrade",
        "status": "failed",
        "final_sse_message": True,
    }
    fake_web.ask = streaming([limited])
    error = await _ask_fails(fake_web, PerplexityLabsServerError, max_retries=2)
    assert "FREE_TIER_RATE_LIMITED" in str(error)
    assert fake_web.hits["ask"] == 1


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param([{"status": "COMPLETED"}], id="completed-then-close"),
        pytest.param([b"event: end_of_stream\ndata: {}\n\n"], id="end-of-stream-event"),
    ],
)
async def test_an_answer_without_a_final_flag_ends_with_the_stream(
    fake_web: FakeWebApp, ending: list[dict[str, Any] | bytes]
) -> None:
    fake_web.ask = streaming([answer_message("Paris [1].", sources=["https://a.example/"]), *ending])
    async with _web(fake_web.base_url, max_retries=0) as chat:
        message = await chat.ainvoke("Capital of France?")
    assert message.content == "Paris [1]."
    assert message.response_metadata["citations"] == ["https://a.example/"]
