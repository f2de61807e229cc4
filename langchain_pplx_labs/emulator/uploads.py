"""The emulator's uploads: the web app's upload-URL batch and the presigned form it names, on the same port, each file kept to read back."""

from __future__ import annotations

import collections
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

UPLOAD_URLS = "/rest/uploads/batch_create_upload_urls"
"""The web app's route (perplexity-webui-scraper 1.2.1, perplexity-web-mcp-cli 0.16.1 ``ENDPOINT_UPLOAD``)."""
FORM = "/emulator-uploads/form"
"""The presigned form's target (on the live service an S3 bucket's URL: the path here is ours)."""
OBJECTS = "/emulator-uploads/objects/"
"""Where a stored file is served (the live ``s3_object_url`` is the bucket's: ours)."""
MAX_FILES_PER_BATCH = 30
"""Files one batch names at most (the clients' ``MAX_FILES``)."""
SUCCESS_STATUS = 204
"""What the form answers a stored file with: S3's default ``success_action_status`` (the clients take 200,
201 or 204)."""


@dataclass(frozen=True)
class StoredUpload:
    """A file as it arrived at the form: its bytes, the form's file name and content type, and its URL."""

    data: bytes = field(repr=False)
    filename: str
    content_type: str
    url: str


class UploadsEndpoint:
    """Serves the batch of upload URLs (signed-in sessions only), the form each names, and the stored files.

    ``signed_in(request)`` tells a signed-in request (the web endpoint's session cookie or bearer token).
    """

    def __init__(self, signed_in: Callable[[web.Request], bool]) -> None:
        self._signed_in = signed_in
        self.batches = 0
        """Upload-URL batches answered (a refused one is not counted)."""
        self.form_posts = 0
        """Form POSTs received, stored or not."""
        self.requested: list[dict[str, Any]] = []
        """Each file a batch named, as named (``filename``, ``content_type``, ``file_size``, ...)."""
        self.stored: collections.OrderedDict[str, StoredUpload] = collections.OrderedDict()
        """Stored files by their URL, oldest first."""
        self._issued: dict[str, dict[str, Any]] = {}  # form key -> what its batch declared

    def install(self, app: web.Application) -> None:
        app.router.add_post(UPLOAD_URLS, self._batch)
        app.router.add_post(FORM, self._form)
        app.router.add_get(OBJECTS + "{key}", self._object)

    def reset(self) -> None:
        self.batches = 0
        self.form_posts = 0
        self.requested.clear()
        self.stored.clear()
        self._issued.clear()

    async def _batch(self, request: web.Request) -> web.Response:
        """``{"files": {id: {filename, content_type, file_size, ...}}}`` -> ``{"results": {id: {s3_bucket_url,
        s3_object_url, fields}}}``; anonymous: 401 (our choice: helallao's 1.0.5 client gives an anonymous
        session no uploads, perplexity-webui-scraper 1.2.1 none to a free account)."""
        if not self._signed_in(request):
            return web.json_response(
                {"error": "unauthorized", "message": "sign in to upload files"}, status=401
            )
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _bad_request(f"body is not JSON: {exc}")
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, dict) or not files or len(files) > MAX_FILES_PER_BATCH:
            return _bad_request(f"files must be an object naming 1 to {MAX_FILES_PER_BATCH} files")
        origin = str(request.url.origin())
        results: dict[str, Any] = {}
        for file_id, declared in files.items():
            if not isinstance(declared, dict) or not isinstance(declared.get("filename"), str):
                return _bad_request(f"file {file_id!r} has no filename")
            key = secrets.token_hex(8)
            self._issued[key] = declared
            self.requested.append(dict(declared))
            policy = hashlib.sha256(key.encode()).hexdigest()
            results[file_id] = {
                "s3_bucket_url": origin + FORM,
                "s3_object_url": origin + OBJECTS + key,
                "fields": {"key": key, "policy": policy, "x-amz-signature": policy[:32]},
            }
        self.batches += 1
        return web.json_response({"results": results})

    async def _form(self, request: web.Request) -> web.Response:
        """The presigned form: its fields, then ``file``; a key never issued, or a file larger than its batch
        declared, is refused in S3's words (an XML ``<Error>``)."""
        self.form_posts += 1
        fields: dict[str, str] = {}
        upload: StoredUpload | None = None
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader):
                return _s3_error(400, "MalformedPOSTRequest", "nested multipart is not a form field")
            if part.name != "file":
                fields[part.name or ""] = await part.text()
                continue
            declared = self._issued.get(fields.get("key", ""))
            if declared is None:
                return _s3_error(403, "AccessDenied", "Invalid according to Policy: no such key")
            data = await part.read()
            if len(data) > int(declared.get("file_size") or 0):
                return _s3_error(
                    400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
                )
            kind = part.headers.get("Content-Type", "application/octet-stream")
            url = str(request.url.origin()) + OBJECTS + fields["key"]
            upload = StoredUpload(data, part.filename or "", kind, url)
        if upload is None:
            return _s3_error(400, "InvalidArgument", "POST requires exactly one file upload per request")
        del self._issued[fields["key"]]
        self.stored[upload.url] = upload
        return web.Response(status=SUCCESS_STATUS)

    async def _object(self, request: web.Request) -> web.Response:
        url = str(request.url.origin()) + OBJECTS + request.match_info["key"]
        upload = self.stored.get(url)
        if upload is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        return web.Response(body=upload.data, headers={"Content-Type": upload.content_type})


def _bad_request(problem: str) -> web.Response:
    return web.json_response({"error": "bad_request", "message": problem}, status=400)


def _s3_error(status: int, code: str, message: str) -> web.Response:
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    return web.Response(status=status, text=xml, content_type="application/xml")
