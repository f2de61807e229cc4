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
    impersonate: str | None = None,
) -> HTTPTransport:
    """The HTTP transport the web wire, its doctor and its recorder dial with.

    ``keep_idle``: seconds an idle keep-alive connection is kept at the least (``None``: never dropped
    for idling), so a pool's warm connection does not lose its TCP (and TLS) connection under it.
    ``impersonate``: a browser for curl_cffi to speak as (``"chrome"``, the model's default: checked by
    ``settings.check_impersonate``), whose TLS and HTTP/2 fingerprint Cloudflare admits
    (``docs/browser_voice.md``); ``None`` is plain aiohttp.
    """
    from langchain_pplx_labs.transports.aiohttp import AiohttpTransport, connector_keepalive_timeout

    if impersonate is not None:
        from langchain_pplx_labs.transports.curl_cffi import CurlCffiTransport

        return CurlCffiTransport(
            connect_timeout=connect_timeout,
            proxy=proxy,
            ssl_option=ssl_option,
            keepalive_timeout=connector_keepalive_timeout(keep_idle),
            impersonate=impersonate,
        )
    return AiohttpTransport(
        connect_timeout=connect_timeout,
        proxy=proxy,
        ssl_option=ssl_option,
        keepalive_timeout=connector_keepalive_timeout(keep_idle),
    )
