"""A web session: one warm keep-alive connection to the web app, each question POSTed and its SSE answer read as events.

Perplexity's web app asks with one ``POST`` per question and streams the answer back as
``text/event-stream``; the codec (:mod:`langchain_pplx_labs.web.codec`) reads its messages as
the answer's events. A session opens with the web app's own warm-up request (``GET
/api/auth/session``, which also says whether the cookies are signed in), and each question
reuses the TCP (and TLS) connection of the HTTP transport (:mod:`langchain_pplx_labs.transports`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from typing import Any, Literal, Protocol

import orjson
from multidict import CIMultiDict

from langchain_pplx_labs._teardown import GRACEFUL_CLOSE_SECONDS, stop_tasks, track
from langchain_pplx_labs._waiting import Deadline
from langchain_pplx_labs.attachments import Attachment
from langchain_pplx_labs.errors import (
    UNTRUSTED_CERTIFICATE,
    WEB_APP,
    PerplexityLabsAttachmentsNotSupportedError,
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsRateLimitError,
    PerplexityLabsSessionExpiredError,
    PerplexityLabsTimeoutError,
    excerpt_of,
)
from langchain_pplx_labs.events import StreamEvent
from langchain_pplx_labs.refusals import shared_refusal
from langchain_pplx_labs.settings import DEFAULT_IMPERSONATE, ConnectionSettings
from langchain_pplx_labs.transports.base import (
    CertificateError,
    ConnectTimeout,
    HTTPTransport,
    Request,
    Response,
    TransportError,
)
from langchain_pplx_labs.web.account import quota_summary, read_quota
from langchain_pplx_labs.web.codec import (
    WEB_SESSION_COOKIES,
    WebDecoder,
    is_end_marker,
    message_json,
    session_user_id,
    web_headers,
    web_page_headers,
    web_request_body,
    web_request_headers,
)
from langchain_pplx_labs.web.models import session_tier
from langchain_pplx_labs.web.sse import SSEMessage, SSEParser
from langchain_pplx_labs.web.uploads import upload_attachments

logger = logging.getLogger(__name__)

# How much of a refusal's body an error quotes (and reads: the rest is not worth the wait).
_REFUSAL_READ_BYTES = 4096
# After an answer's last message the server still ends its stream; read that far (within
# GRACEFUL_CLOSE_SECONDS) so the keep-alive connection goes back to the transport's pool warm.
_TAIL_READ_BYTES = 64 * 1024


class WebTap(Protocol):
    """Watches a session's ask message by message (``pplx-labs doctor``): what was read, what it made."""

    def on_message(self, message: SSEMessage) -> None:
        """A message as it is read, before it is decoded."""

    def on_events(self, events: list[StreamEvent]) -> None:
        """What that message made, as soon as it is decoded."""


