"""The old reference client's wire flow, by hand with raw aiohttp, works unchanged against the emulator."""

from __future__ import annotations

import json
import secrets
from typing import Any

import aiohttp
import pytest

from langchain_pplx_labs.emulator import LabsEmulator

HEADERS = {
    "Origin": "https://labs.perplexity.ai",
    "Referer": "https://labs.perplexity.ai/",
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
}
ANSWER = "The capital of France is Paris [1]."
CITATIONS = ["https://en.wikipedia.org/wiki/Paris"]


async def polling_handshake(session: aiohttp.ClientSession, base_url: str) -> str:
    """Steps 1-3 of LABS_PROTOCOL.md: open, CONNECT with the anonymous jwt, read the CONNECT ack."""
    t = secrets.token_hex(4)
    url = f"{base_url}/socket.io/?EIO=4&transport=polling&t={t}"
    async with session.get(url, headers=HEADERS) as response:
        assert response.status == 200
        opened = await response.text()
    assert opened.startswith("0")
    handshake = json.loads(opened[1:])
    assert handshake["upgrades"] == ["websocket"]
    sid: str = handshake["sid"]
    url = f"{url}&sid={sid}"
    async with session.post(url, data='40{"jwt":"anonymous-ask-user"}', headers=HEADERS) as response:
        assert await response.text() == "OK"
    async with session.get(url, headers=HEADERS) as response:
        ack = await response.text()
    assert ack.startswith("40")
    assert "sid" in json.loads(ack.split("\x1e")[0][2:])
    return sid


async def read_answer(ws: aiohttp.ClientWebSocketResponse, model: str) -> list[dict[str, Any]]:
    """Step 5's reply: answer pings, skip NOOPs, collect progress frames until ``final``."""
    frames: list[dict[str, Any]] = []
    while True:
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        packet: str = message.data
        if packet == "2":
            await ws.send_str("3")
            continue
        if not packet.startswith("42"):
            continue  # "6" NOOP and anything else the reference ignored
        event, data = json.loads(packet[2:])
        assert event == f"{model}_query_progress"
        frames.append(data)
        if data.get("final") or data.get("status") == "failed":
            return frames


async def ask_like_the_reference(base_url: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Steps 1-5: polling handshake, probe and upgrade to WebSocket, send the question, read to the end."""
    async with aiohttp.ClientSession() as session:
        sid = await polling_handshake(session, base_url)
        ws_url = f"{base_url.replace('http', 'ws', 1)}/socket.io/?EIO=4&transport=websocket&sid={sid}"
        async with session.ws_connect(ws_url, headers=HEADERS) as ws:
            await ws.send_str("2probe")
            assert (await ws.receive(timeout=10)).data == "3probe"
            await ws.send_str("5")
            await ws.send_str("42" + json.dumps(["perplexity_labs", payload]))
            return await read_answer(ws, payload["model"])


def _question(model: str, content: str) -> dict[str, Any]:
    """The ``perplexity_labs`` payload spelled out as LABS_PROTOCOL.md shows it (not built by our code)."""
    return {
        "version": "2.18",
        "source": "default",
        "model": model,
        "messages": [{"role": "user", "content": content}],
    }


async def test_reference_polling_then_upgrade_flow_gets_a_cumulative_answer(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS, chunk_size=6)
    payload = _question("sonar-pro", "What is the capital of France?")
    frames = await ask_like_the_reference(base_url, payload)
    outputs = [f["output"] for f in frames]
    assert outputs[-1] == ANSWER
    assert all(ANSWER.startswith(o) for o in outputs)
    assert len(outputs) == len(ANSWER) // 6 + 1
    # The reference's own delta logic: output[len(previous):] re-assembles the answer.
    rebuilt, previous = "", ""
    for output in outputs:
        rebuilt += output[len(previous) :]
        previous = output
    assert rebuilt == ANSWER
    assert frames[-1]["citations"] == CITATIONS
    assert frames[-1]["final"] is True
    assert emulator.handshakes["polling"] == 1
    assert emulator.requests == [payload]


async def test_reference_flow_reports_failed_status_verbatim(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(fail="Error in processing query")
    payload = _question("sonar-reasoning-pro", "Q")
    frames = await ask_like_the_reference(base_url, payload)
    assert frames[-1] == {"status": "failed", "text": "Error in processing query"}


async def test_direct_websocket_connect_is_accepted(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS)
    ws_url = f"{base_url.replace('http', 'ws', 1)}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, headers=HEADERS) as ws:
        opened = await ws.receive(timeout=10)
        assert opened.data.startswith("0")
        await ws.send_str('40{"jwt":"anonymous-ask-user"}')
        assert (await ws.receive(timeout=10)).data.startswith("40")
        payload = _question("sonar", "Q")
        await ws.send_str("42" + json.dumps(["perplexity_labs", payload]))
        frames = await read_answer(ws, "sonar")
    assert frames[-1]["output"] == ANSWER
    assert emulator.handshakes["websocket"] == 1


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_emulator_rejects_a_foreign_origin(
    base_url: str, emulator: LabsEmulator, transport: str
) -> None:
    headers = {**HEADERS, "Origin": "https://evil.example"}
    url = f"{base_url}/socket.io/?EIO=4&transport={transport}"
    async with aiohttp.ClientSession() as session:
        if transport == "polling":
            async with session.get(url, headers=headers) as response:
                assert response.status == 400
                assert "not an accepted origin" in await response.text()
        else:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(url.replace("http", "ws", 1), headers=headers)
            assert caught.value.status == 400
        # The playground's own origin passes the same check.
        async with session.get(f"{base_url}/socket.io/?EIO=4&transport=polling", headers=HEADERS) as response:
            assert response.status == 200


async def test_connect_without_jwt_is_refused(base_url: str, emulator: LabsEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        url = f"{base_url}/socket.io/?EIO=4&transport=polling&t={secrets.token_hex(4)}"
        async with session.get(url, headers=HEADERS) as response:
            sid = json.loads((await response.text())[1:])["sid"]
        url = f"{url}&sid={sid}"
        async with session.post(url, data="40", headers=HEADERS) as response:
            assert await response.text() == "OK"
        async with session.get(url, headers=HEADERS) as response:
            refusal = await response.text()
    assert refusal.startswith("44")
    assert "authentication required" in refusal
    assert emulator.connections == 0
