"""Record a conversation into a cassette: the client's own session asks, and what it heard is kept with its time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import orjson

from langchain_pplx_labs.errors import (
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsTimeoutError,
    caused_by,
)
from langchain_pplx_labs.labs.connection import LabsConnection
from langchain_pplx_labs.labs.dial import PROXY_ERRORS, LabsDialer
from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol
from langchain_pplx_labs.recording.cassette import Cassette, Frame, HttpRefusal, Interaction, Transport
from langchain_pplx_labs.recording.redact import Redactor
from langchain_pplx_labs.session_file import model_cookies
from langchain_pplx_labs.settings import DEFAULT_IMPERSONATE, ConnectionSettings, Timeouts, browser_headers
from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.transports.base import Request, Response, TransportError
from langchain_pplx_labs.transports.tap import HTTPTap, TappedTransport
from langchain_pplx_labs.web.codec import is_end_marker
from langchain_pplx_labs.web.session import WebSession, is_event_stream
from langchain_pplx_labs.web.sse import SSEMessage, SSEParser

logger = logging.getLogger(__name__)

Provenance = Literal["synthetic", "live"]

_TAIL_SECONDS = 2.0
"""After a web answer's last message, how long to wait for the session to read its stream's end."""
_KEPT_REFUSAL_HEADERS = frozenset(
    {"content-type", "server", "cf-ray", "set-cookie", "cf-mitigated", "location"}
)


class UpstreamUnreachableError(PerplexityLabsError):
    """The server to record could not be reached at all (no HTTP answer), so there is nothing to save."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


def describe_error(exc: BaseException) -> str:
    """An exception's text, or its type's name when it has none (for one-line reasons)."""
    return str(exc) or type(exc).__name__


def upstream_headers(
    extra: Mapping[str, str] | None = None,
    cookies: str | None = None,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
) -> dict[str, str]:
    """The headers ``ChatPerplexityLabs`` sends: defaults, ``extra``, and ``cookies`` (else ``$PPLX_LABS_COOKIES`` in
    any form ``cookies=`` takes, else the ``pplx-labs login`` session file's).

    A recording must look like the client it stands in for, or a session that
    works for the user (cookies, custom headers) is refused while recording.
    """
    headers = {**browser_headers(protocol), **(extra or {})}
    cookie = cookies if cookies is not None else model_cookies(os.environ.get("PPLX_LABS_COOKIES"))
    if cookie:
        headers["Cookie"] = cookie
    return headers


async def record_interaction(
    base_url: str,
    payload: Mapping[str, Any],
    *,
    transport: Transport = "labs",
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    proxy: str | None = None,
    redactor: Redactor | None = None,
    silence: float = 10.0,
    connect_timeout: float = 10.0,
    connection_info: dict[str, Any] | None = None,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
    impersonate: str | None = DEFAULT_IMPERSONATE,
) -> Interaction:
    """Ask ``payload`` on a fresh connection, as the model does, and record what the server answered.

    ``labs``: a Labs connection asks over a direct WebSocket; each Socket.IO event it hears is a frame, up
    to the final or failed one; a refused connection is recorded as the answer to a GET of its endpoint.
    ``web``: a web session asks (its own body of ``payload``, or ``body``: a client's own, forwarded by the
    replay server); each SSE message is a frame (``raw`` when not JSON, such as ``[DONE]``) up to the end
    marker or the stream's end; an answer that is no event stream is the refusal; the request recorded is
    the body as sent, redacted with :meth:`Redactor.for_web` (its per-question ids then match any on replay).

    ``headers`` (default: the browser-like headers of ``protocol``) and ``proxy`` are used as given; only
    their redacted form reaches the cassette. ``silence`` seconds without an answer (the session's
    first-token and idle timeouts) end the recording with a ``stall``; a connection that breaks off, with a
    ``drop``. ``connection_info``, when given, is filled with the (redacted) headers and handshake.
    ``impersonate``: the browser the web session speaks as, as the model's field of that name (``None``:
    plain aiohttp). Raises :class:`UpstreamUnreachableError` when the server gives no HTTP answer at all.
    """
    redactor = redactor or Redactor()
    given = headers if headers is not None else browser_headers(protocol)
    timeouts = Timeouts(connect_timeout, connect_timeout, first_token=silence, idle=silence, total=None)
    settings = ConnectionSettings(base_url, tuple(given.items()), timeouts, protocol, transport)
    if transport == "web":
        return await _record_web(
            settings, payload, body, proxy, redactor.for_web(), connection_info, impersonate
        )
    return await _record_labs(settings, payload, proxy, redactor, connection_info)


