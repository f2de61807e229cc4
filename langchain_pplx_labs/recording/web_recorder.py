"""Record one web-app ask into a cassette interaction: a real web session asks, its HTTP transport tapped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from langchain_pplx_labs.errors import PerplexityLabsError, PerplexityLabsTimeoutError
from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol
from langchain_pplx_labs.recording.cassette import Frame, HttpRefusal, Interaction
from langchain_pplx_labs.recording.redact import Redactor
from langchain_pplx_labs.recording.upstream import UpstreamUnreachableError, describe_error
from langchain_pplx_labs.settings import ConnectionSettings, Timeouts, browser_headers
from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.transports.base import Request, Response, TransportError
from langchain_pplx_labs.transports.tap import HTTPTap, TappedTransport
from langchain_pplx_labs.web.codec import is_end_marker
from langchain_pplx_labs.web.session import WebSession, is_event_stream
from langchain_pplx_labs.web.sse import SSEMessage, SSEParser

logger = logging.getLogger(__name__)

_TAIL_SECONDS = 2.0
"""After the answer's last message, how long to wait for the session to read the stream's end."""
_KEPT_REFUSAL_HEADERS = frozenset(
    {"content-type", "server", "cf-ray", "set-cookie", "cf-mitigated", "location"}
)


async def record_web_interaction(
    base_url: str,
    payload: Mapping[str, Any],
    *,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    proxy: str | None = None,
    redactor: Redactor | None = None,
    silence: float = 10.0,
    connect_timeout: float = 10.0,
    connection_info: dict[str, Any] | None = None,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
) -> Interaction:
    """Ask ``payload`` at the web app's SSE endpoint and record every message until the stream ends.

    A :class:`~langchain_pplx_labs.web.session.WebSession` asks, as ``ChatPerplexityLabs(transport="web")``
    does (the session check, then the question POSTed: its own body of ``payload``, or ``body`` as given,
    a client's own when recording through the replay server); a tap on its HTTP transport records what
    went by. ``headers`` default to the browser-like ones. The interaction's request is the body as sent,
    redacted with :meth:`Redactor.for_web` (so its per-question ids match any on replay); each SSE message
    becomes a frame, its JSON ``data`` redacted too (``raw`` when the data is no JSON, such as ``[DONE]``),
    up to the end marker or the stream's end, which the session reads after the answer's last message.
    ``silence`` seconds without an answer (the session's first-token and idle timeouts) end the recording
    with a ``stall``; a stream that breaks off ends it with a ``drop``; an HTTP answer that is no event
    stream is the refusal. Raises :class:`UpstreamUnreachableError` when the server gives no HTTP answer.
    """
    redactor = (redactor or Redactor()).for_web()
    given = headers if headers is not None else browser_headers(protocol)
    timeouts = Timeouts(
        connect_timeout, handshake=connect_timeout, first_token=silence, idle=silence, total=None
    )
    settings = ConnectionSettings(base_url, tuple(given.items()), timeouts, protocol, service="web")
    tape = _Tape(redactor)
    http = TappedTransport(http_transport(connect_timeout=connect_timeout, proxy=proxy), tape)
    session = WebSession(settings, http)
    try:
        try:
            await session.open()
            async for _ in session.query(payload, body=body):
                pass
        except PerplexityLabsError as exc:
            tape.ended_by(exc, base_url)
        if tape.ask is not None:  # a finished answer's tail is read in the background
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tape.closed.wait(), _TAIL_SECONDS)
    finally:
        await session.close()
        await http.aclose()
    if tape.ask is None:  # the session check refused: no body was made
        return Interaction(
            request=redactor.redact_data(dict(body if body is not None else payload)), refusal=tape.refusal
        )
    if connection_info is not None:
        sent = redactor.redact_headers(dict(tape.ask.headers))
        connection_info.update({"headers": sent, "signed_in": session.signed_in})
    request = redactor.redact_data(orjson.loads(tape.ask.body))
    return Interaction(request=request, refusal=tape.refusal, frames=tape.frames)


class _Tape(HTTPTap):
    """The session's requests as they go by: the ask as sent, its SSE messages with their times, a refusal."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.ask: Request | None = None
        self.frames: list[Frame] = []
        self.refusal: HttpRefusal | None = None
        self.closed = asyncio.Event()
        """The ask's response was closed: its stream's tail, if any, was read."""
        self._loop = asyncio.get_running_loop()
        self._answered: tuple[Request, Response] | None = None
        self._body: list[bytes] = []  # the latest response's body as read, when it is no event stream
        self._parser: SSEParser | None = None  # the ask's event stream, until its end
        self._started = 0.0
        self._last = 0.0

    def on_request(self, request: Request) -> None:
        if request.method == "POST":
            self.ask, self._started = request, self._loop.time()

    def on_response(self, request: Request, response: Response) -> None:
        self._answered, self._body = (request, response), []
        if request is self.ask and is_event_stream(response):
            self._parser = SSEParser()

    def on_body(self, request: Request, chunk: bytes) -> None:
        if request is not self.ask or self._parser is None:
            self._body.append(chunk)
            return
        self._last = round(self._loop.time() - self._started, 3)
        for message in self._parser.feed(chunk) if chunk else self._parser.close():
            self.frames.append(self._frame(message))
            if is_end_marker(message):
                break  # what follows the end marker is not the answer's
        else:
            if chunk:
                return
        self._parser = None

    def on_closed(self, request: Request) -> None:
        if request is self.ask:
            self.closed.set()

    def ended_by(self, exc: PerplexityLabsError, base_url: str) -> None:
        """The session's error: the ask went silent, a refusal, what the stream showed, or nothing answered."""
        request, response = self._answered or (None, None)
        asked = self.ask is not None
        if asked and isinstance(exc, PerplexityLabsTimeoutError) and exc.which != "connect":
            self.frames.append(Frame(at=self._last, kind="stall"))
        elif response is None or (asked and request is not self.ask):
            cause = exc.__cause__
            reason = describe_error(cause if isinstance(cause, TransportError) else exc)
            raise UpstreamUnreachableError(base_url, reason) from None
        elif request is not self.ask or not is_event_stream(response):
            self.refusal = self._refused(response)  # the session check's, or the ask's
        elif isinstance(exc.__cause__, TransportError):  # a failed message, an early end: in the frames
            logger.info("the recorded event stream broke off: %s", describe_error(exc.__cause__))
            self.frames.append(Frame(at=round(self._loop.time() - self._started, 3), kind="drop"))

    def _refused(self, response: Response) -> HttpRefusal:
        kept = {name: value for name, value in response.headers.items() if name in _KEPT_REFUSAL_HEADERS}
        text = b"".join(self._body).decode("utf-8", "replace")
        return HttpRefusal(status=response.status, headers=self.redactor.redact_headers(kept), body=text)

    def _frame(self, message: SSEMessage) -> Frame:
        """The cassette frame of one SSE message: its JSON data, redacted, else its raw data."""
        try:
            data = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            return Frame(at=self._last, kind="raw", event=message.event, data=message.data)
        return Frame(at=self._last, event=message.event, data=self.redactor.redact_data(data))
