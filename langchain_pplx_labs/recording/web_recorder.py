"""Record one web-app ask into a cassette interaction: the body sent and every SSE message with its time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from langchain_pplx_labs.errors import PerplexityLabsError
from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol
from langchain_pplx_labs.recording.cassette import Frame, HttpRefusal, Interaction
from langchain_pplx_labs.recording.redact import Redactor
from langchain_pplx_labs.recording.upstream import UpstreamUnreachableError, describe_error
from langchain_pplx_labs.settings import browser_headers
from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.transports.base import Request, Response, TransportError
from langchain_pplx_labs.web.codec import (
    WebDecoder,
    is_end_marker,
    session_user_id,
    web_headers,
    web_request_body,
    web_request_headers,
)
from langchain_pplx_labs.web.sse import SSEMessage, SSEParser

logger = logging.getLogger(__name__)

_TAIL_SECONDS = 2.0
"""After the answer's last message, how long to wait for the end marker or the stream's end."""
_REFUSAL_BYTES = 64 * 1024
_KEPT_REFUSAL_HEADERS = frozenset(
    {"content-type", "server", "cf-ray", "set-cookie", "cf-mitigated", "location"}
)
_UNREACHABLE = (TransportError, TimeoutError)


async def record_web_interaction(
    base_url: str,
    payload: Mapping[str, Any],
    *,
    body: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    proxy: str | None = None,
    redactor: Redactor | None = None,
    silence: float = 10.0,
    connect_timeout: float = 10.0,
    connection_info: dict[str, Any] | None = None,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
) -> Interaction:
    """Ask ``payload`` at the web app's SSE endpoint and record every message until the stream ends.

    As ``ChatPerplexityLabs(transport="web")`` does: ``GET protocol.web_session_path`` first (which
    says whether the cookies are signed in), then ``POST protocol.web_path`` with
    :func:`~langchain_pplx_labs.web.codec.web_request_body` — or ``body`` as given (a client's own,
    when recording through the replay server). ``headers`` default to the browser-like ones; the web
    app's own (accept, origin, referer, ``x-request-id``) replace the Labs playground's defaults.
    The interaction's request is the body as sent, redacted with :meth:`Redactor.for_web` (so its
    per-question ids match any on replay); each SSE message becomes a frame, its JSON ``data`` redacted
    too (``raw`` when the data is no JSON, such as ``[DONE]``). ``silence`` seconds without a byte end
    the recording with a ``stall``; a stream that breaks off ends it with a ``drop``.
    Raises :class:`UpstreamUnreachableError` when the server gives no HTTP answer at all.
    """
    redactor = (redactor or Redactor()).for_web()
    given = dict(headers if headers is not None else browser_headers(protocol))
    root = base_url.rstrip("/")
    http = http_transport(connect_timeout=connect_timeout, proxy=proxy)
    try:
        session_url = root + protocol.web_session_path
        check = web_request_headers({"accept": "application/json"}, given.items(), protocol)
        try:
            async with await http.handle_request(Request("GET", session_url, check)) as response:
                if response.status != 200:
                    refusal = await _refusal(response, redactor)
                    request = redactor.redact_data(dict(body if body is not None else payload))
                    return Interaction(request=request, refusal=refusal)
                signed_in = _signed_in(await response.read())
        except _UNREACHABLE as exc:
            raise UpstreamUnreachableError(base_url, describe_error(exc)) from None
        if body is None:
            body = web_request_body(
                payload,
                frontend_uuid=str(uuid.uuid4()),
                visitor_id=str(uuid.uuid4()),
                frontend_context_uuid=str(uuid.uuid4()),
                signed_in=signed_in,
                protocol=protocol,
            )
        params = body.get("params")
        request_id = str(params.get("frontend_uuid", "")) if isinstance(params, Mapping) else ""
        sent = web_request_headers(web_headers(protocol, request_id=request_id), given.items(), protocol)
        if connection_info is not None:
            connection_info.update({"headers": redactor.redact_headers(dict(sent)), "signed_in": signed_in})
        request = redactor.redact_data(dict(body))
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            response = await http.handle_request(
                Request("POST", root + protocol.web_path, sent, orjson.dumps(dict(body)))
            )
        except _UNREACHABLE as exc:
            raise UpstreamUnreachableError(base_url, describe_error(exc)) from None
        try:
            content_type = response.headers.get("content-type", "").lower()
            if response.status != 200 or not content_type.startswith("text/event-stream"):
                return Interaction(request=request, refusal=await _refusal(response, redactor))
            model = str(payload.get("model", ""))
            frames = await _collect(response, WebDecoder(model), redactor, silence, started)
        finally:
            response.close()
    finally:
        await http.aclose()
    return Interaction(request=request, frames=frames)


async def _collect(
    response: Response, answer: WebDecoder, redactor: Redactor, silence: float, started: float
) -> list[Frame]:
    loop = asyncio.get_running_loop()
    parser = SSEParser()
    frames: list[Frame] = []
    last = 0.0
    wait = silence
    while True:
        try:
            chunk = await asyncio.wait_for(response.receive(), wait)
        except TimeoutError:
            if not answer.finished:  # silent mid-answer; after its last message, silence is just the end
                frames.append(Frame(at=last, kind="stall"))
            return frames
        except TransportError as exc:
            logger.info("the recorded event stream broke off: %s", describe_error(exc))
            frames.append(Frame(at=round(loop.time() - started, 3), kind="drop"))
            return frames
        last = round(loop.time() - started, 3)
        ended = False
        for message in parser.feed(chunk) if chunk else parser.close():
            frames.append(_frame(message, last, answer, redactor))
            ended = ended or is_end_marker(message)
        if not chunk or ended:
            return frames
        if answer.finished:
            wait = min(silence, _TAIL_SECONDS)


def _frame(message: SSEMessage, at: float, answer: WebDecoder, redactor: Redactor) -> Frame:
    """The cassette frame of one SSE message: its JSON data (fed to ``answer``, to see the end), else raw."""
    try:
        data = orjson.loads(message.data)
    except orjson.JSONDecodeError:
        return Frame(at=at, kind="raw", event=message.event, data=message.data)
    if message.event == "message" and isinstance(data, dict):
        with contextlib.suppress(PerplexityLabsError):  # a failed answer is recorded as it came
            answer.feed(data)
    return Frame(at=at, event=message.event, data=redactor.redact_data(data))


def _signed_in(body: bytes) -> bool:
    try:
        return session_user_id(orjson.loads(body) if body.strip() else {}) is not None
    except orjson.JSONDecodeError:
        return False


async def _refusal(response: Response, redactor: Redactor) -> HttpRefusal:
    try:
        raw = await response.read(_REFUSAL_BYTES)
    except TransportError:
        raw = b""
    kept = {name: value for name, value in response.headers.items() if name in _KEPT_REFUSAL_HEADERS}
    return HttpRefusal(
        status=response.status, headers=redactor.redact_headers(kept), body=raw.decode("utf-8", "replace")
    )
