"""A web session over the test-double transport: what it requests, how it reads, drops and refuses, with no socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from mocktransport import MockTransport, ScriptedStream, json_response, sse_response
from webfake import ASK, SESSION, answer_message

from langchain_pplx_labs.errors import (
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsNotFoundError,
    PerplexityLabsRateLimitError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.events import TextDelta
from langchain_pplx_labs.protocol import build_payload
from langchain_pplx_labs.settings import ConnectionSettings, Timeouts
from langchain_pplx_labs.transports.base import ConnectError, ConnectTimeout, Request, Response
from langchain_pplx_labs.transports.tap import HTTPTap, TappedTransport
from langchain_pplx_labs.web import session as web_session
from langchain_pplx_labs.web.session import WebSession

BASE_URL = "http://web.test"
SETTINGS = ConnectionSettings(base_url=BASE_URL, service="web")
PAYLOAD = build_payload("sonar", [{"role": "user", "content": "Capital of France?"}])


def _web_app(*answers: Response, session: dict[str, Any] | None = None) -> MockTransport:
    """A transport answering the session check with ``session`` and each ask with the next of ``answers``."""
    waiting = list(answers)

    def handle(request: Request) -> Response:
        if urlsplit(request.url).path == SESSION:
            return json_response(session or {})
        return waiting.pop(0)

    return MockTransport(handle)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[MockTransport], Any]]:
    opened: list[WebSession] = []

    async def opening(http: MockTransport) -> WebSession:
        connection = WebSession(SETTINGS, http)
        opened.append(connection)
        await connection.open()
        return connection

    yield opening
    for connection in opened:
        await connection.close(graceful=False)


async def _texts(connection: WebSession) -> list[str]:
    """Each text delta until the answer's end (which ends the query)."""
    texts: list[str] = []
    async for event in connection.query(PAYLOAD):
        if isinstance(event, TextDelta):
            texts.append(event.text)
    return texts


async def test_the_session_check_then_the_question_posted_and_its_stream_read(connect: Any) -> None:
    answer, body = sse_response([answer_message("Paris"), answer_message("Paris [1].", final=True)])
    http = _web_app(answer, session={"user": {"id": "u-1"}})
    connection = await connect(http)
    assert await _texts(connection) == ["Paris", " [1]."]
    assert [(r.method, urlsplit(r.url).path) for r in http.requests] == [("GET", SESSION), ("POST", ASK)]
    asked = http.requests[1]
    assert asked.headers["accept"] == "text/event-stream"
    assert asked.headers["x-request-id"]
    sent = orjson.loads(asked.body)
    assert sent["query_str"] == "Capital of France?"
    assert sent["params"]["mode"] == "copilot"  # the session check said the cookies are signed in
    # The stream's end, after the final message, is read in the background: then the connection is reused.
    for _ in range(10):
        await asyncio.sleep(0)
    assert body.closed
    assert not body.dropped


async def test_an_abandoned_answer_drops_its_response_and_the_session_asks_again(connect: Any) -> None:
    endless, dropped = sse_response([answer_message("Paris")], hold=True)
    whole, _ = sse_response([answer_message("Lyon.", final=True)])
    connection = await connect(_web_app(endless, whole))
    events = connection.query(PAYLOAD)
    assert await anext(events) == TextDelta("Paris")
    await events.aclose()
    assert dropped.dropped  # closed unread: a real transport drops its connection
    assert connection.alive
    assert not connection.answer_open
    assert await _texts(connection) == ["Lyon."]


async def test_a_stream_that_breaks_off_is_a_disconnect_naming_the_cause(connect: Any) -> None:
    broken, _ = sse_response([answer_message("Par"), ConnectionResetError("reset by peer")])
    connection = await connect(_web_app(broken))
    with pytest.raises(PerplexityLabsDisconnectedError, match="ConnectionResetError: reset by peer"):
        await _texts(connection)
    assert not connection.alive


async def test_a_refused_question_is_the_typed_error_and_its_body_is_closed(connect: Any) -> None:
    limited = ScriptedStream([orjson.dumps({"error_code": "FREE_TIER_RATE_LIMITED", "message": "slow down"})])
    refusal = Response(429, [("Content-Type", "application/json")], limited)
    connection = await connect(_web_app(refusal))
    with pytest.raises(PerplexityLabsRateLimitError, match="slow down") as caught:
        await _texts(connection)
    assert caught.value.error_code == "FREE_TIER_RATE_LIMITED"
    assert limited.closed


async def test_a_connect_timeout_is_the_connect_timeout(connect: Any) -> None:
    def handle(request: Request) -> Response:
        raise ConnectTimeout("no answer to SYN")

    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        await connect(MockTransport(handle))
    assert caught.value.which == "connect"


async def test_a_failed_connect_names_the_url_and_the_transports_reason(connect: Any) -> None:
    def handle(request: Request) -> Response:
        raise ConnectError("Cannot connect to host web.test:80")

    with pytest.raises(PerplexityLabsConnectionError) as caught:
        await connect(MockTransport(handle))
    assert (
        str(caught.value)
        == "Could not connect to http://web.test over web: Cannot connect to host web.test:80"
    )


async def test_a_failed_answers_stream_is_read_to_its_end_so_the_connection_stays_warm(connect: Any) -> None:
    failed = {"status": "failed", "text": "Error in processing query"}
    answer, body = sse_response([failed, b"event: end_of_stream\r\ndata: {}\r\n\r\n"])
    connection = await connect(_web_app(answer))
    with pytest.raises(PerplexityLabsServerError, match="Error in processing query"):
        await _texts(connection)
    for _ in range(10):
        await asyncio.sleep(0)
    assert body.closed
    assert not body.dropped
    assert connection.alive


async def test_a_tapped_transport_tells_each_request_its_head_its_bytes_and_its_close() -> None:
    seen: list[tuple[str, Any]] = []

    class Tap(HTTPTap):
        def on_request(self, request: Request) -> None:
            seen.append(("request", request.method))

        def on_response(self, request: Request, response: Response) -> None:
            seen.append(("response", response.status))

        def on_body(self, request: Request, chunk: bytes) -> None:
            seen.append(("body", chunk))

        def on_closed(self, request: Request) -> None:
            seen.append(("closed", request.method))

    answer, _ = sse_response([answer_message("Paris", final=True)])
    connected: list[str] = []
    request = Request("POST", BASE_URL + ASK, on_connected=lambda: connected.append("the session's own"))
    tapped = TappedTransport(MockTransport(lambda _request: answer), Tap())
    async with await tapped.handle_request(request) as response:
        raw = await response.read()
    assert connected == ["the session's own"]  # the caller's on_connected still runs
    assert seen == [
        ("request", "POST"),
        ("response", 200),
        ("body", raw),
        ("body", b""),
        ("closed", "POST"),
    ]


async def test_each_session_has_its_own_visitor_id_and_each_question_its_own_request_id(connect: Any) -> None:
    first = _web_app(*(sse_response([answer_message("Paris.", final=True)])[0] for _ in range(2)))
    second = _web_app(sse_response([answer_message("Lyon.", final=True)])[0])
    one = await connect(first)
    await _texts(one)
    await _texts(one)
    await _texts(await connect(second))
    asks = [r for r in first.requests + second.requests if r.method == "POST"]
    params = [orjson.loads(r.body)["params"] for r in asks]
    # A visitor id per session (a browser tab's), shared by its questions, never by two sessions.
    assert params[0]["visitor_id"] == params[1]["visitor_id"] != params[2]["visitor_id"]
    # A request id per question, sent in the header and the body alike.
    assert len({p["frontend_uuid"] for p in params}) == 3
    assert [r.headers["x-request-id"] for r in asks] == [p["frontend_uuid"] for p in params]


