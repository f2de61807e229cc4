"""Record a Labs session into a cassette: a catch-all Socket.IO client that keeps every frame and its time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import socketio

from langchain_pplx_labs._json import OrjsonPacket
from langchain_pplx_labs.labs.dial import PROXY_ERRORS, LabsDialer
from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol
from langchain_pplx_labs.recording.cassette import Cassette, Frame, HttpRefusal, Interaction, Transport
from langchain_pplx_labs.recording.redact import Redactor
from langchain_pplx_labs.recording.upstream import UpstreamUnreachableError as UpstreamUnreachableError
from langchain_pplx_labs.recording.upstream import describe_error
from langchain_pplx_labs.settings import browser_headers
from langchain_pplx_labs.transports.base import TransportError

logger = logging.getLogger(__name__)

Provenance = Literal["synthetic", "live"]


def upstream_headers(
    extra: Mapping[str, str] | None = None,
    cookies: str | None = None,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
) -> dict[str, str]:
    """The headers ``ChatPerplexityLabs`` sends: defaults, ``extra``, and ``cookies`` (else ``$PPLX_LABS_COOKIES``).

    A recording must look like the client it stands in for, or a session that
    works for the user (cookies, custom headers) is refused while recording.
    """
    headers = {**browser_headers(protocol), **(extra or {})}
    cookie = cookies if cookies is not None else os.environ.get("PPLX_LABS_COOKIES")
    if cookie:
        headers["Cookie"] = cookie
    return headers


async def record_interaction(
    base_url: str,
    payload: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    proxy: str | None = None,
    redactor: Redactor | None = None,
    silence: float = 10.0,
    connect_timeout: float = 10.0,
    connection_info: dict[str, Any] | None = None,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
) -> Interaction:
    """Ask ``payload`` on a fresh socket and record every frame until final, failed, dropped or silent.

    ``headers`` (default: the browser-like headers of ``protocol``) and ``proxy`` are
    used as given; ``protocol`` names the path, events and auth; only their redacted form reaches the cassette.
    ``silence`` seconds without a frame end the recording with a ``stall``.
    When given, ``connection_info`` is filled with the (redacted) headers, auth and handshake.
    Raises :class:`UpstreamUnreachableError` when the server gives no HTTP answer at all.
    """
    redactor = redactor or Redactor()
    sent_headers = dict(headers if headers is not None else browser_headers(protocol))
    inbox: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
    async with contextlib.aclosing(LabsDialer(connect_timeout=connect_timeout, proxy=proxy)) as dialer:
        sio = socketio.AsyncClient(
            reconnection=False,
            http_session=dialer.session(),
            serializer=OrjsonPacket,
            logger=False,
            engineio_logger=False,
        )
        sio.on("*", lambda event, *args: inbox.put_nowait(("event", event, args[0] if args else None)))
        sio.on("disconnect", lambda *reason: inbox.put_nowait(("drop", "", None)))
        request = redactor.redact_data(dict(payload))
        try:
            await sio.connect(
                base_url,
                headers=dict(sent_headers),  # engineio pops the Cookie header from the dict it gets
                auth=dict(protocol.auth),
                transports=["websocket"],
                socketio_path=protocol.engineio_path,
                wait_timeout=connect_timeout,
            )
        except PROXY_ERRORS as exc:
            raise UpstreamUnreachableError(base_url, f"proxy {describe_error(exc)}") from None
        except socketio.exceptions.ConnectionError as exc:
            logger.info("recording a refused connection to %s: %s", base_url, exc)
            url = protocol.endpoint(base_url)
            refusal = await _fetch_refusal(dialer, url, base_url, sent_headers, redactor, connect_timeout)
            return Interaction(request=request, refusal=refusal)
        try:
            if connection_info is not None:
                connection_info.update(
                    redactor.redact_data(
                        {
                            "headers": redactor.redact_headers(sent_headers),
                            "auth": dict(protocol.auth),
                            "transport": sio.transport(),
                            "sid": sio.get_sid(),
                        }
                    )
                )
            frames = await _collect(sio, inbox, payload, redactor, silence, protocol)
        finally:
            await sio.disconnect()
            await sio.eio.disconnect(abort=True)
    return Interaction(request=request, frames=frames)


async def _collect(
    sio: socketio.AsyncClient,
    inbox: asyncio.Queue[tuple[str, str, Any]],
    payload: Mapping[str, Any],
    redactor: Redactor,
    silence: float,
    protocol: LabsProtocol,
) -> list[Frame]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    last = 0.0
    frames: list[Frame] = []
    is_progress = protocol.is_progress_event
    await sio.emit(protocol.query_event, dict(payload))
    while True:
        try:
            kind, event, data = await asyncio.wait_for(inbox.get(), silence)
        except TimeoutError:
            frames.append(Frame(at=last, kind="stall"))
            return frames
        last = round(loop.time() - started, 3)
        if kind == "drop":
            frames.append(Frame(at=last, kind="drop"))
            return frames
        frames.append(Frame(at=last, event=event, data=redactor.redact_data(data)))
        if is_progress(event) and _last_frame(data):
            return frames


def _last_frame(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    return data.get("final") is True or data.get("status") == "failed"


async def _fetch_refusal(
    dialer: LabsDialer,
    url: str,
    base_url: str,
    headers: Mapping[str, str],
    redactor: Redactor,
    wait: float,
) -> HttpRefusal:
    try:
        status, sent, body = await dialer.get(url, headers, total=wait, limit=64 * 1024, follow=True)
    except TransportError as exc:
        # No HTTP status means no server answered: saving that as a "refusal" would
        # replay a made-up Cloudflare block forever, so the recording fails instead.
        raise UpstreamUnreachableError(base_url, describe_error(exc)) from None
    kept = {
        name: value
        for name, value in sent
        if name.lower() in {"content-type", "server", "cf-ray", "set-cookie", "cf-mitigated"}
    }
    return HttpRefusal(status=status, headers=redactor.redact_headers(kept), body=body)


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
    (:func:`~langchain_pplx_labs.recording.web_recorder.record_web_interaction`) instead of Labs' Socket.IO.
    """
    from langchain_pplx_labs._version import __version__

    if not payloads:
        raise ValueError("record_cassette needs at least one payload")
    if transport not in ("labs", "web"):
        raise ValueError(f"unknown transport {transport!r}: use 'labs' or 'web'")
    record = record_interaction
    if transport == "web":
        from langchain_pplx_labs.recording.web_recorder import record_web_interaction

        record = record_web_interaction
    connection: dict[str, Any] = {}
    interactions = [
        await record(
            base_url,
            payload,
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
