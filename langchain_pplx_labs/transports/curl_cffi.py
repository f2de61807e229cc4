"""The HTTP transport on curl_cffi: a browser's TLS and HTTP/2 voice (``impersonate``), proxies, keep-alive.

Cloudflare, in front of the web app, refuses clients whose ClientHello and HTTP/2 SETTINGS are not a
browser's; curl_cffi's ``impersonate="chrome"`` sends Chromium's (``docs/browser_voice.md``: measured).
One ``AsyncSession`` per transport, made on first use in the running loop: its curl multi handle keeps the
connections (HTTP/1.1 keep-alive, HTTP/2 multiplexed) between requests.

What curl_cffi 0.17 does not do for us, done here:

- A stream left unread is not stopped: its ``aclose`` waits for the transfer's end (curl_cffi PR #751,
  open). :meth:`_Body.close` removes the easy handle from the multi handle, which aborts the transfer at
  once: HTTP/1.1 closes the TCP connection, HTTP/2 resets the stream.
- In stream mode its request returns at the body's first bytes, not at the head: an answer that sends its
  head and then waits would look unanswered. And it has no hook for "the request has its connection"
  (libcurl's PREREQFUNCTION is not exposed). Both are read from curl's debug callback, on for each request
  until its answer's head (:class:`_Watch`): the request's head going out (after TCP, a proxy's tunnel and
  TLS) calls ``on_connected``; the answer's head ending hands the response over at once (curl_cffi's own
  write callback, given no bytes, marks the head as arrived). curl bounds the connect by ``connect_timeout``.
- Its Chrome headers are a page navigation's (``sec-fetch-mode: navigate``, ``upgrade-insecure-requests``,
  ``cache-control: max-age=0``, an HTML ``accept``): every request here is a page's ``fetch()``, so those
  are replaced by a fetch's (:data:`FETCH_HEADERS`). The User-Agent and client hints are the impersonated
  browser's alone: a given ``User-Agent`` or ``sec-ch-ua*`` is not sent, so they never disagree.
- A request cancelled before its head arrived leaves its transfer running in curl_cffi's background
  task: the easy handle it holds is noted (:class:`_Session`) and removed from the multi handle.
- It cannot take an ``ssl.SSLContext``: a context's CA certificates go to curl as a PEM file (CAINFO),
  a context that verifies nothing turns verification off, and one whose CAs cannot be read is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from curl_cffi import Curl, CurlError, CurlHttpVersion, CurlOpt
from curl_cffi.curl import CURL_WRITEFUNC_ERROR, CURLINFO_HEADER_IN, CURLINFO_HEADER_OUT
from curl_cffi.curl import ffi as curl_ffi  # type: ignore[attr-defined]  # its cffi FFI (from_handle)
from curl_cffi.requests import AsyncSession
from curl_cffi.requests import Response as CurlResponse
from curl_cffi.requests.streams import STREAM_END

from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.settings import DEFAULT_IMPERSONATE
from langchain_pplx_labs.transports.base import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    ProxyConnectError,
    ProxyTunnelError,
    ReadError,
    Request,
    Response,
)

logger = logging.getLogger(__name__)

# What a page's fetch() sends where curl_cffi's Chrome sends a navigation's (the request's own win).
FETCH_HEADERS = {
    "accept": "*/*",
    "sec-fetch-site": "same-origin",
    "sec-fetch-mode": "cors",
    "sec-fetch-dest": "empty",
}
# curl_cffi's navigation headers a fetch() does not send: left out (None) unless the request gives them.
_NAVIGATION_ONLY = ("upgrade-insecure-requests", "sec-fetch-user", "cache-control")
# The browser's own voice: the impersonated one's, never the caller's (a mismatch is a bot's mark).
_BROWSER_OWN = frozenset({"user-agent", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform"})

# curl's own keep-alive cap (CURLOPT_MAXAGE_CONN's default, 118 s) would be fine; aiohttp's floor is
# kept so both transports keep an idle connection as long.
CURL_KEEPALIVE_SECONDS = 15.0

# libcurl error codes (https://curl.se/libcurl/c/libcurl-errors.html), by what they mean here.
_TIMED_OUT = 28  # CURLE_OPERATION_TIMEDOUT: only the connect is timed (no other curl timeout is set)
_PROXY_UNREACHED = frozenset({5, 7})  # COULDNT_RESOLVE_PROXY; COULDNT_CONNECT, through a proxy: to it
_PROXY_REFUSED = 97  # CURLE_PROXY: the proxy's handshake failed (a SOCKS refusal, its credentials)
_UNTRUSTED = frozenset({60, 83})  # CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_ISSUER_ERROR
_NO_CONNECTION = frozenset(
    {
        5,  # COULDNT_RESOLVE_PROXY
        6,  # COULDNT_RESOLVE_HOST
        7,  # COULDNT_CONNECT
        35,  # SSL_CONNECT_ERROR
        45,  # INTERFACE_FAILED
        58,  # SSL_CERTPROBLEM (the client's own certificate)
        59,  # SSL_CIPHER
        77,  # SSL_CACERT_BADFILE
        90,  # SSL_PINNEDPUBKEYNOTMATCH
        91,  # SSL_INVALIDCERTSTATUS
        97,  # PROXY (a proxy's handshake refused)
        98,  # SSL_CLIENTCERT
        101,  # ECH_REQUIRED
    }
)


class CurlCffiTransport:
    """An :class:`~langchain_pplx_labs.transports.base.HTTPTransport` that speaks as a browser, on curl_cffi.

    ``impersonate``: one of curl_cffi's targets (``"chrome"``: its newest Chrome; ``"chrome152"``,
    ``"safari"``, … pin one). ``keepalive_timeout``: seconds an idle connection may be reused
    (CURLOPT_MAXAGE_CONN). ``ssl_option``: ``True`` (curl_cffi's CA bundle, certifi's), ``False`` (no
    verification) or an ``ssl.SSLContext`` whose CA certificates are used (see the module's docstring).
    """

    def __init__(
        self,
        *,
        connect_timeout: float | None = 10.0,
        proxy: str | None = None,
        ssl_option: ssl.SSLContext | bool = True,
        keepalive_timeout: float = CURL_KEEPALIVE_SECONDS,
        impersonate: str = DEFAULT_IMPERSONATE,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._proxy = proxy
        self._impersonate = impersonate
        self._keepalive_timeout = keepalive_timeout
        self._ca_file: str | None = None
        self._verify: bool | str = _verify_option(ssl_option)
        if isinstance(ssl_option, ssl.SSLContext) and self._verify is True:
            self._ca_file = self._verify = _ca_file_of(ssl_option)
        self._check_hostname = not isinstance(ssl_option, ssl.SSLContext) or ssl_option.check_hostname
        self._session: _Session | None = None
        self._closed = False

    async def handle_request(self, request: Request) -> Response:
        session = self.session()
        held: list[Curl] = []
        noted = _HELD.set(held)
        watch = _Watch(request.on_connected)
        watching = _WATCH.set(watch)
        try:
            response = await session.request(
                request.method,  # type: ignore[arg-type]  # curl_cffi's Literal of method names
                request.url,
                headers=fetch_headers(request.headers),  # type: ignore[arg-type]  # None drops one of curl's
                data=request.body or None,
                allow_redirects=False,
                stream=True,
            )
        except CurlError as exc:
            raise _transport_error(exc, self._proxy) from exc
        except asyncio.CancelledError:
            for curl in list(held):  # its transfer runs on in curl_cffi's task: end it, drop its connection
                session.abort(curl)
            raise
        finally:
            _HELD.reset(noted)
            _WATCH.reset(watching)
        watch.connected()  # its head's going out went unseen: its answer's head came, so it had one
        headers = [(name, value or "") for name, value in response.headers.multi_items()]
        return Response(response.status_code, headers, _Body(session, response, watch.sink))

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        try:
            if session is not None:
                await session.close()
        finally:
            if self._ca_file is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._ca_file)
                self._ca_file = None

    def session(self) -> _Session:
        """The curl_cffi session, made on first use (in the running loop: its multi handle is bound to it)."""
        if self._closed:
            raise ConnectError("the HTTP transport is closed")
        if self._session is None:
            options: dict[CurlOpt, Any] = {
                CurlOpt.MAXAGE_CONN: max(1, round(self._keepalive_timeout)),
                # HTTP/2 over TLS (ALPN), HTTP/1.1 in the clear, as a browser: the impersonation's own
                # setting would try an h2c upgrade on http:// (Upgrade: h2c, HTTP2-Settings headers).
                CurlOpt.HTTP_VERSION: CurlHttpVersion.V2TLS,
            }
            if self._connect_timeout is not None:
                options[CurlOpt.CONNECTTIMEOUT_MS] = max(1, round(self._connect_timeout * 1000))
            if not self._check_hostname:
                options[CurlOpt.SSL_VERIFYHOST] = 0
            self._session = _Session(
                impersonate=self._impersonate,
                proxy=self._proxy,
                # A CA file's path is a curl_cffi verify value too (its CAINFO), though typed bool.
                verify=self._verify,
                # 0, no deadline: in stream mode curl_cffi makes a number a low-speed window, not a bound.
                # The connect is bounded above; every other wait, by the caller's own timers.
                timeout=0,
                allow_redirects=False,
                curl_options=options,
            )
        return self._session


def fetch_headers(given: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``given`` as a page's ``fetch()`` sends them over curl_cffi's impersonated browser's own headers.

    A fetch's metadata (:data:`FETCH_HEADERS`) where ``given`` names none, curl_cffi's navigation-only
    headers removed (a ``None`` value), and no ``User-Agent`` or client hint but the browser's own.
    """
    headers: list[tuple[str, str | None]] = []
    named: set[str] = set()
    for name, value in given.items():
        lowered = name.lower()
        if lowered not in _BROWSER_OWN:
            headers.append((name, value))
            named.add(lowered)
    headers.extend((name, value) for name, value in FETCH_HEADERS.items() if name not in named)
    headers.extend((name, None) for name in _NAVIGATION_ONLY if name not in named)
    return headers


# The easy handles the running handle_request holds, taken from its session's pool and not yet released.
_HELD: contextvars.ContextVar[list[Curl]] = contextvars.ContextVar("_HELD")
# The running handle_request's watch, which its easy handle's debug callback reports to.
_WATCH: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("_WATCH", default=None)


class _Watch:
    """One request seen through curl's debug callback: its head going out, then its answer's head arriving.

    The callback runs inside the multi handle's socket action, in the loop's thread. The first request
    head out (not a proxy's CONNECT) means the connection is made: ``on_connected`` is called from the
    loop (``call_soon``), outside curl's stack and before the answer's head is handed over. The blank line
    ending a final (not 1xx) answer head hands the response over: curl_cffi's stream mode waits for its
    write callback's first call, so it is called with no bytes (:meth:`_Body.receive` skips them). Then
    the callback is turned off, and the body's chunks go to a :class:`_Sink` in place of curl_cffi's queue.
    """

    def __init__(self, on_connected: Callable[[], None] | None) -> None:
        self._on_connected = on_connected
        self._loop = asyncio.get_running_loop()
        self.curl: Curl | None = None
        self.sink: _Sink | None = None
        self._sent = False
        self._status = 0

    def debug(self, kind: int, data: bytes) -> None:
        """curl's DEBUGFUNCTION."""
        if kind == CURLINFO_HEADER_OUT and not self._sent and not data.startswith(b"CONNECT "):
            self._sent = True
            self._loop.call_soon(self.connected)
        elif kind == CURLINFO_HEADER_IN and self._sent:
            if data.startswith(b"HTTP/"):
                self._status = _status_of(data)
            elif data.strip() == b"" and self._status >= 200:
                self._head_arrived()

    def _head_arrived(self) -> None:
        curl, self.curl = self.curl, None
        if curl is None:
            return
        curl.setopt(CurlOpt.VERBOSE, 0)
        handle = getattr(curl, "_write_handle", None)  # curl_cffi's write callback: its stream's queue
        if handle is not None:
            context = curl_ffi.from_handle(handle)
            context.callback(b"")
            self.sink = _Sink(context.callback)
            context.callback = self.sink.write  # what libcurl's write callback calls from now on

    def connected(self) -> None:
        """Call ``on_connected``, once."""
        on_connected, self._on_connected = self._on_connected, None
        if on_connected is not None:
            on_connected()


class _Sink:
    """The body's chunks as libcurl writes them, kept in a list: curl_cffi's queue gets a wake-up per batch.

    libcurl writes each HTTP chunk (each SSE message of a web answer) on its own: through the queue that
    was a put and a get apiece, more than the reader's own work on the chunk.
    """

    __slots__ = ("_wake", "closed", "parts")

    def __init__(self, wake: Callable[[bytes], int]) -> None:
        self.parts: list[bytes] = []
        self.closed = False
        self._wake = wake  # curl_cffi's queue writer: b"" into the queue, or its refusal once the stream quit

    def write(self, chunk: bytes) -> int:
        """libcurl's write callback: how much was taken, or CURL_WRITEFUNC_ERROR to end the transfer."""
        if self.closed:
            return CURL_WRITEFUNC_ERROR
        parts = self.parts
        parts.append(chunk)
        if len(parts) == 1:
            refused = self._wake(b"")
            if refused:
                return refused
        return len(chunk)

    def take(self) -> list[bytes]:
        parts, self.parts = self.parts, []
        return parts


def _status_of(status_line: bytes) -> int:
    parts = status_line.split(None, 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


class _Session(AsyncSession[CurlResponse]):
    """curl_cffi's session, noting which easy handle each request holds: a cancelled one must give it up.

    A handle is held from the pool until curl_cffi releases it (its transfer over): only then may another
    request take it, so a handle still held is still this request's.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._holders: dict[Curl, list[Curl]] = {}
        self._watched: set[Curl] = set()
        self._shut = False

    async def pop_curl(self) -> Curl:
        curl = await super().pop_curl()
        held = _HELD.get(None)
        if held is not None:
            held.append(curl)
            self._holders[curl] = held
        watch = _WATCH.get()
        if watch is not None:
            # On until the answer's head (curl_easy_reset, on release, clears both options).
            watch.curl = curl
            curl.setopt(CurlOpt.DEBUGFUNCTION, watch.debug)
            curl.setopt(CurlOpt.VERBOSE, 1)
            self._watched.add(curl)
        return curl

    def release_curl(self, curl: Curl) -> None:
        held = self._holders.pop(curl, None)
        if held is not None:
            held.remove(curl)
        if curl in self._watched:
            self._watched.discard(curl)
            # Off before curl_cffi drops the callback's handle: curl must not call it once it is gone.
            curl.setopt(CurlOpt.VERBOSE, 0)
        super().release_curl(curl)

    def abort(self, curl: Curl) -> None:
        """End ``curl``'s transfer now, unfinished: out of the multi handle (a closed session did that)."""
        if self._shut:
            return
        with contextlib.suppress(CurlError):
            self.acurl.remove_handle(curl)

    async def close(self) -> None:
        self._shut = True
        await super().close()


class _Body:
    """A curl_cffi streamed response as the seam's byte stream: its chunks come through curl_cffi's queue,
    or from the :class:`_Sink` that queue's wake-ups announce."""

    def __init__(self, session: _Session, response: CurlResponse, sink: _Sink | None = None) -> None:
        self._session = session
        self._response = response
        self._sink = sink
        self._ended = False
        self._closed = False
        self._last: object = None  # the stream's end or failure, met behind bytes still to hand over

    async def receive(self) -> bytes:
        queue = self._response.queue
        if self._ended or self._closed or queue is None:
            return b""
        if self._last is not None:
            return self._finish(self._last)
        # libcurl hands over each HTTP chunk (2,000 for a 2,000-message answer where aiohttp's buffer
        # made 6): what has come already leaves as one read, so each costs one wake-up, not one each.
        parts: list[bytes] = []
        chunk = await queue.get()
        while True:
            if chunk is STREAM_END or isinstance(chunk, BaseException):
                if self._sink is not None:
                    parts += self._sink.take()  # written before the end
                if not parts:
                    return self._finish(chunk)
                self._last = chunk
                break
            if chunk:
                assert isinstance(chunk, bytes)
                parts.append(chunk)
            elif self._sink is not None:  # b"": the head's mark (see _Watch), or the sink's wake-up
                parts += self._sink.take()
            if queue.empty():
                if parts:
                    break
                chunk = await queue.get()
            else:
                chunk = queue.get_nowait()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _finish(self, last: object) -> bytes:
        """The stream's end (``b""``), or its failure raised."""
        if last is STREAM_END:
            self._ended = True
            return b""
        self._closed = True  # the transfer is over, broken: nothing to drop
        if isinstance(last, CurlError):
            raise ReadError(_described(last)) from last
        assert isinstance(last, BaseException)
        raise last

    @property
    def ended(self) -> bool:
        return self._ended

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sink is not None:
            self._sink.closed = True  # a chunk already on its way is refused, and nothing kept
            self._sink.parts = []
        response = self._response
        task = response.astream_task
        if self._ended or not isinstance(task, asyncio.Future) or task.done():
            return  # the transfer is over: an ended one's connection went back to curl's cache for reuse
        if response.quit_now is not None:
            response.quit_now.set()  # a chunk already on its way is refused (CURL_WRITEFUNC_ERROR)
        if response.curl is not None:
            # Out of the multi handle now: libcurl ends the transfer unfinished and closes its HTTP/1.1
            # connection (an HTTP/2 stream is reset). The transfer's task, cancelled, gives the easy
            # handle back to the session's pool.
            self._session.abort(response.curl)
        task.add_done_callback(_consume)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a broken transfer nobody reads is not "never retrieved"


def _transport_error(exc: CurlError, proxy: str | None = None) -> ConnectError | ReadError:
    code = exc.code
    message = _described(exc)
    if code == _TIMED_OUT:
        return ConnectTimeout(message)
    if proxy is not None:
        parts = urlsplit(proxy)
        where = f"{parts.hostname}:{parts.port}"  # never its credentials: messages end up in reports
        if code in _PROXY_UNREACHED:
            return ProxyConnectError(f"Couldn't connect to proxy {where} ({message})")
        if code == _PROXY_REFUSED or "CONNECT tunnel failed" in message:
            return ProxyTunnelError(f"The proxy {where} opened no tunnel ({message})")
    if code in _UNTRUSTED:
        return CertificateError(message)
    if code in _NO_CONNECTION:
        return ConnectError(message)
    return ReadError(message)  # the connection was made, then broke before the head (52, 55, 56, …)


def _verify_option(ssl_option: ssl.SSLContext | bool) -> bool:
    if isinstance(ssl_option, ssl.SSLContext):
        return ssl_option.verify_mode != ssl.CERT_NONE
    return bool(ssl_option)


def _ca_file_of(context: ssl.SSLContext) -> str:
    """The context's CA certificates in a PEM file for curl (CAINFO); the transport deletes it on close."""
    certificates = context.get_ca_certs(binary_form=True)
    if not certificates:
        raise PerplexityLabsInputError(
            "The curl_cffi transport cannot read this ssl.SSLContext's CA certificates (loaded from a "
            "directory, or none): load them with load_verify_locations(cafile=...) or cadata=..., or "
            "pass verify_ssl=True (curl_cffi's CA bundle) or False."
        )
    handle, path = tempfile.mkstemp(prefix="pplx-labs-ca-", suffix=".pem")
    with os.fdopen(handle, "w", encoding="ascii") as file:
        file.writelines(ssl.DER_cert_to_PEM_cert(der) for der in certificates)
    return path


def _described(exc: BaseException) -> str:
    """curl's error as curl says it (``curl: (7) Failed to connect to ...``), less curl_cffi's wrapping:
    the libcurl call that failed ("Failed to perform, ") and its pointer to libcurl's error list."""
    text = str(exc) or type(exc).__name__
    text = _CURL_CALL.sub("", text, count=1)
    return _CURL_DOCS.sub("", text).rstrip().removesuffix(".")  # the pointer's sentence ended at it


_CURL_CALL = re.compile(r"^Failed to \w+(?: \d+)?, (?=curl: )")
_CURL_DOCS = re.compile(r"\s*See https://curl\.se/libcurl/c/libcurl-errors\.html first for more details\.?")