class WebSession:
    """One warm connection to the web app; one question at a time, its answer read in the asking task.

    What the pool reads of a session: :attr:`alive`, :attr:`busy`, :meth:`open`, :meth:`query`,
    :meth:`close`. An HTTP answer ends with its response, so nothing is left to drain when its
    reader leaves (:attr:`answer_open` is never true between questions).
    """

    transport: Literal["web"] = "web"
    answer_open = False
    pipelining_dropped = False
    stray_chars = 0
    stray_heard_at = 0.0

    def __init__(
        self,
        settings: ConnectionSettings,
        http: HTTPTransport,
        *,
        tap: WebTap | None = None,
        impersonate: str | None = DEFAULT_IMPERSONATE,
    ) -> None:
        self.settings = settings
        self._http = http
        self.impersonate = impersonate
        """The browser ``http`` speaks as (``None``: none): a Cloudflare challenge's error says what to change."""
        self.tap = tap
        self.signed_in = False
        """Whether the session check found the cookies signed in (the web app then asks with the user's id)."""
        self.subscription_tier: str | None = None
        """The signed-in user's ``subscription_tier`` as the session check gave it (``None``: not said)."""
        self.queries_run = 0
        self.stray_news = asyncio.Event()
        self._connected = False
        self._closed = False
        self._lost: str | None = None
        self._busy = False
        # Set while open() runs: close() from another task (the pool closing) ends the connect.
        self._cut_short: Callable[[], None] | None = None
        # A visitor id per warm connection, as a browser tab keeps one; the request ids are per question.
        self._visitor_id = str(uuid.uuid4())
        self._response: Response | None = None
        # Streams read to their end in the background after their last message (see _retire).
        self._tails: set[asyncio.Task[None]] = set()

    @property
    def alive(self) -> bool:
        """True while the session is open and its last answer did not break off."""
        return self._connected and not self._closed and self._lost is None

    @property
    def busy(self) -> bool:
        return self._busy

    # -- opening -----------------------------------------------------------------------

    async def open(self, transport: str = "web", *, pipelined: bool = True) -> None:
        """The session check, under the ``connect`` budget until its connection is made, then ``handshake``'s.

        On any failure, a cancel included, nothing this call opened stays open.
        """
        del transport, pipelined  # one way in, one request per question: nothing to pipeline behind
        if self._connected or self._closed:
            raise RuntimeError("a web session opens once")
        timeouts = self.settings.timeouts
        tcp_connected = False
        try:
            async with asyncio.timeout(timeouts.connect) as budget:
                loop = asyncio.get_running_loop()

                def connected() -> None:
                    nonlocal tcp_connected
                    tcp_connected = True
                    if not budget.expired():
                        budget.reschedule(loop.time() + timeouts.handshake)

                def cut_short() -> None:
                    if not budget.expired():
                        budget.reschedule(loop.time())

                self._cut_short = cut_short
                try:
                    await self._check_session(connected)
                finally:
                    self._cut_short = None
        except BaseException as exc:
            abandoned = self._closed and isinstance(exc, Exception)  # close() ran while we connected
            await self.close()
            error = (
                _closed_while_connecting()
                if abandoned
                else self._open_error(exc, tcp_connected=tcp_connected)
            )
            if error is None:
                raise
            raise error from (None if isinstance(error, PerplexityLabsTimeoutError) or error is exc else exc)
        self._connected = True

    async def _check_session(self, connected: Callable[[], None]) -> None:
        url = self._url(self.settings.protocol.web_session_path)
        headers = self._headers({"Accept": "application/json", **web_page_headers(self.settings.protocol)})
        request = Request("GET", url, headers, on_connected=connected)
        async with await self._http.handle_request(request) as response:
            if response.status != 200:
                raise await _refusal(url, response, "the session check", self.impersonate, self._session_sent)
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
        self.subscription_tier = session_tier(session)
        if not self.signed_in and self._session_sent:
            # next-auth answers {} to a session token it no longer knows: asking on would be anonymous.
            raise PerplexityLabsSessionExpiredError(
                "the session check named no user for the session cookie sent", url=url
            )

    def _open_error(self, exc: BaseException, *, tcp_connected: bool) -> BaseException | None:
        """The typed error for a failed open, or None to re-raise ``exc`` (a cancel) as is."""
        timeouts = self.settings.timeouts
        if isinstance(exc, ConnectTimeout) or (isinstance(exc, TimeoutError) and not tcp_connected):
            return PerplexityLabsTimeoutError("connect", timeouts.connect, service=WEB_APP)
        if isinstance(exc, TimeoutError):
            return PerplexityLabsTimeoutError("handshake", timeouts.handshake, service=WEB_APP)
        if isinstance(exc, PerplexityLabsError):
            return exc  # a refusal, already typed (a rate limit among them)
        if isinstance(exc, TransportError):
            hint = UNTRUSTED_CERTIFICATE if isinstance(exc, CertificateError) else ""
            return PerplexityLabsConnectionError(
                f"Could not connect to {self.settings.base_url} over web: {exc}{hint}"
            )
        if isinstance(exc, Exception):
            return PerplexityLabsConnectionError(
                f"Could not connect to {self.settings.base_url} over web: {type(exc).__name__}: {exc}"
            )
        return None

    # -- asking ------------------------------------------------------------------------

    async def query(
        self,
        payload: Mapping[str, Any],
        *,
        started: float | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Ask ``payload`` and yield its answer's events, up to and including :class:`Finished`.

        Enforces the first-token, idle and total timeouts (``total`` counted from ``started``);
        HTTP refusals and failed messages are the typed errors of :mod:`langchain_pplx_labs.errors`.
        A reader that leaves early cuts the answer off: its response is closed unread. ``body``: the
        ask's body as given (a client's own, which the recorder forwards), else one made of ``payload``.
        """
        if self._busy:
            raise RuntimeError("a web session runs one query at a time")
        if not self.alive:
            raise _not_sent(self._lost or "the connection was closed")
        attachments = self._attachments(payload)
        timeouts = self.settings.timeouts
        deadline = Deadline(time.monotonic() if started is None else started, timeouts.total, service=WEB_APP)
        decoder = WebDecoder(str(payload.get("model", "")))
        self._busy = True
        self.queries_run += 1
        try:
            # The files go first, under the total budget alone: the first token is waited for once asked.
            urls = await deadline.wait(lambda: self._upload(attachments)) if attachments else []
            deadline.applies("first_token", timeouts.first_token)
            response = self._response = await deadline.wait(lambda: self._ask(payload, body, urls))
            parser = SSEParser()
            while not decoder.finished:
                try:
                    chunk = await deadline.wait(response.receive)
                except TransportError as exc:
                    raise self._broke_off(f"the event stream broke off ({_named(exc)})") from exc
                messages = parser.feed(chunk) if chunk else parser.close()
                fresh = False
                for event in self._decode(messages, decoder, ended=not chunk):
                    yield event
                    fresh = True
                if fresh:
                    # Set after the read's last yield: the caller's own time between events is not the
                    # server's silence, and a read that brought no event (a comment) does not count.
                    deadline.applies("idle", timeouts.idle)
        except PerplexityLabsRateLimitError as exc:
            await self._add_quota(exc)
            raise
        finally:
            deadline.cancel()
            self._busy = False
            # An answer the server ended (its last message, or a failed one) has its stream's tail read
            # in the background; one not read to its end (a break, a stop sequence, a cancel, an error)
            # is cut off here: unlike a Labs socket, an HTTP answer can be dropped alone.
            if decoder.finished:
                self._retire()
            else:
                self._drop_response()

    def _decode(
        self, messages: list[SSEMessage], decoder: WebDecoder, *, ended: bool
    ) -> Iterator[StreamEvent]:
        """The events of one read's messages, message by message: a failure after text raises after it."""
        for message in messages:
            if decoder.finished:
                return  # past the last message: what follows is the stream's tail
            if self.tap is not None:
                self.tap.on_message(message)
            if is_end_marker(message):
                events = decoder.finish()
            elif (data := message_json(message)) is not None:  # not a JSON object: a protocol error
                events = decoder.feed(data)
            else:
                logger.debug("ignoring web event %r", message.event)
                continue
            if self.tap is not None:
                self.tap.on_events(events)
            yield from events
        if ended and not decoder.finished:
            if not decoder.completed:
                raise self._broke_off("the server ended the event stream before the answer's last message")
            yield from decoder.finish()  # COMPLETED, then the end of the stream: the answer is whole

    def _attachments(self, payload: Mapping[str, Any]) -> list[Attachment]:
        """The payload's files; refused before anything is sent when the session is not signed in."""
        attachments = [a for a in payload.get("attachments") or () if isinstance(a, Attachment)]
        if attachments and not self.signed_in:
            names = ", ".join(map(str, attachments))
            raise PerplexityLabsAttachmentsNotSupportedError(
                f"The question attaches {names}, and the web session is not signed in: the web app "
                "uploads files for signed-in accounts only (and some need a paid plan). Give a signed-in "
                "session's cookies (cookies=..., PPLX_LABS_COOKIES)"
            )
        return attachments

    async def _upload(self, attachments: list[Attachment]) -> list[str]:
        return await upload_attachments(self._http, self.settings, attachments, refusal=web_refusal)

    async def _ask(
        self, payload: Mapping[str, Any], body: Mapping[str, Any] | None, attachments: list[str]
    ) -> Response:
        protocol = self.settings.protocol
        if body is None:
            body = web_request_body(
                payload,
                frontend_uuid=str(uuid.uuid4()),
                visitor_id=self._visitor_id,
                frontend_context_uuid=str(uuid.uuid4()),
                signed_in=self.signed_in,
                protocol=protocol,
                attachments=attachments,
            )
        params = body.get("params")
        request_id = str(params.get("frontend_uuid", "")) if isinstance(params, Mapping) else ""
        url = self._url(protocol.web_path)
        headers = self._headers(web_headers(protocol, request_id=request_id))
        try:
            response = await self._http.handle_request(
                Request("POST", url, headers, orjson.dumps(dict(body)))
            )
        except ConnectTimeout:
            # A new TCP connection was needed (the warm one expired) and could not be made in time.
            raise PerplexityLabsTimeoutError(
                "connect", self.settings.timeouts.connect, service=WEB_APP
            ) from None
        except TransportError as exc:
            raise PerplexityLabsDisconnectedError(
                f"The web app at {url} dropped the connection before answering ({_named(exc)})"
            ) from exc
        if is_event_stream(response):
            return response
        raise await _refusal(url, response, "the question", self.impersonate, self._session_sent)

    def _broke_off(self, reason: str) -> PerplexityLabsDisconnectedError:
        """The stream ended without the answer's last message: this session is done for."""
        self._lost = reason
        return PerplexityLabsDisconnectedError(f"{WEB_APP} closed the connection mid-answer ({reason})")

    # -- responses ---------------------------------------------------------------------

    def _retire(self) -> None:
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

    # -- closing -----------------------------------------------------------------------

    async def wait_ready(self) -> None:
        """Ready once open: the session check was the handshake."""

    async def close(self, *, graceful: bool = True) -> None:
        """Drop the answer in flight and the stream tails; safe to call twice and from a cancelled task."""
        del graceful  # an HTTP connection has no session to leave: closing is dropping
        if self._closed:
            return
        self._closed = True
        if self._cut_short is not None:
            self._cut_short()
        self._drop_response()
        self.stray_news.set()
        if self._tails:
            # Shielded and tracked: a cancelled caller must not leave tails reading on a closing transport.
            await asyncio.shield(track(asyncio.ensure_future(stop_tasks(list(self._tails)))))

    # -- helpers -----------------------------------------------------------------------

    @property
    def _session_sent(self) -> bool:
        """Whether the session's cookies carry a session token (so an answer without a user means it expired)."""
        cookies = ";".join(value for name, value in self.settings.headers if name.lower() == "cookie")
        names = {part.partition("=")[0].strip() for part in cookies.split(";")}
        return any(
            name in WEB_SESSION_COOKIES or name.rpartition(".")[0] in WEB_SESSION_COOKIES for name in names
        )

    async def _add_quota(self, error: PerplexityLabsRateLimitError) -> None:
        """A signed-in session's rate limit says what quota is left (one cheap GET; nothing if it fails)."""
        if not self.signed_in:
            return
        quota = await read_quota(self._http, self.settings, within=self.settings.timeouts.connect)
        if quota is not None and (summary := quota_summary(quota)):
            error.quota = quota
            error.args = (f"{error.args[0]}. Quota left: {summary}",)

    def _url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    def _headers(self, extra: Mapping[str, str]) -> CIMultiDict[str]:
        """``extra`` (the web app's headers), then the settings' own (see :func:`web_request_headers`)."""
        return web_request_headers(extra, self.settings.headers, self.settings.protocol)


