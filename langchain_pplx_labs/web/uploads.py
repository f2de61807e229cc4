"""A question's files uploaded as the web app does: upload URLs asked for in one batch, each file POSTed to its presigned form."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from langchain_pplx_labs.attachments import Attachment
from langchain_pplx_labs.errors import (
    WEB_APP,
    PerplexityLabsConnectionError,
    PerplexityLabsError,
    PerplexityLabsProtocolError,
    excerpt_of,
)
from langchain_pplx_labs.settings import ConnectionSettings
from langchain_pplx_labs.transports.base import HTTPTransport, Request, Response, TransportError
from langchain_pplx_labs.web.codec import web_page_headers, web_request_headers

UPLOAD_URLS_PATH = "/rest/uploads/batch_create_upload_urls"
"""Where the web app asks for upload URLs (perplexity-webui-scraper 1.2.1, perplexity-web-mcp-cli 0.16.1
``ENDPOINT_UPLOAD``)."""
UPLOADED_STATUSES = frozenset({200, 201, 204})
"""What the presigned form POST answers when the file is stored (the same clients' check)."""
# How much of a refused upload's body an error quotes.
_REFUSAL_READ_BYTES = 4096

Refusal = Callable[..., PerplexityLabsError]
"""The session's typed error for an HTTP refusal: ``(url, status, headers, body, *, what, expected)``."""


def upload_urls_body(files: Mapping[str, Attachment]) -> dict[str, Any]:
    """The batch request: each file by a fresh id, with the fields the clients send for it."""
    return {
        "files": {
            file_id: {
                "filename": attachment.filename,
                "content_type": attachment.mime_type,
                "source": "default",
                "file_size": len(attachment.data),
                "force_image": attachment.is_image,
            }
            for file_id, attachment in files.items()
        }
    }


def multipart_form(fields: Mapping[str, str], attachment: Attachment) -> tuple[str, bytes]:
    """The presigned form: its fields as given, then the file last (S3 reads fields up to the file)."""
    boundary = "pplx-labs-" + uuid.uuid4().hex
    parts = [_form_part(boundary, name, b"", value.encode()) for name, value in fields.items()]
    file_head = f'; filename="{_quoted(attachment.filename)}"\r\nContent-Type: {attachment.mime_type}'
    parts.append(_form_part(boundary, "file", file_head.encode(), attachment.data))
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def _form_part(boundary: str, name: str, extra: bytes, value: bytes) -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"'.encode()
    return head + extra + b"\r\n\r\n" + value + b"\r\n"


def _quoted(value: str) -> str:
    """A form name as browsers write it in quotes: ``"`` and line breaks percent-encoded."""
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


async def upload_attachments(
    http: HTTPTransport,
    settings: ConnectionSettings,
    attachments: Sequence[Attachment],
    *,
    refusal: Refusal,
) -> list[str]:
    """Upload ``attachments`` and return their URLs, in order, for the ask's ``params.attachments``.

    The upload URLs come in one batch request with the session's cookies; each file then goes to its
    own presigned form with no cookie (it is another host: the clients post it from a fresh session).
    """
    files = {str(uuid.uuid4()): attachment for attachment in attachments}
    protocol = settings.protocol
    # The web app's own query (its request names ``?version=2.18&source=default``); the released clients send none.
    query = urlencode({"version": protocol.web_version, "source": protocol.source})
    url = f"{settings.base_url.rstrip('/')}{UPLOAD_URLS_PATH}?{query}"
    extra = {
        "accept": "application/json",
        "content-type": "application/json",
        **web_page_headers(protocol),
    }
    headers = web_request_headers(extra, settings.headers, protocol)
    body = orjson.dumps(upload_urls_body(files))
    status, answer_headers, raw = await _send(http, Request("POST", url, headers, body), "the upload URLs")
    if status != 200:
        text = raw.decode("utf-8", "replace")
        raise refusal(url, status, answer_headers, text, what="the upload URLs", expected="JSON")
    results = _results(raw)
    urls: list[str] = []
    for file_id, attachment in files.items():
        form_url, object_url, fields = _target(results.get(file_id), attachment)
        await _post_form(http, form_url, fields, attachment)
        urls.append(object_url)
    return urls


def _results(raw: bytes) -> Mapping[str, Any]:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, dict):
        raise PerplexityLabsProtocolError(
            f"{WEB_APP} answered the upload URLs without a results object", excerpt=excerpt_of(raw)
        )
    return results


def _target(result: object, attachment: Attachment) -> tuple[str, str, dict[str, str]]:
    """The form's URL, the file's URL once stored, and the form's fields, from one file's result."""
    found = result if isinstance(result, dict) else {}
    form_url, object_url, fields = (found.get(k) for k in ("s3_bucket_url", "s3_object_url", "fields"))
    if not (isinstance(form_url, str) and form_url and isinstance(object_url, str) and object_url):
        raise PerplexityLabsProtocolError(
            f"{WEB_APP} gave no upload URL for {attachment.filename!r}", excerpt=excerpt_of(repr(result))
        )
    if not isinstance(fields, dict) or not fields:
        raise PerplexityLabsProtocolError(
            f"{WEB_APP} gave no upload form fields for {attachment.filename!r}",
            excerpt=excerpt_of(repr(result)),
        )
    return form_url, object_url, {str(name): str(value) for name, value in fields.items()}


async def _post_form(
    http: HTTPTransport, url: str, fields: Mapping[str, str], attachment: Attachment
) -> None:
    content_type, body = multipart_form(fields, attachment)
    request = Request("POST", url, {"content-type": content_type, "accept": "*/*"}, body)
    what = f"the upload of {attachment.filename!r}"
    status, _, raw = await _send(http, request, what)
    if status not in UPLOADED_STATUSES:
        # The storage's own words (S3 answers an XML <Error>), quoted as it said them.
        raise PerplexityLabsConnectionError(
            f"The file storage at {url} refused {what}: HTTP {status}: {excerpt_of(raw.strip(), 300)!r}"
        )


async def _send(http: HTTPTransport, request: Request, what: str) -> tuple[int, Mapping[str, str], bytes]:
    """Send ``request`` and read its answer (a refusal's first bytes only); the response is closed."""
    try:
        response: Response = await http.handle_request(request)
        async with response:
            ok = response.status in UPLOADED_STATUSES
            raw = await response.read(None if ok else _REFUSAL_READ_BYTES)
    except TransportError as exc:
        cause = exc.__cause__ or exc
        raise PerplexityLabsConnectionError(
            f"Could not send {what} to {request.url}: {type(cause).__name__}: {cause}"
        ) from exc
    return response.status, response.headers, raw
