"""Images and files in a human message, uploaded as the web app does and sent as the ask's ``params.attachments``."""

from __future__ import annotations

import base64
import struct
import urllib.request
import zlib
from collections.abc import Iterator

import aiohttp
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.attachments import MAX_ATTACHMENT_BYTES, Attachment
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.errors import (
    PerplexityLabsAttachmentError,
    PerplexityLabsAttachmentsNotSupportedError,
    PerplexityLabsConnectionError,
    PerplexityLabsInputError,
)
from langchain_pplx_labs.settings import ConnectionSettings
from langchain_pplx_labs.transports import http_transport
from langchain_pplx_labs.web.session import web_refusal
from langchain_pplx_labs.web.uploads import multipart_form, upload_attachments

SIGNED_IN = "__Secure-next-auth.session-token=attach-test-token"


def png_bytes() -> bytes:
    """A 1x1 red PNG, written here: signature, IHDR, IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


PNG = png_bytes()
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def web_model(base_url: str, **fields: object) -> ChatPerplexityLabs:
    settings: dict[str, object] = {"transport": "web", "impersonate": None, "base_url": base_url}
    return ChatPerplexityLabs(**(settings | {"timeout": 20, "max_retries": 0} | fields))  # type: ignore[arg-type]


@pytest.fixture
def signed_in(base_url: str) -> Iterator[ChatPerplexityLabs]:
    chat = web_model(base_url, cookies=SIGNED_IN)
    yield chat
    chat.close()


def v1_blocks() -> list[dict[str, object]]:
    return [
        {"type": "text", "text": "What do these show?"},
        {"type": "image", "base64": b64(PNG), "mime_type": "image/png"},
        {
            "type": "file",
            "base64": b64(PDF),
            "mime_type": "application/pdf",
            "extras": {"filename": "report.pdf"},
        },
    ]


def v0_blocks() -> list[dict[str, object]]:
    return [
        {"type": "text", "text": "What do these show?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(PNG)}},
        {
            "type": "file",
            "source_type": "base64",
            "data": b64(PDF),
            "mime_type": "application/pdf",
            "filename": "r.pdf",
        },
    ]


def assert_uploaded(emulator: LabsEmulator, names: tuple[str, str]) -> None:
    """The emulator stored exactly the PNG and the PDF, by name and type, and the ask named their URLs."""
    uploads = emulator.web.uploads
    stored = list(uploads.stored.values())
    assert [(u.data, u.filename, u.content_type) for u in stored] == [
        (PNG, names[0], "image/png"),
        (PDF, names[1], "application/pdf"),
    ]
    assert uploads.batches == 1
    assert uploads.form_posts == 2
    assert [(r["filename"], r["file_size"], r["force_image"]) for r in uploads.requested] == [
        (names[0], len(PNG), True),
        (names[1], len(PDF), False),
    ]
    params = emulator.web.bodies[-1]["params"]
    assert params["attachments"] == [u.url for u in stored]
    assert emulator.web.bodies[-1]["query_str"] == "What do these show?"
    # The stored URL serves what arrived, with its type.
    with urllib.request.urlopen(stored[0].url, timeout=10) as served:
        assert served.read() == PNG
        assert served.headers["Content-Type"] == "image/png"


def test_v1_image_and_pdf_blocks_are_uploaded_and_attached_by_invoke(
    emulator: LabsEmulator, signed_in: ChatPerplexityLabs
) -> None:
    emulator.script(answer="A red dot and a report.")
    answer = signed_in.invoke([HumanMessage(v1_blocks())])
    assert isinstance(answer, AIMessage)
    assert answer.content == "A red dot and a report."
    assert_uploaded(emulator, ("image.png", "report.pdf"))


async def test_v0_data_url_and_file_blocks_are_uploaded_and_attached_by_astream(
    emulator: LabsEmulator, base_url: str
) -> None:
    emulator.script(answer="A red dot and a report.")
    async with web_model(base_url, cookies=SIGNED_IN) as chat:
        text = "".join([str(chunk.content) async for chunk in chat.astream([HumanMessage(v0_blocks())])])
    assert text == "A red dot and a report."
    assert_uploaded(emulator, ("image.png", "r.pdf"))


def test_an_anonymous_session_is_refused_before_anything_is_uploaded_or_asked(
    emulator: LabsEmulator, base_url: str
) -> None:
    with (
        web_model(base_url) as chat,
        pytest.raises(PerplexityLabsAttachmentsNotSupportedError, match="not signed in") as caught,
    ):
        chat.invoke([HumanMessage(v1_blocks())])
    assert "'report.pdf'" in str(caught.value)
    assert "cookies=" in str(caught.value)
    assert (emulator.web.uploads.batches, emulator.web.uploads.form_posts) == (0, 0)
    assert emulator.web.asks == 0


def test_labs_refuses_attachments_before_connecting(emulator: LabsEmulator, base_url: str) -> None:
    chat = ChatPerplexityLabs(transport="labs", base_url=base_url, max_retries=0)
    with chat, pytest.raises(PerplexityLabsAttachmentsNotSupportedError, match='transport="labs"') as caught:
        chat.invoke([HumanMessage(v0_blocks())])
    assert "image_url" in str(caught.value)
    assert emulator.requests == []
    assert emulator.connections == 0
    assert emulator.web.uploads.batches == 0


@pytest.mark.parametrize(
    ("part", "error"),
    [
        (
            {"type": "image", "base64": "A" * (MAX_ATTACHMENT_BYTES // 3 * 4 + 8), "mime_type": "image/png"},
            r"'image.png'\) is 50\.0 MB, over the 50 MB limit per file",
        ),
        ({"type": "image", "base64": "not*base64!", "mime_type": "image/png"}, "is not valid base64"),
        (
            {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}},
            "is a link .*give the file as data",
        ),
        (
            {
                "type": "file",
                "base64": b64(b"MZ"),
                "mime_type": "application/x-msdownload",
                "filename": "a.exe",
            },
            r"'a.exe'\) has type 'application/x-msdownload', which cannot be attached \(accepted: image/png",
        ),
        ({"type": "file", "base64": "", "mime_type": "application/pdf"}, r"'file.pdf'\) is empty"),
        ({"type": "image", "file_id": "file-123"}, "provider's file id"),
        ({"type": "image_url", "image_url": {"url": "data:;base64," + b64(PNG)}}, "has no content type"),
    ],
    ids=["too-big", "bad-base64", "url", "type", "empty", "file-id", "no-type"],
)
def test_a_bad_attachment_is_a_typed_error_naming_it_and_nothing_is_sent(
    emulator: LabsEmulator, signed_in: ChatPerplexityLabs, part: dict[str, object], error: str
) -> None:
    message = HumanMessage([{"type": "text", "text": "Look"}, part])
    with pytest.raises(
        PerplexityLabsAttachmentError, match=r"^message 0 \(human\): content part 1 \(" + "(?s:.*)" + error
    ):
        signed_in.invoke([message])
    assert (emulator.web.uploads.batches, emulator.web.asks, emulator.web.session_checks) == (0, 0, 0)


def test_more_files_than_a_question_takes_are_refused(
    emulator: LabsEmulator, signed_in: ChatPerplexityLabs
) -> None:
    image = {"type": "image", "base64": b64(PNG), "mime_type": "image/png"}
    with pytest.raises(PerplexityLabsAttachmentError, match="attaches 31 files; a question takes at most 30"):
        signed_in.invoke([HumanMessage([{"type": "text", "text": "Many"}, *[image] * 31])])
    assert emulator.web.uploads.batches == 0


def test_an_image_outside_a_human_message_is_refused(
    emulator: LabsEmulator, signed_in: ChatPerplexityLabs
) -> None:
    image = {"type": "image", "base64": b64(PNG), "mime_type": "image/png"}
    with pytest.raises(PerplexityLabsInputError, match="only a human message attaches images and files"):
        signed_in.invoke([HumanMessage("Hi"), AIMessage([image]), HumanMessage("And?")])
    assert emulator.web.asks == 0


async def test_the_emulators_form_refuses_a_key_it_never_issued_in_s3s_words(base_url: str) -> None:
    form = aiohttp.FormData()
    form.add_field("key", "never-issued")
    form.add_field("file", PNG, filename="x.png", content_type="image/png")
    async with (
        aiohttp.ClientSession() as session,
        session.post(base_url + "/emulator-uploads/form", data=form) as reply,
    ):
        assert reply.status == 403
        assert "<Code>AccessDenied</Code>" in await reply.text()


async def test_a_refused_upload_batch_carries_the_servers_words(
    emulator: LabsEmulator, base_url: str
) -> None:
    # The model refuses an anonymous session first; asked anyway, the web app's 401 is a typed error in its words.
    http = http_transport(connect_timeout=5)
    try:
        with pytest.raises(
            PerplexityLabsConnectionError, match=r"HTTP 401.*sign in to upload files"
        ) as caught:
            await upload_attachments(
                http,
                ConnectionSettings(base_url, service="web"),
                [Attachment(PNG, "image/png", "x.png")],
                refusal=web_refusal,
            )
    finally:
        await http.aclose()
    assert "/rest/uploads/batch_create_upload_urls?version=2.18&source=default" in str(caught.value)
    assert (emulator.web.uploads.batches, emulator.web.uploads.form_posts) == (0, 0)


def test_the_form_is_the_fields_then_the_file() -> None:
    content_type, body = multipart_form(
        {"key": "k1", "policy": "p"}, Attachment(b"%PDF", "application/pdf", 'a "b".pdf')
    )
    boundary = content_type.removeprefix("multipart/form-data; boundary=")
    assert (
        body
        == (
            f'--{boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\nk1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="policy"\r\n\r\np\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a %22b%22.pdf"\r\n'
            f"Content-Type: application/pdf\r\n\r\n%PDF\r\n--{boundary}--\r\n"
        ).encode()
    )