def _closed_while_connecting() -> PerplexityLabsConnectionError:
    return PerplexityLabsConnectionError("The web session was closed while it was connecting")


def _not_sent(reason: str) -> PerplexityLabsDisconnectedError:
    return PerplexityLabsDisconnectedError(
        f"{WEB_APP} closed the connection before the question was sent ({reason})"
    )


def is_event_stream(response: Response) -> bool:
    """An answer to an ask: HTTP 200 with an event stream (anything else is a refusal)."""
    kind = response.headers.get("content-type", "")
    return response.status == 200 and kind.lower().startswith("text/event-stream")


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


async def _refusal(
    url: str, response: Response, what: str, impersonate: str | None, session_sent: bool = False
) -> PerplexityLabsError:
    """The typed error for an HTTP answer that is not what the web app sends (the response is closed)."""
    try:
        raw = await response.read(_REFUSAL_READ_BYTES)
    except TransportError:
        raw = b""
    finally:
        response.close()
    body = raw.decode("utf-8", "replace")
    return web_refusal(
        url,
        response.status,
        response.headers,
        body,
        what=what,
        impersonate=impersonate,
        session_sent=session_sent,
    )


def _named(exc: TransportError) -> str:
    """The error under a transport's, named by its type and worded by the transport (``IncompleteRead: curl: (18) ...``)."""
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {exc}"


