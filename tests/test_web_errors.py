"""What goes wrong on the web transport, each on a real port: HTTP refusals, broken streams, timeouts, proxies, TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import test_proxy_tls
import trustme
from aiohttp import web

# The proxy and TLS fixtures of the Socket.IO transport's tests, reused for the web transport.
from test_proxy_tls import authority, pproxy_server, tls_emulator
from webfake import ASK, FakeWebApp, answer_message, forever, serving, streaming

from langchain_pplx_labs import ChatPerplexityLabs, LabsProtocol
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.emulator.server import CLOUDFLARE_PAGE
from langchain_pplx_labs.emulator.web import WebVariant
from langchain_pplx_labs.errors import (
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsRetiredError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.web.sse import sse_message

__all__ = ["authority", "pproxy_server", "tls_emulator"]

ANSWER = "Paris is the capital of France [1]. It hosts the government [2]."
CITATIONS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]


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


def _replying(status: int, text: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An ask handler that answers every question with ``status`` and ``text``."""

    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text)

    return reply


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


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (
            "text/html",
            "<!DOCTYPE html><html><head><title>Perplexity</title></head><body>Ask anything</body></html>",
        ),
        ("text/plain", "OK"),
        ("application/json", ""),
    ],
    ids=["main-site-page", "plain-text", "empty"],
)
async def test_a_session_check_answered_without_json_is_not_found_at_connect(
    fake_web: FakeWebApp, content_type: str, body: str
) -> None:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body.encode(), content_type=content_type)

    fake_web.session = page
    error = await _ask_fails(fake_web, PerplexityLabsNotFoundError, max_retries=2)
    session_url = f"{fake_web.base_url}/api/auth/session"
    assert error.url == session_url
    assert error.status == 200
    assert f"The web app does not answer the session check at {session_url}" in str(error)
    assert f"HTTP 200 but {content_type}, not JSON" in str(error)
    assert error.excerpt == body
    assert fake_web.hits == {"session": 1}  # not retried, and the question never went out


async def test_a_cloudflare_challenge_with_200_at_the_session_check_is_blocked(fake_web: FakeWebApp) -> None:
    async def challenge(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=CLOUDFLARE_PAGE, content_type="text/html", headers={"cf-mitigated": "challenge"}
        )

    fake_web.session = challenge
    error = await _ask_fails(fake_web, PerplexityLabsBlockedError, max_retries=2)
    assert error.status == 200
    assert f"{fake_web.base_url}/api/auth/session" in str(error)
    assert fake_web.hits == {"session": 1}


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
    fake_web.ask = _replying(502, "upstream connect error")
    error = await _ask_fails(fake_web, PerplexityLabsConnectionError, max_retries=1)
    assert "HTTP 502" in str(error)
    assert "upstream connect error" in str(error)
    assert error.attempts == 2
    assert fake_web.hits["ask"] >= 2


async def test_signed_out_refusal_suggests_cookies(fake_web: FakeWebApp) -> None:
    fake_web.ask = _replying(401, "Unauthorized")
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
    # The plain timeout, not Labs' PerplexityLabsSilentError ("Labs may be retired... use transport=web").
    assert type(error) is PerplexityLabsTimeoutError
    assert "retired" not in str(error)
    assert error.which == "first_token"
    assert fake_web.hits["ask"] == 1


async def test_response_headers_that_never_come_are_a_first_token_timeout(fake_web: FakeWebApp) -> None:
    async def mute(request: web.Request) -> web.StreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    fake_web.ask = mute
    error = await _ask_fails(fake_web, PerplexityLabsTimeoutError, first_token_timeout=0.3, max_retries=0)
    assert type(error) is PerplexityLabsTimeoutError
    assert error.which == "first_token"


# -- connecting ---------------------------------------------------------------------------------


