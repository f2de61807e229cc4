"""One Labs connection: the handshake over a wire, then one query at a time as a stream of frames."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

from langchain_pplx_labs._teardown import GRACEFUL_CLOSE_SECONDS, being_cancelled, track
from langchain_pplx_labs._tracing import OPENING, Opening
from langchain_pplx_labs._waiting import Deadline, Inbox
from langchain_pplx_labs.errors import (
    UNTRUSTED_CERTIFICATE,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsNotFoundError,
    PerplexityLabsProtocolError,
    PerplexityLabsRetiredError,
    PerplexityLabsSilentError,
    PerplexityLabsTimeoutError,
    excerpt_of,
)
from langchain_pplx_labs.events import Finished, StreamEvent
from langchain_pplx_labs.labs.dial import LabsDialer, connect_failure
from langchain_pplx_labs.labs.frames import StreamDecoder, parse_frame
from langchain_pplx_labs.labs.polling import PollingWire
from langchain_pplx_labs.labs.websocket import WebSocketWire
from langchain_pplx_labs.labs.wire import Wire
from langchain_pplx_labs.refusals import BLOCK_MARKERS, shared_refusal
from langchain_pplx_labs.settings import ConnectionSettings, Transport
from langchain_pplx_labs.transports.base import CertificateError, ConnectTimeout, TransportError

_LABS_WIRES: dict[Transport, type[WebSocketWire | PollingWire]] = {
    "websocket": WebSocketWire,
    "polling": PollingWire,
}

__all__ = [
    "LabsConnection",
    "PipelinedQueryDropped",
    "diagnose_refusal",
    "explain_refusal",
    "retired_by_redirect",
]

logger = logging.getLogger(__name__)

_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)


class PipelinedQueryDropped(PerplexityLabsDisconnectedError):
    """The server closed a socket whose question was sent before the CONNECT ack.

    Node's Socket.IO server closes the connection on an EVENT for a namespace whose
    (asynchronous) connect has not finished; python-socketio processes it in order.
    The pool then stops pipelining for that base URL and asks again at once.
    """


class LabsConnection:
    """A connected Labs socket that runs one query at a time."""

    def __init__(self, settings: ConnectionSettings, session: LabsDialer | None = None) -> None:
        """``session`` carries the wires; each reports its connect to :class:`Opening`."""
        self.settings = settings
        # Looked up once: it runs for every frame.
        self._is_progress = settings.protocol.is_progress_event
        self.transport: Transport | None = None
        self.queries_run = 0
        self._inbox: Inbox | None = None
        self._closed = False
        self._session = session
        self._wire: Wire | None = None
        self._opening = Opening()
        self._opening.on_redirect = self._check_redirect
        # Set while open() runs: close() from another task (the pool closing) ends the connect.
        self._cut_short: Callable[[], None] | None = None
        self._ready = asyncio.Event()
        self._refused: str | None = None
        self._sent_before_ack = False
        self.pipelining_dropped = False
        # An answer whose final (or failed) frame has not come yet. Labs frames carry no
        # request id, so the pool must not send another question before it ends (see drain).
        self.answer_open = False
        # The tail of an answer nobody reads any more (the pool drains it): its output
        # characters, when its last frame came, and a wake-up for the drain on each frame.
        self.stray_chars = 0
        self.stray_heard_at = 0.0
        self.stray_news = asyncio.Event()
        # Whether the server ever sent this socket an event: a socket that answered before is no retired Labs.
        self._heard = False
        self.sent_at: float | None = None  # when the last question left: the doctor's and recorder's clocks

    @property
    def alive(self) -> bool:
        """True while the socket is connected and not closed by us."""
        return (
            not self._closed and self._refused is None and self._wire is not None and self._wire.engine_open
        )

    @property
    def busy(self) -> bool:
        return self._inbox is not None

    @property
    def wire(self) -> Wire | None:
        return self._wire

    async def open(self, transport: Transport, *, pipelined: bool = True) -> None:
        """Connect with ``transport``: a direct WebSocket, or the polling handshake then upgrade.

        On any failure, a cancel included, nothing this call opened stays open.
        """
        if self._wire is not None:
            raise RuntimeError("a Labs connection opens once")
        self._wire = wire = self._new_wire(transport)
        token = OPENING.set(self._opening)
        try:
            await self._connect(wire, pipelined)
        except BaseException as exc:
            abandoned = self._closed and isinstance(exc, Exception)
            await self.close(graceful=False)
            if abandoned:
                # close() ran while we connected: drop what the connect made after it.
                await self._shutdown(graceful=False)
            error = _closed_while_connecting() if abandoned else self._open_error(exc, transport)
            if error is None:
                raise
            # A typed error of our own (a wire's) is raised as it is: not as its own cause.
            raise error from (None if isinstance(error, PerplexityLabsTimeoutError) or error is exc else exc)
        finally:
            self._opening.active = False
            OPENING.reset(token)
        if self._closed:
            # close() ran (the pool closed) just as the connect finished: drop what it opened.
            await self._shutdown(graceful=False)
            raise _closed_while_connecting()
        self._opening.responses.clear()
        self.transport = transport

    def _new_wire(self, transport: Transport) -> Wire:
        if transport == "web":
            raise ValueError("the web app is asked by a web session (web.WebSession), not a Labs connection")
        if self._session is None:
            raise RuntimeError(f"the {transport} wire needs a LabsDialer: LabsConnection(settings, session)")
        return _LABS_WIRES[transport](self.settings, self._session, self)

    async def _connect(self, wire: Wire, pipelined: bool) -> None:
        timeouts = self.settings.timeouts
        loop = asyncio.get_running_loop()
        # Until the first TCP (+ proxy, TLS) connection is made only ``connect`` applies; then
        # only ``handshake`` (the Labs dialer's tracing, or the web request, tells them apart).
        # Not aiohttp's sock_connect alone: engine.io replaces the session's timeouts on its polling requests.
        async with asyncio.timeout(timeouts.connect) as budget:

            def connected() -> None:
                if not budget.expired():
                    budget.reschedule(loop.time() + timeouts.handshake)

            def cut_short() -> None:
                if not budget.expired():
                    budget.reschedule(loop.time())

            self._opening.on_connected = connected
            self._cut_short = cut_short
            try:
                await wire.connect(pipelined=pipelined)
            finally:
                self._cut_short = self._opening.on_connected = None

    def _open_error(self, exc: BaseException, transport: Transport) -> BaseException | None:
        """The typed error for a failed connect, or None to re-raise ``exc`` (a cancel) as is."""
        timeouts = self.settings.timeouts
        url = self.settings.base_url
        # A Labs wire's failure in the HTTP seam's terms, as the web wire's transport raises them.
        failure = exc if isinstance(exc, TransportError) else connect_failure(exc)
        if isinstance(exc, TimeoutError):
            if isinstance(failure, ConnectTimeout) or not self._opening.tcp_connected:
                return PerplexityLabsTimeoutError("connect", timeouts.connect)
            return PerplexityLabsTimeoutError("handshake", timeouts.handshake)
        if isinstance(exc, PerplexityLabsError):
            return exc  # already typed by the wire
        if failure is not None:
            if isinstance(failure, ConnectTimeout):
                return PerplexityLabsTimeoutError("connect", timeouts.connect)
            hint = UNTRUSTED_CERTIFICATE if isinstance(failure, CertificateError) else ""
            # The seam's wording (failure), not aiohttp's own (exc): no "ssl:default" connector key.
            return PerplexityLabsConnectionError(
                f"Could not connect to {url} over {transport}: {failure}{hint}"
            )
        if isinstance(exc, Exception):
            # The server's first message is not Engine.IO (a plain WebSocket, a proxy's page):
            # our wire says so, engine.io lets its parsing errors escape. A connection failure, retried.
            return PerplexityLabsConnectionError(
                f"Could not connect to {url} over {transport}: the server's reply is not "
                f"Engine.IO ({type(exc).__name__}: {exc})"
            )
        return None

    def _check_redirect(self, url: str, status: int, location: str) -> None:
        """Stop at a redirect away from the Socket.IO endpoint: a retired Labs sends us to the main site."""
        if self.settings.protocol.socketio_path.rstrip("/") not in urlsplit(url).path:
            return  # not an Engine.IO request (another wire's)
        retired = retired_by_redirect(url, status, location)
        if retired is not None:
            raise retired

    async def wait_ready(self) -> None:
        """Wait for the server to acknowledge our CONNECT (``open`` does not, on a WebSocket)."""
        limit = self.settings.timeouts.handshake
        try:
            await asyncio.wait_for(self._ready.wait(), limit)
        except TimeoutError:
            raise PerplexityLabsTimeoutError("handshake", limit) from None
        if self._refused is not None:
            raise self._refusal(self._refused)

    async def close(self, *, graceful: bool = True) -> None:
        """Disconnect; safe to call twice and from a cancelled task.

        ``graceful`` says goodbye first, bounded by ``GRACEFUL_CLOSE_SECONDS``; without it
        (an answer that did not end cleanly, a dead or half-open socket) the socket is
        dropped at once, so no error waits on a peer that may be gone.
        """
        if self._closed:
            return
        self._closed = True
        if self._cut_short is not None:
            self._cut_short()
        # A query running in another task (the pool closing under it) ends now.
        self.on_disconnect("the connection was closed")
        closing = track(asyncio.ensure_future(self._shutdown(graceful)))
        # Shielded: a cancel lands in our caller (and is re-raised to it, never swallowed),
        # while the close itself runs to its end in the background.
        await asyncio.shield(closing)

    async def _shutdown(self, graceful: bool) -> None:
        """Close, then drop whatever is left; raises nothing but a cancel of its own task.

        It runs unattended after a cancel, and at interpreter shutdown asyncio may already
        have cancelled engine.io's loops, whose CancelledError must not skip the drop.
        """
        cancelled = False
        wire = self._wire
        if graceful and wire is not None and wire.loops_running:
            try:
                async with asyncio.timeout(GRACEFUL_CLOSE_SECONDS):
                    await wire.goodbye()
            except asyncio.CancelledError:
                cancelled = being_cancelled()
                logger.debug("graceful close of a Labs socket was cancelled")
            except Exception as exc:  # a slow or failed goodbye ends in the drop below
                logger.debug("graceful close of a Labs socket failed: %r", exc)
        try:
            await self._abort()
        except Exception as exc:
            logger.debug("error while dropping a Labs socket: %r", exc)
        if cancelled:
            raise asyncio.CancelledError

    async def _abort(self) -> None:
        """Drop the socket now: no goodbye, no waiting for the peer; also tidies after a goodbye."""
        for response in self._opening.responses:
            response.close()
        if self._wire is not None:
            await self._wire.abort()

    async def query(
        self, payload: Mapping[str, Any], *, started: float | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """Send one question and yield its answer's events, up to and including :class:`Finished`.

        Labs frames are cumulative: the protocol's :class:`StreamDecoder` turns each into what
        it adds. A failed frame is the server's typed error; this method also enforces the
        first-token, idle and total timeouts and turns a lost socket or an undecodable packet
        into a typed error.
        """
        if self._inbox is not None:
            raise RuntimeError("a Labs connection runs one query at a time")
        timeouts = self.settings.timeouts
        wire = self._wire
        if wire is None:
            raise RuntimeError("open() the Labs connection before asking")
        inbox = Inbox()
        deadline = Deadline(time.monotonic() if started is None else started, timeouts.total)
        self._inbox = inbox
        self.queries_run += 1
        self.answer_open = True
        self.stray_chars = 0
        streaming = False
        decoder = StreamDecoder(str(payload.get("model", "")))
        try:
            await self._emit(wire, payload)
            deadline.applies(*self._first_wait())
            while True:
                if inbox:
                    kind, value = inbox.take()
                elif wire.reads_inline:
                    await deadline.wait(wire.read_one)
                    continue
                else:
                    kind, value = await deadline.wait(inbox.get)
                if kind == "frame":
                    streaming = True
                    for event in decoder.feed(parse_frame(value)):  # a failed frame raises its error
                        yield event
                        if isinstance(event, Finished):
                            return
                    # Set after the yields: the caller's own time between frames is not the server's silence.
                    deadline.applies("idle", timeouts.idle)
                elif kind == "ready":
                    deadline.applies("first_token", timeouts.first_token)
                elif kind == "gone" and self._sent_before_ack and not streaming:
                    self.pipelining_dropped = True
                    raise PipelinedQueryDropped(
                        f"Perplexity Labs closed the connection before answering a pipelined question ({value})"
                    )
                elif kind == "gone":
                    raise PerplexityLabsDisconnectedError(
                        f"Perplexity Labs closed the connection mid-answer ({value})"
                    )
                elif kind == "refused":
                    raise self._refusal(value)
                else:
                    raise PerplexityLabsProtocolError(
                        "Received a Socket.IO packet that cannot be decoded", excerpt=excerpt_of(value)
                    )
        except PerplexityLabsTimeoutError as exc:
            if exc.which != "first_token" or self._heard:
                raise
            # Not a word on this socket since it opened, the question included: how a retired Labs answers.
            raise PerplexityLabsSilentError(exc.seconds, url=self.settings.base_url) from None
        finally:
            deadline.cancel()
            self._inbox = None
            wire.release()

    def _first_wait(self) -> tuple[str, float | None]:
        """Which timeout applies before the first frame, and its limit."""
        timeouts = self.settings.timeouts
        if self._sent_before_ack and not self._ready.is_set():
            # The question went out behind a CONNECT not yet acknowledged: until the ack
            # (a "ready" item), a silent server is stuck in the handshake, not the answer.
            return "handshake", timeouts.handshake
        return "first_token", timeouts.first_token

    async def _emit(self, wire: Wire, payload: Mapping[str, Any]) -> None:
        self._sent_before_ack = False
        if not wire.namespace_ready:
            if self._refused is not None:
                raise self._refusal(self._refused)
            if not wire.engine_open:
                raise _not_sent()
            self._sent_before_ack = True
        try:
            await wire.send_event(
                self.settings.protocol.query_event, dict(payload), before_ack=self._sent_before_ack
            )
        except LookupError as exc:
            # The socket went away between the pool's liveness check and the send.
            raise _not_sent() from exc
        self.sent_at = time.monotonic()

    # The WireListener side: what the wire reports, turned into items for the running query.

    def on_event(self, event: str, *args: Any) -> None:
        self._heard = True
        if not self._is_progress(event):
            logger.debug("ignoring Labs event %r", event)
            return
        data = args[0] if args else None
        if self.answer_open and _ends_answer(data):
            self.answer_open = False
        if self._inbox is None:
            self._stray(data)
            return
        self._inbox.put(("frame", data))

    def _stray(self, data: Any) -> None:
        """A frame nobody reads (the caller stopped): counted for the drain, then dropped."""
        if isinstance(data, dict) and isinstance(output := data.get("output"), str):
            self.stray_chars += len(output)
        self.stray_heard_at = time.monotonic()
        self.stray_news.set()

    def _refusal(self, reason: Any) -> PerplexityLabsConnectionError:
        return PerplexityLabsConnectionError(
            f"Perplexity Labs refused the Socket.IO connection to {self.settings.base_url}: {reason}"
        )

    def on_connect(self) -> None:
        self._ready.set()
        if self._inbox is not None and self._sent_before_ack:
            self._inbox.put(("ready", None))

    def on_connect_error(self, data: Any = None) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        self._refused = str(message or "connection refused")
        self._ready.set()
        if self._inbox is not None:
            self._inbox.put(("refused", self._refused))

    def on_disconnect(self, reason: Any = None) -> None:
        self.stray_news.set()
        if self._inbox is not None:
            self._inbox.put(("gone", reason or "disconnected"))

    def on_bad_packet(self, data: Any, exc: Exception) -> None:
        logger.debug("undecodable Socket.IO packet (%s): %s", exc, excerpt_of(data))
        if self._inbox is not None:
            self._inbox.put(("bad", data))


def _ends_answer(data: Any) -> bool:
    """Whether a progress frame's data is its answer's last: final, or ``status: failed``."""
    return isinstance(data, dict) and (bool(data.get("final")) or data.get("status") == "failed")


def _closed_while_connecting() -> PerplexityLabsConnectionError:
    return PerplexityLabsConnectionError("The Labs connection was closed while it was connecting")


def _not_sent() -> PerplexityLabsDisconnectedError:
    return PerplexityLabsDisconnectedError(
        "Perplexity Labs closed the connection before the question was sent"
    )


async def diagnose_refusal(
    settings: ConnectionSettings, session: LabsDialer, cause: BaseException
) -> PerplexityLabsError:
    """Ask the polling endpoint why a connect failed, and name the real cause in a typed error.

    Only runs after a failure, so the happy path pays nothing for it.
    """
    url = settings.protocol.endpoint(settings.base_url)
    try:
        # Not following redirects: where a redirect points is the evidence (a retired Labs points at the main site).
        # 64 KiB: enough for a page's <title> behind its <head> of scripts and styles.
        status, sent, body = await session.get(
            url, settings.header_dict, total=settings.timeouts.connect, limit=65536
        )
    except TransportError as exc:
        hint = UNTRUSTED_CERTIFICATE if isinstance(exc, CertificateError) else ""
        return PerplexityLabsConnectionError(
            f"Cannot reach Perplexity Labs at {settings.base_url}: {exc}{hint}"
        )
    headers = {name.lower(): value for name, value in sent}
    return explain_refusal(url, status, headers, body, cause)


def explain_refusal(
    url: str, status: int, headers: Mapping[str, str], body: str, cause: BaseException | None = None
) -> PerplexityLabsError:
    """The typed error for an HTTP answer at the Engine.IO endpoint ``url`` (``headers`` lower-cased)."""
    blocked = "Perplexity Labs blocked the connection"
    shared = shared_refusal(url, status, headers, body, blocked=blocked, behind="The playground")
    if shared is not None:
        return shared
    excerpt = excerpt_of(body.strip())
    if 300 <= status < 400:
        location = headers.get("location", "")
        retired = retired_by_redirect(url, status, location)
        if retired is not None:
            return retired
        return PerplexityLabsConnectionError(
            f"The server at {url} redirects (HTTP {status}) to {location or 'nowhere (no Location)'}: "
            "set base_url to where it points"
        )
    title = _main_site_title(body) if status == 404 or 200 <= status < 300 else None
    if title is not None:
        named = f" (title {title!r})" if title else ""
        return PerplexityLabsRetiredError.seen(
            f"{url} answers HTTP {status} with a page of Perplexity's main site{named}, not Engine.IO",
            url=url,
            status=status,
            excerpt=excerpt,
        )
    if status == 404 or (200 <= status < 300 and not body.startswith("0{")):
        what = f"HTTP {status}" if status == 404 else f"HTTP {status} but not Engine.IO"
        return PerplexityLabsNotFoundError(
            f"No Labs endpoint answers at {url} ({what}: {excerpt!r}). Check base_url; if Labs moved "
            "its Socket.IO endpoint or renamed it, set LabsProtocol(socketio_path=...) (ChatPerplexityLabs("
            "protocol=...), or --protocol FILE.json)",
            url=url,
            status=status,
            excerpt=excerpt,
        )
    if status == 400 and "origin" in body.lower():
        return PerplexityLabsConnectionError(
            f"The server at {url} refused our Origin (HTTP 400: {excerpt!r}); "
            "set LabsProtocol(origin=...) to one it accepts"
        )
    if status >= 300:
        return PerplexityLabsConnectionError(
            f"The server at {url} refused the connection: HTTP {status}: {excerpt!r}"
        )
    return PerplexityLabsConnectionError(f"Perplexity Labs refused the Socket.IO handshake at {url}: {cause}")


def retired_by_redirect(url: str, status: int, location: str) -> PerplexityLabsRetiredError | None:
    """The retired verdict for a redirect of the Engine.IO endpoint ``url`` to another host or page.

    ``None`` for no redirect, or one to the same endpoint elsewhere on the host (``http`` to ``https``).
    """
    if not 300 <= status < 400 or not location:
        return None
    source = urlsplit(url)
    try:
        target = urlsplit(urljoin(url, location))
    except ValueError:  # not a URL at all: it leads nowhere we asked for
        target = urlsplit("")
    same_host = (target.hostname or "") == (source.hostname or "")
    if same_host and target.path.rstrip("/") == source.path.rstrip("/"):
        return None
    where = "another host" if not same_host else "a page that is not Engine.IO"
    return PerplexityLabsRetiredError.seen(
        f"{url} redirects (HTTP {status}) to {location}, {where}",
        url=url,
        status=status,
        excerpt=location,
    )


def _main_site_title(body: str) -> str | None:
    """The title of a Perplexity main-site HTML page (``<title>Perplexity``, ``perplexity.ai``), else None."""
    lowered = body.lower()
    if "<html" not in lowered or any(marker in lowered for marker in BLOCK_MARKERS):
        return None  # not a page, or a Cloudflare page (which names the site it guards)
    match = _TITLE.search(body)
    title = " ".join(match.group(1).split()) if match else ""
    if "perplexity" in title.lower() or "perplexity.ai" in lowered:
        return title
    return None