def web_refusal(
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: str,
    *,
    what: str = "the question",
    expected: str = "an event stream",
    impersonate: str | None = None,
    session_sent: bool = False,
) -> PerplexityLabsError:
    """The typed error for the web app answering ``status`` at ``url`` (``headers`` lower-cased); a 401/403
    to a session token (``session_sent``) is :class:`PerplexityLabsSessionExpiredError`.

    ``expected`` names what a 2xx answer should have been (an event stream for the question, JSON
    for the session check).

    A redirect is not read as Labs' retirement: on the web app it means the endpoint moved (or
    wants a sign-in page), so it is a :class:`PerplexityLabsNotFoundError` naming both URLs.
    Cloudflare's challenge (``cf-mitigated: challenge``) is told by what the client spoke as
    (``impersonate``, the browser; ``None``: plain aiohttp).
    """
    excerpt = excerpt_of(body.strip())
    if headers.get("cf-mitigated", "").lower() == "challenge":
        # Before the shared Cloudflare check: on the web app a challenge is about how the client speaks.
        return PerplexityLabsBlockedError(
            fingerprint_challenge(what, url, status, impersonate),
            status=status,
            excerpt=excerpt,
            challenge=True,
        )
    shared = shared_refusal(
        url,
        status,
        headers,
        body,
        blocked=f"Perplexity blocked {what}",
        behind="The web app",
        service=WEB_APP,
    )
    if shared is not None:
        return shared
    if 300 <= status < 400:
        location = headers.get("location", "")
        return PerplexityLabsNotFoundError(
            f"The web app did not answer {what} at {url}: HTTP {status}, a redirect to {location or '(nowhere)'}. "
            "Its endpoint moved, or it wants a sign-in; check base_url (and cookies=...), or set "
            f"LabsProtocol({_path_field(what)}=...) if {_endpoint(what)} was renamed",
            url=url,
            status=status,
            excerpt=location or excerpt,
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
    if status in (401, 403) and session_sent:
        return PerplexityLabsSessionExpiredError(
            f"HTTP {status} ({excerpt!r}) to {what}", url=url, status=status
        )
    if status in (401, 403):
        return PerplexityLabsConnectionError(
            f"The web app refused {what} at {url}: HTTP {status}: {excerpt!r}. It may want signed-in "
            "cookies (cookies=...)"
        )
    return PerplexityLabsConnectionError(f"The web app refused {what} at {url}: HTTP {status}: {excerpt!r}")


def _path_field(what: str) -> str:
    """The ``LabsProtocol`` field that holds the path of ``what`` (the session check's, or the ask's)."""
    return "web_session_path" if what == "the session check" else "web_path"


def _endpoint(what: str) -> str:
    return "the session endpoint" if what == "the session check" else "the ask endpoint"


def fingerprint_challenge(what: str, url: str, status: int, impersonate: str | None) -> str:
    """What Cloudflare's challenge of ``what`` means, for a client that spoke as ``impersonate``."""
    said = f"Cloudflare challenged {what} at {url} (HTTP {status}, cf-mitigated: challenge)"
    if impersonate is None:
        return (
            f"{said}: it judged this client's TLS fingerprint not a browser's. impersonate=None speaks as "
            'plain aiohttp, which it does not admit: keep impersonate="chrome" (the default; '
            "PPLX_LABS_IMPERSONATE, --impersonate)"
        )
    return (
        f"{said}, though this client speaks as {impersonate!r} (impersonate): Cloudflare did not admit its "
        "TLS fingerprint, or this network. Try a newer browser (impersonate=..., a newer curl_cffi), a "
        "browser's cookies (cf_clearance, cookies=...), another network or a proxy (proxy=...)"
    )
