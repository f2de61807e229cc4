"""The HTTP transport seam: a request in, a response's status, headers and streamed body out (httpx's shape)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol


@dataclass(frozen=True)
class Request:
    """One HTTP request; a transport never follows a redirect (the caller judges where it points)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    on_connected: Callable[[], None] | None = field(default=None, compare=False)
    """Called once the request has its connection (a new one made, or a warm one reused), before it is
    sent: where a caller's connect budget ends. A transport that cannot tell calls it before sending."""


class ByteStream(Protocol):
    """A response body as a transport reads it off its connection."""

    async def receive(self) -> bytes:
        """The next bytes as they arrive; ``b""`` once the body ended. Raises :class:`ReadError`."""

    @property
    def ended(self) -> bool:
        """The body was read to its end."""

    def close(self) -> None:
        """Done with the body: an ended one gives its connection back for reuse, any other drops it at once.

        Never waits on the peer; a transport whose own close is a coroutine runs it in the background.
        """


class Response:
    """An HTTP response whose head has arrived; its body is read as it comes, then :meth:`close`\\ d."""

    def __init__(self, status: int, headers: Iterable[tuple[str, str]], stream: ByteStream) -> None:
        self.status = status
        self.headers = lowered(headers)
        """Names lower-cased; a repeated name's values joined by ``", "`` (RFC 9110)."""
        self.stream = stream

    @property
    def ended(self) -> bool:
        return self.stream.ended

    async def receive(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` at its end."""
        return await self.stream.receive()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while chunk := await self.stream.receive():
            yield chunk

    async def read(self, limit: int | None = None) -> bytes:
        """The body to its end, or its first ``limit`` bytes (reading no further once it has them)."""
        parts: list[bytes] = []
        size = 0
        while (limit is None or size < limit) and (chunk := await self.stream.receive()):
            parts.append(chunk)
            size += len(chunk)
        body = b"".join(parts)
        return body if limit is None else body[:limit]

    def close(self) -> None:
        """Reuse the connection if the body was read to its end, else drop it at once (the reader left).

        A closed body reads as ended: :meth:`receive` returns ``b""``.
        """
        self.stream.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class HTTPTransport(Protocol):
    """Sends requests and owns how: connect, TLS, proxies and keep-alive connections."""

    async def handle_request(self, request: Request) -> Response:
        """Send ``request`` and return once the response's head arrived (its body still streaming).

        Raises :class:`ConnectTimeout` or :class:`ConnectError` when no connection could be made, and
        :class:`ReadError` when one broke before the head arrived; never follows a redirect.
        """

    async def aclose(self) -> None:
        """Close every connection the transport keeps; it is not used again."""


class TransportError(Exception):
    """A transport failed to carry a request or its response; the original error is its ``__cause__``."""


class ConnectError(TransportError):
    """No connection could be made (refused, unresolvable, TLS, a proxy's refusal)."""


class CertificateError(ConnectError):
    """No connection could be made: the server's TLS certificate is not trusted (an unknown CA, a clock off)."""


class ConnectTimeout(ConnectError):
    """No connection could be made within the transport's connect timeout."""


class ProxyConnectError(ConnectError):
    """No connection could be made to the proxy itself (refused, unresolvable)."""


class ProxyTunnelError(ConnectError):
    """The proxy answered but opened no tunnel to the server (its rules, its credentials)."""


class ReadError(TransportError):
    """The connection broke while the request was sent or its response read."""


def lowered(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``headers`` as a dict with lower-cased names, a repeated name's values joined by ``", "``."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged
