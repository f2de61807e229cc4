"""The emulator behaves as the evidence says the live service did, and the client takes every frame variant."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from clirun import command

from langchain_pplx_labs import ChatPerplexityLabs, LabsProtocol
from langchain_pplx_labs.cli import build_parser
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.emulator.script import made_up_answer
from langchain_pplx_labs.errors import PerplexityLabsConnectionError, PerplexityLabsServerError
from langchain_pplx_labs.protocol import build_payload
from langchain_pplx_labs.recording import record_cassette

ANSWER = "Paris is the capital of France [1], on the Seine [2]."
URLS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]


async def _handshake_status(base_url: str, origin: str | None) -> tuple[int, str]:
    headers = {} if origin is None else {"Origin": origin}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base_url}/socket.io/?EIO=4&transport=polling", headers=headers) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "https://labs.perplexity.ai",
        "https://www.perplexity.ai",  # websocket-client derives it from wss://www.perplexity.ai
        "https://labs-api.perplexity.ai",  # the labs-api era
        "https://perplexity.ai",
    ],
)
async def test_origins_the_live_service_accepted_are_accepted(origin: str | None) -> None:
    async with LabsEmulator() as emulator:
        status, body = await _handshake_status(emulator.base_url, origin)
    assert status == 200
    assert body.startswith('0{"sid":')


async def test_its_own_origin_is_accepted() -> None:
    async with LabsEmulator() as emulator:
        status, _ = await _handshake_status(emulator.base_url, emulator.base_url)
    assert status == 200


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://www.perplexity.ai", "https://perplexity.ai.evil.example", "null"],
)
async def test_foreign_origins_are_refused(origin: str) -> None:
    async with LabsEmulator() as emulator:
        status, body = await _handshake_status(emulator.base_url, origin)
    assert status == 400
    assert f"{origin} is not an accepted origin" in body


async def test_allowed_origins_narrow_what_is_accepted() -> None:
    async with LabsEmulator(allowed_origins=["https://labs.perplexity.ai"]) as emulator:
        assert (await _handshake_status(emulator.base_url, "https://labs.perplexity.ai"))[0] == 200
        assert (await _handshake_status(emulator.base_url, "https://www.perplexity.ai"))[0] == 400
        # The model with the www origin is refused at the handshake, as a typed error.
        chat = ChatPerplexityLabs(
            transport="labs",
            base_url=emulator.base_url,
            max_retries=0,
            protocol=LabsProtocol(origin="https://www.perplexity.ai"),
        )
        async with chat:
            with pytest.raises(PerplexityLabsConnectionError):
                await chat.ainvoke("hi")
        assert emulator.requests == []


async def _frames_of(base_url: str, origin: str) -> list[dict[str, Any]]:
    """A python-socketio client sending ``origin``, collecting every progress frame until the final one."""
    frames: list[dict[str, Any]] = []
    done = asyncio.Event()
    client = socketio.AsyncClient(reconnection=False)

    @client.on("sonar-pro_query_progress")
    def progress(data: dict[str, Any]) -> None:
        frames.append(data)
        if data.get("final") or data.get("status") == "failed":
            done.set()

    await client.connect(
        base_url, headers={"Origin": origin}, auth={"jwt": "anonymous-ask-user"}, transports=["websocket"]
    )
    try:
        payload = build_payload("sonar-pro", [{"role": "user", "content": "What is the capital of France?"}])
        await client.emit("perplexity_labs", payload)
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await client.disconnect()
    return frames


async def test_partial_frames_carry_no_status_by_default() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(answer=ANSWER, citations=URLS, chunk_size=10)
        frames = await _frames_of(emulator.base_url, "https://www.perplexity.ai")
    assert len(frames) == 6  # 52 characters in steps of 10: five partial frames and the final one
    assert all("status" not in frame for frame in frames[:-1])
    assert frames[-1]["status"] == "completed"
    assert frames[-1]["final"] is True
    # The two clients from the evidence: one keeps frames only while there is no status, one
    # resolves on the first truthy status. Both now see the whole answer.
    kept = [frame["output"] for frame in frames if "status" not in frame]
    assert kept[-1] == ANSWER[:50]
    resolved = next(frame for frame in frames if frame.get("status"))
    assert resolved["output"] == ANSWER
    assert resolved["citations"] == URLS


async def test_pending_status_is_a_variant_not_the_default() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(answer=ANSWER, citations=URLS, chunk_size=10, partial_status="pending")
        frames = await _frames_of(emulator.base_url, "https://labs.perplexity.ai")
    assert [frame.get("status") for frame in frames] == ["pending"] * 5 + ["completed"]


# Every frame variant, with what the client must make of it written out.
VARIANTS: dict[str, tuple[dict[str, Any], list[str], list[dict[str, str]] | None]] = {
    "evidence-default": ({}, URLS, None),
    "pending-status": ({"partial_status": "pending"}, URLS, None),
    "citations-on-partials": ({"partial_citations": True}, URLS, None),
    "citation-objects": (
        {"citation_titles": True},
        URLS,
        [
            {"url": "https://en.wikipedia.org/wiki/Paris", "title": "Paris"},
            {"url": "https://www.britannica.com/place/Paris", "title": "Paris"},
        ],
    ),
    "final-without-citations": ({"final_citations": False}, [], None),
    "final-without-citations-after-partials": (
        {"final_citations": False, "partial_citations": True},
        URLS,
        None,
    ),
    "everything": (
        {
            "partial_status": "pending",
            "partial_citations": True,
            "citation_titles": True,
            "extra_events": True,
        },
        URLS,
        [
            {"url": "https://en.wikipedia.org/wiki/Paris", "title": "Paris"},
            {"url": "https://www.britannica.com/place/Paris", "title": "Paris"},
        ],
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_client_takes_every_frame_variant(variant: str, transport: str) -> None:
    options, citations, search_results = VARIANTS[variant]
    async with LabsEmulator(refuse_websocket=transport == "polling") as emulator:
        emulator.script(answer=ANSWER, citations=URLS, chunk_size=7, **options)
        async with ChatPerplexityLabs(
            transport="labs", model="sonar-pro", base_url=emulator.base_url, max_retries=0
        ) as chat:
            streamed = [chunk async for chunk in chat.astream("What is the capital of France?")]
            message = await chat.ainvoke("What is the capital of France?")
    assert "".join(str(chunk.content) for chunk in streamed) == ANSWER
    assert message.content == ANSWER
    assert message.response_metadata["citations"] == citations
    assert message.response_metadata.get("search_results") == search_results


@pytest.mark.parametrize("version", ["2.2", "2.9", "2.16", "2.18"])
async def test_payload_versions_the_service_has_used(version: str) -> None:
    async with LabsEmulator() as emulator:
        emulator.script(answer=ANSWER, citations=URLS, versions=[version])
        protocol = LabsProtocol(payload_version=version)
        async with ChatPerplexityLabs(
            transport="labs", base_url=emulator.base_url, protocol=protocol, max_retries=0
        ) as chat:
            message = await chat.ainvoke("q")
        assert message.content == ANSWER
        assert emulator.requests[-1]["version"] == version


async def test_a_server_that_moved_on_from_our_version_says_so() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(answer=ANSWER, versions=["2.20"])
        async with ChatPerplexityLabs(
            transport="labs", model="sonar", base_url=emulator.base_url, max_retries=0
        ) as chat:
            with pytest.raises(PerplexityLabsServerError) as info:
                await chat.ainvoke("q")
    assert info.value.server_message == "Unsupported payload version '2.18'; expected one of 2.20"


async def test_frames_recorded_from_the_emulator_show_the_evidence_shape() -> None:
    async with LabsEmulator() as emulator:
        emulator.script(answer=ANSWER, citations=URLS, chunk_size=26)
        payload = build_payload("sonar-pro", [{"role": "user", "content": "q"}])
        cassette = await record_cassette(emulator.base_url, [payload], provenance="synthetic")
    data = [frame.data for frame in cassette.interactions[0].frames]
    assert data[0] == {
        "output": ANSWER[:26],
        "citations": [],
        "chunks": [],
        "final": False,
        "elapsed_time": 0.05,
        "tokens_streamed": 6,
    }
    assert data[-1]["status"] == "completed"


def test_serve_is_paced_like_the_recorded_cassettes_unless_told_otherwise() -> None:
    # The synthetic cassettes space frames ~10 ms apart after ~50 ms: serve does the same.
    paced = build_parser().parse_args(["serve"])
    assert (paced.first_delay, paced.delay) == (0.05, 0.01)
    fast = build_parser().parse_args(["serve", "--delay", "0", "--first-delay", "0"])
    assert (fast.first_delay, fast.delay) == (0.0, 0.0)
    narrowed = build_parser().parse_args(["serve", "--allowed-origin", "https://a.example"])
    assert narrowed.allowed_origin == ["https://a.example"]


@pytest.mark.system  # `pplx-labs serve`'s own flags, in the process a user starts
async def test_serve_with_a_protocol_file_and_an_allowed_origin(tmp_path: Path) -> None:
    protocol_file = tmp_path / "labs.json"
    protocol_file.write_text('{"socketio_path": "/v9/io/", "progress_event": "{model}.answer"}')
    process = await asyncio.create_subprocess_exec(
        *command(
            "serve",
            "--port",
            "0",
            "--protocol",
            str(protocol_file),
            "--allowed-origin",
            "https://labs.perplexity.ai",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        base_url = (await asyncio.wait_for(process.stdout.readline(), 60)).decode().strip()
        async with aiohttp.ClientSession() as session:
            url = f"{base_url}/v9/io/?EIO=4&transport=polling"
            async with session.get(url, headers={"Origin": "https://www.perplexity.ai"}) as refused:
                assert refused.status == 400
        protocol = LabsProtocol.from_file(protocol_file)
        async with ChatPerplexityLabs(
            transport="labs", model="sonar", base_url=base_url, protocol=protocol, max_retries=0
        ) as chat:
            message = await chat.ainvoke("What is the capital of France?")
        assert message.content == made_up_answer("What is the capital of France?")
    finally:
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 60) == 130  # Ctrl+C: interrupted
