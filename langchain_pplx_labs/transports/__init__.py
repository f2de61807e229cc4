"""HTTP transports: the seam (``base.py``), one module per implementation, and the one place that picks it."""

from __future__ import annotations

import ssl

from langchain_pplx_labs.transports.base import HTTPTransport


def http_transport(
    *,
    connect_timeout: float | None,
    proxy: str | None = None,
    ssl_option: ssl.SSLContext | bool = True,
    keep_idle: float | None = 0.0,
) -> HTTPTransport:
    """The HTTP transport the web wire, its doctor and its recorder dial with (aiohttp's, for now).

    ``keep_idle``: seconds an idle keep-alive connection is kept at the least (``None``: never dropped
    for idling), so a pool's warm connection does not lose its TCP (and TLS) connection under it.
    """
    from langchain_pplx_labs.transports.aiohttp import AiohttpTransport, connector_keepalive_timeout

    return AiohttpTransport(
        connect_timeout=connect_timeout,
        proxy=proxy,
        ssl_option=ssl_option,
        keepalive_timeout=connector_keepalive_timeout(keep_idle),
    )
