"""LangChain image and file content blocks as the files a question attaches (pure: decoding, names, limits)."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from langchain_pplx_labs.errors import PerplexityLabsAttachmentError

MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
"""A file's size cap: 50 MB (perplexity-webui-scraper 1.2.1 and perplexity-web-mcp-cli 0.16.1 ``MAX_FILE_SIZE``)."""
MAX_ATTACHMENTS = 30
"""Files one question attaches at most (the same clients' ``MAX_FILES``)."""
ACCEPTED_TYPES: Mapping[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "text/plain": "txt",
    "text/markdown": "md",
    "text/csv": "csv",
    "application/json": "json",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
}
"""Content types a file may have, with the extension a nameless one gets (*ours*: the record's clients send any
type ``mimetypes`` guesses and name none; these are the images and documents the web app's picker offers)."""
ATTACHMENT_PART_TYPES = frozenset({"image_url", "image", "file"})
"""Content part types that are attachments: OpenAI's ``image_url`` and ``file``, LangChain's ``image`` and ``file``."""


@dataclass(frozen=True)
class Attachment:
    """One file to upload with a question: its bytes, content type and name."""

    data: bytes = field(repr=False)
    mime_type: str
    filename: str
    origin: str = ""
    """The content part it came from, for errors: ``message 1 (human): content part 2 (image_url)``."""

    def __str__(self) -> str:
        return f"{self.filename!r} ({self.origin})" if self.origin else repr(self.filename)

    @property
    def is_image(self) -> bool:
        return self.mime_type.startswith("image/")


def attachment_from_part(part: Mapping[str, Any], *, where: str) -> Attachment:
    """The file a content part carries; ``where`` (``message 1 (human): content part 2``) starts every error.

    Takes OpenAI's ``{"type": "image_url", "image_url": {"url": "data:..."}}`` and
    ``{"type": "file", "file": {"filename", "file_data"}}``, LangChain's v0 standard blocks
    (``source_type: "base64"`` with ``data``) and v1 blocks (``base64`` with ``mime_type``). A link
    (``https://...``) or a provider's file id is refused: the web app takes the file's bytes.
    """
    kind = str(part.get("type"))
    name = _given_name(part)
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        return _from_url(url, name, kind, where)
    openai_file = part.get("file")
    if kind == "file" and isinstance(openai_file, Mapping):
        name = name or _text(openai_file.get("filename"))
        if openai_file.get("file_data") is None:
            raise _error(where, kind, name, "has no file_data (a file_id names a file at OpenAI, not here)")
        return _from_url(openai_file["file_data"], name, kind, where)
    source = part.get("source_type")
    encoded = part.get("base64") if "base64" in part else part.get("data") if source == "base64" else None
    if encoded is not None:
        mime = _text(part.get("mime_type")) or _guessed_type(name)
        return _decoded(encoded, mime, name, kind, where)
    if isinstance(part.get("url"), str):
        return _from_url(part["url"], name, kind, where)
    if part.get("file_id") is not None or source == "id":
        raise _error(where, kind, name, "names a provider's file id; give the file's bytes (base64)")
    raise _error(where, kind, name, "has no file: give base64 (with mime_type) or a data: URL")


def _from_url(url: object, name: str, kind: str, where: str) -> Attachment:
    if not isinstance(url, str) or not url:
        raise _error(where, kind, name, f"has no URL (got {type(url).__name__})")
    if not url.startswith("data:"):
        shown = url if len(url) <= 80 else url[:80] + "…"
        raise _error(
            where,
            kind,
            name,
            f"is a link ({shown}); the web app takes uploaded files, not links, and this client fetches "
            "nothing: give the file as data (base64, or a data: URL)",
        )
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise _error(where, kind, name, "is a data: URL without a comma before its data")
    mime, *params = header.split(";")
    if "base64" in params:
        return _decoded(payload, mime, name, kind, where)
    return _checked(unquote_to_bytes(payload), mime, name, kind, where)


def _decoded(encoded: object, mime: str, name: str, kind: str, where: str) -> Attachment:
    if not isinstance(encoded, str | bytes):
        raise _error(where, kind, name, f"has base64 data of type {type(encoded).__name__}, not a string")
    compact = "".join(encoded.split()) if isinstance(encoded, str) else b"".join(encoded.split())
    # Told from the length alone: a too-big file is refused before it is decoded.
    if len(compact) // 4 * 3 > MAX_ATTACHMENT_BYTES + 2:
        size = len(compact) // 4 * 3
        raise _too_big(where, kind, _name_for(name, mime, kind), size)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _error(where, kind, name, f"is not valid base64 ({exc})") from None
    return _checked(data, mime, name, kind, where)


def _checked(data: bytes, mime: str, name: str, kind: str, where: str) -> Attachment:
    mime = mime.strip().lower() or _guessed_type(name)
    filename = _name_for(name, mime, kind)
    if not mime:
        raise _error(where, kind, filename, "has no content type: give mime_type")
    if mime not in ACCEPTED_TYPES:
        accepted = ", ".join(ACCEPTED_TYPES)
        raise _error(
            where, kind, filename, f"has type {mime!r}, which cannot be attached (accepted: {accepted})"
        )
    if not data:
        raise _error(where, kind, filename, "is empty")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise _too_big(where, kind, filename, len(data))
    return Attachment(data, mime, filename, f"{where} ({kind})")


def over_the_limit(size: int) -> str:
    """What a file of ``size`` bytes over :data:`MAX_ATTACHMENT_BYTES` is told: ``is 51.0 MB, over the 50 MB ...``."""
    return f"is {size / (1024 * 1024):.1f} MB, over the {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB limit per file"


def _too_big(where: str, kind: str, filename: str, size: int) -> PerplexityLabsAttachmentError:
    return _error(where, kind, filename, over_the_limit(size))


def _given_name(part: Mapping[str, Any]) -> str:
    """The block's own file name: ``filename``, or in its ``extras`` or ``metadata`` (as langchain-core reads it)."""
    for holder in (part, part.get("extras"), part.get("metadata")):
        if isinstance(holder, Mapping) and (name := _text(holder.get("filename"))):
            return name
    return ""


def _name_for(name: str, mime: str, kind: str) -> str:
    """``name``, or one made of the type, as perplexity-webui-scraper names a data URL's image (``image.png``)."""
    if name:
        return name
    stem = "image" if kind in ("image_url", "image") or mime.startswith("image/") else "file"
    extension = ACCEPTED_TYPES.get(mime, "bin")
    return f"{stem}.{extension}"


def _guessed_type(name: str) -> str:
    return (mimetypes.guess_type(name)[0] or "") if name else ""


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _error(where: str, kind: str, name: str, problem: str) -> PerplexityLabsAttachmentError:
    named = f" {name!r}" if name else ""
    return PerplexityLabsAttachmentError(f"{where} ({kind}{named}) {problem}", filename=name)
