"""A transport wrapped so that a watcher sees each request go out and its response come back (httpx's hooks)."""

from __future__ import annotations

from dataclasses import replace

from langchain_pplx_labs.transports.base import ByteStream, HTTPTransport, Request, Response


class HTTPTap:
    """What a :class:`TappedTransport` tells, as it happens; each method does nothing unless overridden."""

    def on_request(self, request: Request) -> None:
        """``request`` has its connection (made or reused) and is being sent."""

    def on_response(self, request: Request, response: Response) -> None:
        """``request``'s response head arrived; its body is still to be read."""

    def on_body(self, request: Request, chunk: bytes) -> None:
        """Bytes of the response's body, as its reader read them; ``b""`` at its end (a break raises to the reader)."""

    def on_closed(self, request: Request) -> None:
        """The response was closed (read to its end, or dropped): nobody reads it any further."""


class TappedTransport:
    """An :class:`HTTPTransport` sending through ``http``, each step told to ``tap`` (the doctor, the recorder)."""

    def __init__(self, http: HTTPTransport, tap: HTTPTap) -> None:
        self._http = http
        self.tap = tap

    async def handle_request(self, request: Request) -> Response:
        tap, connected = self.tap, request.on_connected

        def sent() -> None:
            tap.on_request(request)
            if connected is not None:
                connected()

        response = await self._http.handle_request(replace(request, on_connected=sent))
        tap.on_response(request, response)
        response.stream = _TappedStream(response.stream, request, tap)
        return response

    async def aclose(self) -> None:
        await self._http.aclose()


class _TappedStream:
    """A response body that tells its tap what was read, and when it was closed."""

    def __init__(self, stream: ByteStream, request: Request, tap: HTTPTap) -> None:
        self._stream = stream
        self._request = request
        self._tap = tap

    async def receive(self) -> bytes:
        chunk = await self._stream.receive()
        self._tap.on_body(self._request, chunk)
        return chunk

    @property
    def ended(self) -> bool:
        return self._stream.ended

    def close(self) -> None:
        self._stream.close()
        self._tap.on_closed(self._request)
