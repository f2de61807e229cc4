"""The web transport: the web app's Server-Sent Events ask endpoint, reported to the connection as Labs frames.

Perplexity's web app asks with one ``POST`` per question and streams the answer back as
``text/event-stream``; the codec (:mod:`langchain_pplx_labs.web_protocol`) turns its messages
into Labs-shaped progress frames, so everything above the wire is the same for both services.
A "connection" here is a warm HTTP keep-alive connection of the pool's HTTP transport
(:mod:`langchain_pplx_labs.transports`): ``connect`` makes the web app's own warm-up request (``GET /api/auth/session``, which also says
whether the cookies are signed in), and each question reuses the TCP (and TLS) connection.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from multidict import CIMultiDict

from langchain_pplx_labs._teardown import GRACEFUL_CLOSE_SECONDS, stop_tasks
from langchain_pplx_labs.errors import (
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsRateLimitError,
    PerplexityLabsTimeoutError,
    excerpt_of,
)
from langchain_pplx_labs.sse import SSEMessage, SSEParser
from langchain_pplx_labs.transports.base import (
    ConnectTimeout,
    HTTPTransport,
    Request,
    Response,
    TransportError,
)
from langchain_pplx_labs.web_protocol import (
    WebAnswer,
    is_end_marker,
    message_json,
    session_user_id,
    web_headers,
    web_request_body,
    web_request_headers,
)
from langchain_pplx_labs.wire import ConnectionSettings, WireListener, is_cloudflare_block

logger = logging.getLogger(__name__)

# How much of a refusal's body an error quotes (and reads: the rest is not worth the wait).
_REFUSAL_READ_BYTES = 4096
# After an answer's last message the server still ends its stream; read that far (within
# GRACEFUL_CLOSE_SECONDS) so the keep-alive connection goes back to the transport's pool warm.
_TAIL_READ_BYTES = 64 * 1024


class WebWire:
    """One warm HTTP connection to the web app; one question at a time, its answer read in the query's task."""

    reads_inline = True

    def __init__(
        self,
        settings: ConnectionSettings,
        http: HTTPTransport,
        listener: WireListener,
        *,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        """``on_connected`` runs once the warm-up request has its TCP (and TLS) connection."""
        self._settings = settings
        self._http = http
        self._listener = listener
        self._on_connected = on_connected
        self._connected = False
        self._lost: str | None = None
        self.signed_in = False
        """Whether the warm-up found the cookies signed in (the web app then asks with the user's id)."""
        self.on_message: Callable[[SSEMessage], None] | None = None
        """Called with each message of an answer's stream as it is read (``pplx-labs doctor`` watches with it)."""
        # A visitor id per warm connection, as a browser tab keeps one; the request ids are per question.
        self._visitor_id = str(uuid.uuid4())
        # The body of the question asked: POSTed by the query's first read, under its deadline.
        self._question: dict[str, Any] | None = None
        self._request_id = ""
        self._progress_event = ""
        self._response: Response | None = None
        self._parser = SSEParser()
        self._answer = WebAnswer()
        self._answer_over = True
        # Streams read to their end in the background after their last frame (see _retire_response).
        self._tails: set[asyncio.Task[None]] = set()

    @property
    def engine_open(self) -> bool:
        return self._connected and self._lost is None

    @property
    def namespace_ready(self) -> bool:
        # No namespace and no CONNECT to acknowledge: ready once the warm-up answered.
        return self.engine_open

    @property
    def loops_running(self) -> bool:
        return False  # nothing runs in the background to say goodbye with: abort() is the close

    async def connect(self, *, pipelined: bool) -> None:
        del pipelined  # one request per question: nothing to pipeline behind
        url = self._url(self._settings.protocol.web_session_path)
        headers = self._headers({"Accept": "application/json"})
        # Transport errors go up as they are: the connection names a failed connect for every wire.
        request = Request("GET", url, headers, on_connected=self._on_connected)
        async with await self._http.handle_request(request) as response:
            if response.status != 200:
                raise await _refusal(url, response, "the session check")
            # Read whole: an unread body would close the keep-alive connection we came to warm.
            body = await response.read()
            try:
                session = orjson.loads(body)
            except orjson.JSONDecodeError:
                # A page (the main site's, a proxy's, a challenge) where the web app answers JSON: the
                # ask would meet the same, so say so now, as the ask would (NotFound, or Blocked).
                text = body[:_REFUSAL_READ_BYTES].decode("utf-8", "replace")
                raise web_refusal(
                    url, 200, response.headers, text, what="the session check", expected="JSON"
                ) from None
        self.signed_in = session_user_id(session) is not None
        self._connected = True
        self._listener.on_connect()

    async def send_event(self, event: str, data: Any, *, before_ack: bool) -> None:
        """Take the question; the query's first :meth:`read_one` POSTs it (so its deadline bounds the wait)."""
        del event, before_ack  # the web app has one ask endpoint, and nothing to acknowledge
        if not self.engine_open:
            raise LookupError("the web connection is closed")
        if not isinstance(data, Mapping):
            raise TypeError(f"a web question is a payload mapping, not {type(data).__name__}")
        self._drop_response()
        protocol = self._settings.protocol
        model = str(data.get("model", ""))
        self._progress_event = protocol.progress_event_for(model)
        self._request_id = str(uuid.uuid4())
        self._question = web_request_body(
            data,
            frontend_uuid=self._request_id,
            visitor_id=self._visitor_id,
            frontend_context_uuid=str(uuid.uuid4()),
            signed_in=self.signed_in,
            protocol=protocol,
        )
        self._parser = SSEParser()
        self._answer = WebAnswer(model)
        self._answer_over = False

    async def read_one(self) -> None:
        """Send the question (first call) or read the next part of its event stream, and report its frames.

        HTTP refusals become the typed errors of :mod:`langchain_pplx_labs.errors`, raised here.
        """
        if self._lost is not None:
            self._listener.on_disconnect(self._lost)
            return
        response = self._response
        if response is None:
            if self._question is None or self._answer_over:
                self._listener.on_disconnect("no question is waiting for an answer on this web connection")
                return
            self._response = await self._ask()
            return
        try:
            chunk = await response.receive()
        except TransportError as exc:
            self._end_stream(f"the event stream broke off ({_named(exc)})")
            return
        if chunk:
            self._report(self._parser.feed(chunk))
        else:
            self._report(self._parser.close())
            if self._answer.completed:
                # COMPLETED, then the end of the stream: the answer is whole (finish() is idempotent).
                self._report_frame(self._answer.finish())
            if not self._answer_over:
                self._end_stream("the server ended the event stream before the answer's last message")
                return
        if self._answer_over:
            self._retire_response()

    def release(self) -> None:
        """The query is over; an answer it stopped reading is cut off here (its response closed)."""
        self._question = None
        if self._answer_over:
            return
        # The caller stopped reading (a break, a stop sequence, a cancel). Unlike a Labs socket,
        # an HTTP answer can be dropped alone: closing its response ends it, and the wire can ask
        # again at once, on another keep-alive connection, instead of reading the tail.
        self._answer_over = True
        self._drop_response()
        self._listener.on_answer_dropped()

    async def goodbye(self) -> None:
        """Nothing to say: an HTTP connection has no session to leave."""

    async def abort(self) -> None:
        self._lost = self._lost or "the connection was closed"
        self._answer_over = True
        self._drop_response()
        if self._tails:
            await stop_tasks(list(self._tails))

    # -- asking ------------------------------------------------------------------------

    async def _ask(self) -> Response:
        question, self._question = self._question, None
        protocol = self._settings.protocol
        url = self._url(protocol.web_path)
        headers = self._headers(web_headers(protocol, request_id=self._request_id))
        try:
            response = await self._http.handle_request(Request("POST", url, headers, orjson.dumps(question)))
        except ConnectTimeout:
            # A new TCP connection was needed (the warm one expired) and could not be made in time.
            raise PerplexityLabsTimeoutError("connect", self._settings.timeouts.connect) from None
        except TransportError as exc:
            raise PerplexityLabsDisconnectedError(
                f"The web app at {url} dropped the connection before answering ({_named(exc)})"
            ) from exc
        content_type = response.headers.get("content-type", "")
        if response.status == 200 and content_type.lower().startswith("text/event-stream"):
            return response
        raise await _refusal(url, response, "the question")

    def _report(self, messages: list[SSEMessage]) -> None:
        for message in messages:
            if self._answer_over:
                return  # past the last frame: what follows is the stream's tail, read unparsed
            if self.on_message is not None:
                self.on_message(message)
            if is_end_marker(message):
                self._report_frame(self._answer.finish())
                continue
            data = message_json(message)  # raises a protocol error for data that is not a JSON object
            if data is None:
                logger.debug("ignoring web event %r", message.event)
                continue
            self._report_frame(self._answer.feed(data))

    def _report_frame(self, frame: dict[str, Any] | None) -> None:
        if frame is None or self._answer_over:
            return  # nothing new, or past the answer's end (which the connection already heard)
        if frame.get("final") or frame.get("status") == "failed":
            self._answer_over = True
        self._listener.on_event(self._progress_event, frame)

    # -- responses ---------------------------------------------------------------------

    def _end_stream(self, reason: str) -> None:
        """The stream ended without the answer's last frame: this connection is done for."""
        self._lost = reason
        self._answer_over = True
        self._drop_response()
        self._listener.on_disconnect(reason)

    def _retire_response(self) -> None:
        """The answer is complete: finish its stream in the background so the connection stays warm."""
        response, self._response = self._response, None
        if response is None:
            return
        if response.ended:
            response.close()  # read to its end: the connection goes back warm
            return
        task = asyncio.get_running_loop().create_task(_read_tail(response), name="labs-web-tail")
        self._tails.add(task)
        task.add_done_callback(self._tails.discard)

    def _drop_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()  # unread: the transport drops its connection rather than reuse it

    # -- helpers -----------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self._settings.base_url.rstrip("/") + path

    def _headers(self, extra: Mapping[str, str]) -> CIMultiDict[str]:
        """``extra`` (the web app's headers), then the settings' own (see :func:`web_request_headers`)."""
        return web_request_headers(extra, self._settings.headers, self._settings.protocol)


async def _read_tail(response: Response) -> None:
    """Read what is left of a finished answer's stream, then give its connection back (or drop it)."""
    read = 0
    try:
        async with asyncio.timeout(GRACEFUL_CLOSE_SECONDS):
            while read <= _TAIL_READ_BYTES and (chunk := await response.receive()):
                read += len(chunk)
    except (TimeoutError, TransportError) as exc:
        logger.debug("the end of a web answer's stream was not read: %r", exc)
    finally:
        response.close()


async def _refusal(url: str, response: Response, what: str) -> PerplexityLabsError:
    """The typed error for an HTTP answer that is not what the web app sends (the response is closed)."""
    try:
        raw = await response.read(_REFUSAL_READ_BYTES)
    except TransportError:
        raw = b""
    finally:
        response.close()
    return web_refusal(url, response.status, response.headers, raw.decode("utf-8", "replace"), what=what)


def _named(exc: TransportError) -> str:
    """The error under a transport's (``ServerDisconnectedError: ...``), as the message names it."""
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}"


def web_refusal(
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: str,
    *,
    what: str = "the question",
    expected: str = "an event stream",
) -> PerplexityLabsError:
    """The typed error for the web app answering ``status`` at ``url`` (``headers`` lower-cased).

    ``expected`` names what a 2xx answer should have been (an event stream for the question, JSON
    for the session check).

    A redirect is not read as Labs' retirement: on the web app it means the endpoint moved (or
    wants a sign-in page), so it is a :class:`PerplexityLabsNotFoundError` naming both URLs.
    """
    excerpt = excerpt_of(body.strip())
    if 300 <= status < 400:
        location = headers.get("location", "")
        return PerplexityLabsNotFoundError(
            f"The web app did not answer {what} at {url}: HTTP {status}, a redirect to {location or '(nowhere)'}. "
            "Its endpoint moved, or it wants a sign-in; check base_url (and cookies=...), or set "
            "LabsProtocol(web_path=...) if the ask endpoint was renamed",
            url=url,
            status=status,
            excerpt=location or excerpt,
        )
    if is_cloudflare_block(status, headers, body):
        return PerplexityLabsBlockedError(
            f"Perplexity blocked {what}: HTTP {status} from Cloudflare at {url}. The web app sits behind "
            "Cloudflare, which refuses many non-browser clients; try again later, with browser cookies "
            "(cookies=...), from another network, or through a proxy (proxy=...)",
            status=status,
            excerpt=excerpt,
        )
    if status == 429:
        detail = _json_detail(body)
        return PerplexityLabsRateLimitError(
            f"HTTP 429 at {url}: {detail.get('message') or excerpt or 'Too Many Requests'}",
            error_code=detail.get("error_code", ""),
        )
    if status == 404 or 200 <= status < 300:
        kind = headers.get("content-type", "no content type")
        problem = f"HTTP {status}" if status == 404 else f"HTTP {status} but {kind}, not {expected}"
        renamed = "; if the web app renamed its ask endpoint, set LabsProtocol(web_path=...)"
        return PerplexityLabsNotFoundError(
            f"The web app does not answer {what} at {url} ({problem}: {excerpt!r}). Check base_url"
            f"{renamed if what == 'the question' else ''}",
            url=url,
            status=status,
            excerpt=excerpt,
        )
    if status in (401, 403):
        return PerplexityLabsConnectionError(
            f"The web app refused {what} at {url}: HTTP {status}: {excerpt!r}. It may want signed-in "
            "cookies (cookies=...)"
        )
    return PerplexityLabsConnectionError(f"The web app refused {what} at {url}: HTTP {status}: {excerpt!r}")


def _json_detail(body: str) -> dict[str, str]:
    """``message`` and ``error_code`` from a JSON error body, where it has them."""
    try:
        data = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    detail: dict[str, str] = {}
    for key in ("error_code", "code"):
        if isinstance(data.get(key), str):
            detail.setdefault("error_code", data[key])
    for key in ("text", "message", "detail", "error"):
        if isinstance(data.get(key), str):
            detail.setdefault("message", data[key])
    return detail