async def record_web_interaction(base_url: str, payload: Mapping[str, Any], **options: Any) -> Interaction:
    """:func:`record_interaction` over the web app (``transport="web"``)."""
    return await record_interaction(base_url, payload, transport="web", **options)


# -- Labs ---------------------------------------------------------------------------------


async def _record_labs(
    settings: ConnectionSettings,
    payload: Mapping[str, Any],
    proxy: str | None,
    redactor: Redactor,
    connection_info: dict[str, Any] | None,
) -> Interaction:
    request = redactor.redact_data(dict(payload))
    dialer = LabsDialer(connect_timeout=settings.timeouts.connect, proxy=proxy)
    async with contextlib.aclosing(dialer):
        connection = _TapedConnection(settings, dialer, redactor)
        try:
            await connection.open("websocket", pipelined=False)
        except PerplexityLabsError as exc:
            logger.info("recording a refused connection to %s: %s", settings.base_url, exc)
            return Interaction(request=request, refusal=await _fetch_refusal(dialer, settings, redactor))
        try:
            if connection_info is not None:
                sid = getattr(connection.wire, "sid", "")
                info = {"auth": settings.protocol.auth, "transport": connection.transport, "sid": sid}
                headers = redactor.redact_headers(settings.header_dict)
                connection_info.update(redactor.redact_data({"headers": headers, **info}))
            await connection.record(payload)
        finally:
            await connection.close()
    return Interaction(request=request, frames=connection.frames)


class _TapedConnection(LabsConnection):
    """A Labs connection that also keeps every event it hears, with its time from the question's."""

    def __init__(self, settings: ConnectionSettings, dialer: LabsDialer, redactor: Redactor) -> None:
        super().__init__(settings, dialer)
        self.redactor = redactor
        self.frames: list[Frame] = []
        self._last = 0.0

    async def record(self, payload: Mapping[str, Any]) -> None:
        """Ask, reading the answer to its end: a final or failed frame, a drop or a silence."""
        try:
            async for _ in self.query(payload):
                pass
        except PerplexityLabsTimeoutError:
            self.frames.append(Frame(at=self._last, kind="stall"))
        except PerplexityLabsDisconnectedError:
            self.frames.append(Frame(at=_since(self.sent_at), kind="drop"))
        except PerplexityLabsError as exc:  # a failed frame: recorded as it came
            logger.debug("the recorded answer ended with %r", exc)

    def on_event(self, event: str, *args: Any) -> None:
        self._last = _since(self.sent_at)  # 0 until the question left
        data = self.redactor.redact_data(args[0] if args else None)
        self.frames.append(Frame(at=self._last, event=event, data=data))
        super().on_event(event, *args)

    def on_bad_packet(self, data: Any, exc: Exception) -> None:
        logger.info("not recorded: an undecodable Socket.IO packet (%s)", exc)  # the answer goes on


def _since(started: float | None) -> float:
    """Seconds from ``started`` (``time.monotonic()``) to now, as a frame's ``at``."""
    return round(time.monotonic() - (started or time.monotonic()), 3)


async def _fetch_refusal(dialer: LabsDialer, settings: ConnectionSettings, redactor: Redactor) -> HttpRefusal:
    url = settings.protocol.endpoint(settings.base_url)
    try:
        status, sent, body = await dialer.get(
            url, settings.header_dict, total=settings.timeouts.connect, limit=64 * 1024, follow=True
        )
    except TransportError as exc:
        # No HTTP status means no server answered: saving that as a "refusal" would
        # replay a made-up Cloudflare block forever, so the recording fails instead.
        proxy = "proxy " if caused_by(exc, PROXY_ERRORS) else ""
        raise UpstreamUnreachableError(settings.base_url, proxy + describe_error(exc)) from None
    return _refusal(status, sent, body, redactor)


def _refusal(status: int, headers: Iterable[tuple[str, str]], body: str, redactor: Redactor) -> HttpRefusal:
    kept = {name: value for name, value in headers if name.lower() in _KEPT_REFUSAL_HEADERS}
    return HttpRefusal(status=status, headers=redactor.redact_headers(kept), body=body)


# -- the web app ----------------------------------------------------------------------------


