"""HTTP transports: the seam (``base``) and its implementations, one module each (``aiohttp``)."""

from langchain_pplx_labs.transports.base import (
    ConnectError,
    ConnectTimeout,
    HTTPTransport,
    ReadError,
    Request,
    Response,
    TransportError,
)

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "HTTPTransport",
    "ReadError",
    "Request",
    "Response",
    "TransportError",
]