async def test_a_finished_answers_tail_is_read_in_a_later_write_so_the_connection_is_reused(
    connect: Any,
) -> None:
    # The final message, then (in a later read) the stream's own end marker, then its end: the session
    # leaves the query at the final message and reads the rest in the background.
    tail = b"event: end_of_stream\ndata: {}\n\n"
    answer, body = sse_response([answer_message("Paris.", final=True), tail, b": bye\n\n"])
    connection = await connect(_web_app(answer))
    assert await _texts(connection) == ["Paris."]
    for _ in range(20):
        await asyncio.sleep(0)
    assert body.ended  # read to its end ...
    assert body.closed
    assert not body.dropped  # ... so a real transport gives the connection back warm


async def test_the_tail_read_after_the_final_message_is_bounded_by_its_deadline(
    connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_session, "GRACEFUL_CLOSE_SECONDS", 0.05)
    answer, body = sse_response([answer_message("Paris.", final=True)], hold=True)  # never ends
    connection = await connect(_web_app(answer))
    assert await _texts(connection) == ["Paris."]
    tails = list(connection._tails)
    assert tails  # the stream's tail is being read in the background
    async with asyncio.timeout(5):
        await asyncio.gather(*tails)
    assert body.closed
    assert body.dropped  # given up on at its deadline: the connection is dropped, not kept waiting


# -- what the web transport's errors say: the web app's name, never Labs' -----------------------


async def test_a_failed_answer_names_the_web_app(connect: Any) -> None:
    answer, _ = sse_response([{"status": "failed", "text": "Error in processing query"}])
    connection = await connect(_web_app(answer))
    with pytest.raises(PerplexityLabsServerError) as caught:
        await _texts(connection)
    assert (
        str(caught.value)
        == "Perplexity's web app failed the query (model 'sonar'): Error in processing query"
    )


async def test_a_rate_limit_with_only_its_code_says_the_code_once(connect: Any) -> None:
    answer, _ = sse_response([{"status": "failed", "error_code": "FREE_TIER_RATE_LIMITED"}])
    connection = await connect(_web_app(answer))
    with pytest.raises(PerplexityLabsRateLimitError) as caught:
        await _texts(connection)
    assert str(caught.value) == (
        "Perplexity's web app refused the query for a rate limit (model 'sonar', error_code "
        "FREE_TIER_RATE_LIMITED). Wait before asking again"
    )


async def test_a_refused_question_for_a_rate_limit_names_the_web_app(connect: Any) -> None:
    limited = ScriptedStream([orjson.dumps({"error_code": "FREE_TIER_RATE_LIMITED", "message": "slow down"})])
    connection = await connect(_web_app(Response(429, [("Content-Type", "application/json")], limited)))
    with pytest.raises(PerplexityLabsRateLimitError) as caught:
        await _texts(connection)
    assert str(caught.value).startswith("Perplexity's web app refused the query for a rate limit")


async def test_silence_names_the_web_app(connect: Any) -> None:
    settings = ConnectionSettings(base_url=BASE_URL, service="web", timeouts=Timeouts(first_token=0.05))
    silent, _ = sse_response([b": keep-alive\n\n"], hold=True)
    connection = WebSession(settings, _web_app(silent))
    await connection.open()
    try:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await _texts(connection)
    finally:
        await connection.close()
    assert type(caught.value) is PerplexityLabsTimeoutError
    assert str(caught.value) == "Perplexity's web app first_token timeout fired after 0.05s"


async def test_a_redirected_session_check_advises_the_session_path(connect: Any) -> None:
    def moved(request: Request) -> Response:
        return Response(302, [("Location", "https://web.test/login")], ScriptedStream([b""]))

    with pytest.raises(PerplexityLabsNotFoundError) as caught:
        await connect(MockTransport(moved))
    said = str(caught.value)
    assert "LabsProtocol(web_session_path=...) if the session endpoint was renamed" in said
    assert "web_path=" not in said.replace("web_session_path=", "")
    assert "Perplexity Labs" not in said


async def test_a_redirected_question_advises_the_ask_path(connect: Any) -> None:
    moved = Response(302, [("Location", "https://web.test/login")], ScriptedStream([b""]))
    connection = await connect(_web_app(moved))
    with pytest.raises(PerplexityLabsNotFoundError) as caught:
        await _texts(connection)
    assert "LabsProtocol(web_path=...) if the ask endpoint was renamed" in str(caught.value)
