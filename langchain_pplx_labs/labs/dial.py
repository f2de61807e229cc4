"""How the Labs wires dial on aiohttp: their shared session (traced for ``open()``), a refusal's GET, their failures in the HTTP seam's terms, a socket's drop."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from socketio import exceptions as sio_exceptions

from langchain_pplx_labs._tracing import current_opening
from langchain_pplx_labs.errors import caused_by
from langchain_pplx_labs.transports.aiohttp import AiohttpTransport, connector_keepalive_timeout, described
from langchain_pplx_labs.transports.base import CertificateError, ConnectError, ConnectTimeout, TransportError

# aiohttp-socks raises these outside aiohttp's hierarchy.
PROXY_ERRORS = (ProxyError, ProxyConnectionError, ProxyTimeoutError)
# What a Labs wire's failed connect raises: aiohttp's errors, a socket's, Socket.IO's and a proxy's.
_CONNECT_FAILURES = (aiohttp.ClientError, ConnectionError, sio_exceptions.ConnectionError, *PROXY_ERRORS)
_CONNECT_TIMEOUTS = (aiohttp.ConnectionTimeoutError, ProxyTimeoutError)


class LabsDialer(AiohttpTransport):
    """The aiohttp session Labs' wires share, made on first use (connect budget, proxy, TLS, keep-alive), traced for ``open()``."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = 10.0,
        proxy: str | None = None,
        ssl_option: ssl.SSLContext | bool = True,
        keep_idle: float | None = 0.0,
        traces: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        super().__init__(
            connect_timeout=connect_timeout,
            proxy=proxy,
            ssl_option=ssl_option,
            keepalive_timeout=connector_keepalive_timeout(keep_idle),
            trace_configs=[_labs_trace(), *traces],
        )

    async def get(
        self, url: str, headers: Mapping[str, str], *, total: float, limit: int, follow: bool = False
    ) -> tuple[int, list[tuple[str, str]], str]:
        """GET ``url`` within ``total`` seconds: its status, headers as sent, and body's first ``limit`` bytes (decoded).

        Raises a :class:`TransportError` when no HTTP answer came.
        """
        try:
            async with self.session().get(
                url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=total),
                allow_redirects=follow,
            ) as response:
                body = (await response.content.read(limit)).decode("utf-8", "replace")
                return response.status, list(response.headers.items()), body
        except (aiohttp.ClientError, TimeoutError, *PROXY_ERRORS) as exc:
            raise _seam_error(exc) from exc


def connect_failure(exc: BaseException) -> TransportError | None:
    """A Labs wire's failed connect in the HTTP seam's terms (a timeout, an untrusted certificate, any other), else None."""
    return _seam_error(exc) if isinstance(exc, _CONNECT_FAILURES) else None


def _seam_error(exc: BaseException) -> TransportError:
    text = described(exc)
    if caused_by(exc, _CONNECT_TIMEOUTS):
        return ConnectTimeout(text)
    if caused_by(exc, aiohttp.ClientConnectorCertificateError):
        return CertificateError(text)
    return ConnectError(text)


def sever(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Drop the TCP connection under an aiohttp WebSocket at once.

    aiohttp has no public abort: ``ws.close()`` sends a close frame and waits (up to
    engine.io's request timeout) for the peer's. Closing the response's connection is what
    aiohttp itself does when such a close is cancelled.
    """
    response = ws._response
    connection = response.connection
    if connection is not None and connection.transport is not None:
        connection.transport.abort()
    response.close()


def _labs_trace() -> aiohttp.TraceConfig:
    """Tracing that tells the ``open()`` under way (``current_opening``) of its connect, responses and redirects."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(_connected)
    trace.on_connection_reuseconn.append(_connected)
    trace.on_request_end.append(_answered)
    trace.on_request_redirect.append(_redirected)
    return trace


async def _connected(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
    opening = current_opening()
    if opening is not None:
        opening.connected()


async def _answered(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
) -> None:
    opening = current_opening()
    if opening is not None:
        opening.responses.append(params.response)


async def _redirected(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestRedirectParams
) -> None:
    opening = current_opening()
    if opening is not None and opening.on_redirect is not None:
        # Without engine.io's cache-busting timestamp: the evidence reads the same on every run.
        url = str(params.url.without_query_params("t"))
        opening.on_redirect(url, params.response.status, params.response.headers.get("Location", ""))