async def test_connection_refused_is_a_retried_connection_error(refused_url: str) -> None:
    async with _web(refused_url, max_retries=2) as chat:
        with pytest.raises(PerplexityLabsConnectionError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.attempts == 3
    assert "over web" in str(caught.value)
    assert refused_url in str(caught.value)


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
    assert type(error) is PerplexityLabsTimeoutError
    assert error.which == "idle"
    assert error.partial_content == "Paris"
    assert fake_web.hits["ask"] == 1


async def test_failed_message_is_a_server_error_with_the_servers_text(fake_web: FakeWebApp) -> None:
    fake_web.ask = streaming([{"status": "failed", "text": "Error in processing query."}])
    error = await _ask_fails(fake_web, PerplexityLabsServerError, max_retries=2)
    assert error.server_message == "Error in processing query."
    assert fake_web.hits["ask"] == 1


async def test_free_tier_rate_limit_message_is_a_rate_limit_never_retried(fake_web: FakeWebApp) -> None:
    # The main site's rate limit, as henrique-coder/perplexity-webui-scraper's tests show it.
    limited = {
        "error_code": "FREE_TIER_RATE_LIMITED",
        "experience": "upgrade",
        "status": "failed",
        "final_sse_message": True,
    }
    fake_web.ask = streaming([limited])
    error = await _ask_fails(
        fake_web, PerplexityLabsRateLimitError, max_retries=2, retry_server_failures=True
    )
    assert error.error_code == "FREE_TIER_RATE_LIMITED"
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


# -- the emulator's faults, over its SSE endpoint -------------------------------------------------


def _emulated(base_url: str, **kwargs: Any) -> ChatPerplexityLabs:
    return _web(base_url, model="sonar", **kwargs)


async def _emulated_fails(base_url: str, kind: type[PerplexityLabsError], **kwargs: Any) -> Any:
    async with _emulated(base_url, **kwargs) as chat:
        with pytest.raises(kind) as caught:
            await chat.ainvoke("What is the capital of France?")
    return caught.value


async def test_emulator_blocked_is_blocked_at_the_session_check(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.blocked = True
    error = await _emulated_fails(base_url, PerplexityLabsBlockedError, max_retries=2)
    assert error.status == 403
    assert f"{base_url}/api/auth/session" in str(error)
    assert emulator.web.session_checks == 0  # Cloudflare answered before the web app
    assert emulator.web.asks == 0


async def test_emulator_failure_is_a_server_error_with_its_text(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, chunk_size=8, fail="Error in processing query", fail_after=2)
    error = await _emulated_fails(base_url, PerplexityLabsServerError, max_retries=2)
    assert error.server_message == "Error in processing query"
    assert error.partial_content == ANSWER[:16]
    assert emulator.web.asks == 1


@pytest.mark.parametrize(("after", "which"), [(0, "first_token"), (2, "idle")])
async def test_emulator_silence_is_a_first_token_or_idle_timeout(
    after: int, which: str, base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, chunk_size=8, stall_after=after)
    error = await _emulated_fails(
        base_url, PerplexityLabsTimeoutError, first_token_timeout=0.4, idle_timeout=0.4, max_retries=2
    )
    assert error.which == which
    assert emulator.web.asks == 1  # the server had the question: not asked again


async def test_emulator_drop_mid_answer_is_a_disconnect(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, chunk_size=8, drop_after=3)
    error = await _emulated_fails(base_url, PerplexityLabsDisconnectedError, max_retries=2)
    assert error.partial_content == ANSWER[:24]
    assert emulator.web.asks == 1


async def test_emulator_garbage_is_a_protocol_error(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, chunk_size=8, garbage_after=1)
    error = await _emulated_fails(base_url, PerplexityLabsProtocolError, max_retries=0)
    assert "not JSON" in str(error)


async def test_anonymous_rate_limit_is_a_rate_limit_not_retried() -> None:
    async with LabsEmulator(web_variant=WebVariant(anonymous="rate_limited")) as server:
        error = await _emulated_fails(server.base_url, PerplexityLabsRateLimitError, max_retries=2)
        assert error.error_code == "FREE_TIER_RATE_LIMITED"
        assert server.web.asks == 1
        # A session cookie signs in, and the signed-in ask is answered.
        async with _emulated(
            server.base_url, cookies="__Secure-next-auth.session-token=abc", max_retries=0
        ) as chat:
            message = await chat.ainvoke("What is the capital of France?")
        assert message.content.startswith("The capital of France is Paris")
        assert server.web.bodies[-1]["params"]["mode"] == "copilot"


TEXT_FORM = {"use_schematized_api": False, "send_back_text_in_streaming_api": True}
SNAPSHOTS = {"supported_block_use_cases": ["answer_modes"]}


@pytest.mark.parametrize(
    ("variant", "ask"),
    [
        (WebVariant(), {}),
        (WebVariant(), TEXT_FORM),
        (WebVariant(), SNAPSHOTS),
        (WebVariant(text="answer"), TEXT_FORM),
        (WebVariant(final_marker="status", end_of_stream=False), {}),
        (WebVariant(final_marker="status", end_of_stream=True), TEXT_FORM),
        (WebVariant(final_marker="final", newline="\n", comments=True), {}),
        (WebVariant(sources="sources_mode_block", end_of_stream=False), {}),
        (WebVariant(answer_block="workflow_block"), SNAPSHOTS),
    ],
    ids=[
        "default",
        "text",
        "snapshots",
        "older-text",
        "status-then-close",
        "status-end-of-stream-text",
        "final-lf-comments",
        "sources-mode",
        "workflow",
    ],
)
async def test_every_wording_of_the_stream_gives_the_same_answer(
    variant: WebVariant, ask: dict[str, Any]
) -> None:
    async with LabsEmulator(web_variant=variant) as server:
        server.script(answer=ANSWER, citations=CITATIONS, chunk_size=7)
        async with _emulated(server.base_url, max_retries=0, protocol=LabsProtocol(web_params=ask)) as chat:
            message = await chat.ainvoke("Q")
            chunks = [chunk async for chunk in chat.astream("Q")]
            again = await chat.ainvoke("Q")  # the same warm connection, after a whole answer
            pool = await chat._client().pool()
            assert pool.connections_opened == 1
    assert message.content == again.content == ANSWER
    assert "".join(str(chunk.content) for chunk in chunks) == ANSWER
    assert message.response_metadata["citations"] == CITATIONS
    assert server.web.asks == 3


# -- proxies and TLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_web_questions_go_through_the_proxy(
    scheme: str, pproxy_server: tuple[int, Path], base_url: str, emulator: LabsEmulator
) -> None:
    port, log = pproxy_server
    emulator.script(answer=f"via {scheme}")
    before = test_proxy_tls._tunnels_to(log, emulator.port)
    async with _emulated(base_url, proxy=f"{scheme}://127.0.0.1:{port}", max_retries=0) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == f"via {scheme}"
    await asyncio.sleep(0.2)  # pproxy flushes its log line asynchronously
    assert test_proxy_tls._tunnels_to(log, emulator.port) > before, log.read_text()


async def test_dead_proxy_is_a_connection_error(base_url: str, emulator: LabsEmulator) -> None:
    dead = f"socks5://127.0.0.1:{test_proxy_tls._free_port()}"
    await _emulated_fails(base_url, PerplexityLabsConnectionError, proxy=dead, max_retries=0)
    assert emulator.web.asks == emulator.web.session_checks == 0


async def test_self_signed_certificate_is_refused_with_a_hint(tls_emulator: LabsEmulator) -> None:
    error = await _emulated_fails(tls_emulator.base_url, PerplexityLabsConnectionError, max_retries=0)
    assert "certificate" in str(error).lower()
    assert "ssl_context=" in str(error)
    assert tls_emulator.web.session_checks == 0


async def test_tls_with_the_ca_and_through_a_socks5_proxy(
    tls_emulator: LabsEmulator, authority: trustme.CA, pproxy_server: tuple[int, Path]
) -> None:
    port, log = pproxy_server
    context = ssl.create_default_context()
    authority.configure_trust(context)
    async with _emulated(
        tls_emulator.base_url, ssl_context=context, proxy=f"socks5://127.0.0.1:{port}", max_retries=0
    ) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == "over TLS"
    await asyncio.sleep(0.2)
    assert test_proxy_tls._tunnels_to(log, tls_emulator.port) > 0
    async with _emulated(tls_emulator.base_url, verify_ssl=False, max_retries=0) as chat:
        assert (await chat.ainvoke("hello")).content == "over TLS"


async def test_whatever_follows_the_last_message_is_not_parsed(fake_web: FakeWebApp) -> None:
    # One write, so one read: the last message and garbage after it arrive together.
    last = sse_message(orjson.dumps(answer_message("Paris.", final=True)).decode())
    fake_web.ask = streaming([last + b"data: {not json\n\n"])
    async with _web(fake_web.base_url, max_retries=0) as chat:
        first = await chat.ainvoke("Q")
        second = await chat.ainvoke("Q")
        pool = await chat._client().pool()
        assert pool.connections_opened == 1
    assert first.content == second.content == "Paris."


async def test_emulator_redirect_is_not_found_naming_where_it_points(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.redirect_to = "https://www.perplexity.ai/"
    error = await _emulated_fails(base_url, PerplexityLabsNotFoundError, max_retries=2)
    assert not isinstance(error, PerplexityLabsRetiredError)  # on the web app a redirect means it moved
    assert error.status == 301
    assert error.url == f"{base_url}/api/auth/session"
    assert "https://www.perplexity.ai/" in str(error)
    assert dict(emulator.refusals) == {"web": 1}  # asking again meets the same redirect: not retried


async def test_emulator_main_site_page_is_not_found_at_the_session_check(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.main_site = True
    error = await _emulated_fails(base_url, PerplexityLabsNotFoundError, max_retries=2)
    assert error.url == f"{base_url}/api/auth/session"
    assert error.status == 200
    assert "not JSON" in str(error)
    assert error.excerpt.lower().startswith("<!doctype html")
    assert error.attempts == 1
    assert dict(emulator.refusals) == {"web": 1}  # one session check: no ask, no retry
