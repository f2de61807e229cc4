"""The HTTP transport on an aiohttp session: TCP connect, TLS, proxies (aiohttp-socks) and keep-alive."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from types import SimpleNamespace

import aiohttp
from aiohttp_socks import (
    ProxyConnectionError as ProxyConnectionError,  # re-exported: the doctor names proxy failures
)
from aiohttp_socks import ProxyConnector, ProxyTimeoutError
from aiohttp_socks import ProxyError as ProxyError

from langchain_pplx_labs.transports.base import (
    CertificateError,
    ConnectError,
    ConnectTimeout,
    ReadError,
    Request,
    Response,
)

# aiohttp's own keep-alive timeout, the floor: a pool that expires sooner keeps them no shorter.
AIOHTTP_KEEPALIVE_SECONDS = 15.0
# What "never expire" becomes for aiohttp, whose keep-alive timer needs a number.
AIOHTTP_KEEPALIVE_FOREVER = 86_400.0
# aiohttp-socks raises these outside aiohttp's hierarchy.
_CONNECT_FAILURES = (aiohttp.ClientConnectorError, ProxyError, ProxyConnectionError)
_READ_FAILURES = (aiohttp.ClientError, ConnectionError)


def connector_keepalive_timeout(pool_idle_timeout: float | None) -> float:
    """How long aiohttp keeps an idle HTTP connection: at least the pool's idle timeout.

    ``None`` (the pool never expires its connections) is a day here: aiohttp before 3.12 cannot
    compare an idle time with ``None``, and a keep-alive connection dropped after a day is only
    reconnected by the next question.
    """
    if pool_idle_timeout is None:
        return AIOHTTP_KEEPALIVE_FOREVER
    return max(AIOHTTP_KEEPALIVE_SECONDS, pool_idle_timeout)


class AiohttpTransport:
    """An :class:`~langchain_pplx_labs.transports.base.HTTPTransport` on one aiohttp session, made on first use."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = 10.0,
        proxy: str | None = None,
        ssl_option: ssl.SSLContext | bool = True,
        keepalive_timeout: float = AIOHTTP_KEEPALIVE_SECONDS,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self._connect_timeout = connect_timeout
        self._proxy = proxy
        self._ssl = ssl_option
        self._keepalive_timeout = keepalive_timeout
        self._traces = [_connected_trace(), *trace_configs]
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def handle_request(self, request: Request) -> Response:
        session = self.session()
        try:
            response = await session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body or None,
                allow_redirects=False,
                trace_request_ctx=request,
            )
        except (aiohttp.ConnectionTimeoutError, ProxyTimeoutError) as exc:
            raise ConnectTimeout(described(exc)) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise CertificateError(described(exc)) from exc
        except _CONNECT_FAILURES as exc:
            raise ConnectError(described(exc)) from exc
        except _READ_FAILURES as exc:
            raise ReadError(described(exc)) from exc
        return Response(response.status, response.headers.items(), _Body(response))

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            _open_sessions.discard(session)  # referenced by this frame until closed
            await session.close()

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (anew if it was closed), for aiohttp's own users too (the Labs wires)."""
        if self._closed:
            raise ConnectError("the HTTP transport is closed")
        if self._session is None or self._session.closed:
            # Direct or through the proxy (http, socks4, socks5), bounding only the connect. limit=0: aiohttp's
            # default cap of 100 would stall sockets past the 100th until the connect timeout; the pool's
            # own semaphore (max_connections) is the limit.
            connector: aiohttp.BaseConnector
            if self._proxy:
                connector = ProxyConnector.from_url(
                    self._proxy, ssl=self._ssl, limit=0, keepalive_timeout=self._keepalive_timeout
                )
            else:
                connector = aiohttp.TCPConnector(
                    ssl=self._ssl, limit=0, keepalive_timeout=self._keepalive_timeout
                )
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, trace_configs=self._traces
            )
            _open_sessions.add(self._session)
        return self._session


class _Body:
    """An aiohttp response's payload as the seam's byte stream."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._closed = False

    async def receive(self) -> bytes:
        if self._closed:
            return b""  # the seam's contract: a closed body reads as ended, as curl_cffi's does
        try:
            return await self._response.content.readany()
        except (*_READ_FAILURES, ProxyError) as exc:
            raise ReadError(described(exc)) from exc

    @property
    def ended(self) -> bool:
        return self._response.content.at_eof()

    def close(self) -> None:
        self._closed = True
        if self.ended:
            self._response.release()
        else:
            self._response.close()  # unread: aiohttp drops its TCP connection rather than pool it


def _connected_trace() -> aiohttp.TraceConfig:
    """Tracing that tells each request (its ``trace_request_ctx``) when it has its connection."""

    async def connected(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
        request = context.trace_request_ctx
        if isinstance(request, Request) and request.on_connected is not None:
            request.on_connected()

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(connected)
    trace.on_connection_reuseconn.append(connected)
    return trace


def described(exc: BaseException) -> str:
    """aiohttp's error in its own words, less its connector's key: ``ssl:default`` (or a context's repr)
    says nothing to a user, and on an http:// URL it reads as if TLS were involved."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"Cannot connect to host {exc.host}:{exc.port}: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"Cannot connect to host {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
    return str(exc) or type(exc).__name__


def _os_reason(error: OSError) -> str:
    """The socket's reason: asyncio's "Connect call failed (...)" with the errno's name it leaves out."""
    reason = error.strerror or str(error) or type(error).__name__
    if isinstance(error, ConnectionRefusedError) and "refused" not in reason.lower():
        return f"connection refused ({reason})"
    return reason


# Every session not closed yet. A dropped model caught in a reference cycle (an error's
# traceback makes one) is collected in one pass: the session's ``__del__`` would warn
# "Unclosed client session" before the pool's lifespan, finalised in the same pass, had
# closed it. Held from here, the session is never part of that garbage.
_open_sessions: set[aiohttp.ClientSession] = set()