async def _record_web(
    settings: ConnectionSettings,
    payload: Mapping[str, Any],
    body: Mapping[str, Any] | None,
    proxy: str | None,
    redactor: Redactor,
    connection_info: dict[str, Any] | None,
    impersonate: str | None,
) -> Interaction:
    tape = _Tape(redactor)
    dialled = http_transport(connect_timeout=settings.timeouts.connect, proxy=proxy, impersonate=impersonate)
    http = TappedTransport(dialled, tape)
    session = WebSession(settings, http, impersonate=impersonate)
    try:
        try:
            await session.open()
            async for _ in session.query(payload, body=body):
                pass
        except PerplexityLabsError as exc:
            tape.ended_by(exc, settings.base_url)
        if tape.ask is not None:  # a finished answer's tail is read in the background
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tape.closed.wait(), _TAIL_SECONDS)
    finally:
        await session.close()
        await http.aclose()
    if tape.ask is None:  # the session check refused: no body was made
        request = redactor.redact_data(dict(body if body is not None else payload))
        return Interaction(request=request, refusal=tape.refusal)
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
        self.closed = asyncio.Event()  # the ask's response was closed: its stream's tail, if any, was read
        self._answered: tuple[Request, Response] | None = None
        self._body: list[bytes] = []  # the latest response's body as read, when it is no event stream
        self._parser: SSEParser | None = None  # the ask's event stream, until its end
        self._started = 0.0
        self._last = 0.0

    def on_request(self, request: Request) -> None:
        if request.method == "POST":
            self.ask, self._started = request, time.monotonic()

    def on_response(self, request: Request, response: Response) -> None:
        self._answered, self._body = (request, response), []
        if request is self.ask and is_event_stream(response):
            self._parser = SSEParser()

    def on_body(self, request: Request, chunk: bytes) -> None:
        if request is not self.ask or self._parser is None:
            self._body.append(chunk)
            return
        self._last = _since(self._started)
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
        """The session's error: the ask went silent, a refusal, a drop, or nothing answered at all."""
        request, response = self._answered or (None, None)
        asked = self.ask is not None
        if asked and isinstance(exc, PerplexityLabsTimeoutError) and exc.which != "connect":
            self.frames.append(Frame(at=self._last, kind="stall"))
        elif response is None or (asked and request is not self.ask):
            cause = exc.__cause__
            reason = describe_error(cause if isinstance(cause, TransportError) else exc)
            raise UpstreamUnreachableError(base_url, reason) from None
        elif request is not self.ask or not is_event_stream(response):  # the session check's, or the ask's
            text = b"".join(self._body).decode("utf-8", "replace")
            self.refusal = _refusal(response.status, response.headers.items(), text, self.redactor)
        elif isinstance(exc.__cause__, TransportError):  # a failed message, an early end: in the frames
            logger.info("the recorded event stream broke off: %s", describe_error(exc.__cause__))
            self.frames.append(Frame(at=_since(self._started), kind="drop"))

    def _frame(self, message: SSEMessage) -> Frame:
        """The cassette frame of one SSE message: its JSON data, redacted, else its raw data."""
        try:
            data = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            return Frame(at=self._last, kind="raw", event=message.event, data=message.data)
        return Frame(at=self._last, event=message.event, data=self.redactor.redact_data(data))


async def record_cassette(
    base_url: str,
    payloads: Sequence[Mapping[str, Any]],
    *,
    provenance: Provenance,
    note: str = "",
    server: str | None = None,
    headers: Mapping[str, str] | None = None,
    proxy: str | None = None,
    redactor: Redactor | None = None,
    silence: float = 10.0,
    connect_timeout: float = 10.0,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
    transport: Transport = "labs",
) -> Cassette:
    """Record one conversation (each payload on its own socket, or web ask) as a cassette.

    ``provenance`` must say where the frames came from: ``synthetic`` for the
    emulator, ``live`` for the real service. ``transport="web"`` asks the web app's SSE endpoint
    instead of Labs' Socket.IO (see :func:`record_interaction`).
    """
    from langchain_pplx_labs._version import __version__

    if not payloads:
        raise ValueError("record_cassette needs at least one payload")
    if transport not in ("labs", "web"):
        raise ValueError(f"unknown transport {transport!r}: use 'labs' or 'web'")
    connection: dict[str, Any] = {}
    interactions = [
        await record_interaction(
            base_url,
            payload,
            transport=transport,
            headers=headers,
            proxy=proxy,
            redactor=redactor,
            silence=silence,
            connect_timeout=connect_timeout,
            connection_info=connection if not connection else None,
            protocol=protocol,
        )
        for payload in payloads
    ]
    return Cassette(
        transport=transport,
        provenance=provenance,
        recorded_at=datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat(),
        model=str(payloads[0].get("model", "")),
        client_version=__version__,
        server=server if server is not None else base_url,
        note=note,
        connection=connection,
        interactions=interactions,
    )
