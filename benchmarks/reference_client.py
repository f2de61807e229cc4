"""The old reference flow, re-implemented faithfully: new connection + 4-step polling handshake per question."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import aiohttp

HEADERS = {
    "Origin": "https://labs.perplexity.ai",
    "Referer": "https://labs.perplexity.ai/",
    "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0.0.0 Safari/537.36",
}


@dataclass
class ReferenceAnswer:
    text: str
    ttft: float
    total: float


async def reference_ask(base_url: str, question: str, model: str = "sonar") -> ReferenceAnswer:
    """Ask once the way the reference client did (LABS_PROTOCOL.md, handshake steps 1-5)."""
    started = time.perf_counter()
    t = secrets.token_hex(4)
    polling = f"{base_url}/socket.io/?EIO=4&transport=polling&t={t}"
    # A fresh session per question: new TCP connection each time, as the reference did.
    async with aiohttp.ClientSession(headers=HEADERS) as session:
        async with session.get(polling) as response:
            opened = json.loads((await response.text())[1:])
        sid = opened["sid"]
        async with session.post(f"{polling}&sid={sid}", data='40{"jwt":"anonymous-ask-user"}') as response:
            assert (await response.text()) == "OK"
        async with session.get(f"{polling}&sid={sid}") as response:
            assert (await response.text()).startswith("40")
        ws_url = f"{base_url}/socket.io/?EIO=4&transport=websocket&sid={sid}".replace("http", "ws", 1)
        async with session.ws_connect(ws_url) as ws:
            await ws.send_str("2probe")
            assert (await ws.receive_str()) == "3probe"
            await ws.send_str("5")
            message = [
                "perplexity_labs",
                {
                    "version": "2.18",
                    "source": "default",
                    "model": model,
                    "messages": [{"role": "user", "content": question}],
                },
            ]
            await ws.send_str("42" + json.dumps(message))
            return await _read_answer(ws, started)


async def _read_answer(ws: aiohttp.ClientWebSocketResponse, started: float) -> ReferenceAnswer:
    last = 0
    parts: list[str] = []
    ttft = 0.0
    while True:
        raw = await ws.receive_str()
        if raw == "2":
            await ws.send_str("3")
            continue
        if not raw.startswith("42"):
            continue  # 6 (NOOP) and anything else the reference ignored
        event, data = json.loads(raw[2:])
        if not event.endswith("_query_progress"):
            continue
        output = data.get("output", "")
        if len(output) > last:
            if not ttft:
                ttft = time.perf_counter() - started
            parts.append(output[last:])
            last = len(output)
        if data.get("final") or data.get("status") == "failed":
            return ReferenceAnswer("".join(parts), ttft, time.perf_counter() - started)
