"""Client CPU per streamed answer: ChatPerplexityLabs vs langchain-openai's ChatOpenAI on a local SSE server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from benchmarks._common import Row, print_table
from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread

CHUNKS = 500
PIECE = "lorem ip"  # 8 characters a chunk: the same text, in the same number of chunks, for both


def _sse_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class SSEServerThread:
    """The OpenAI-style server on its own loop and thread, so the measured thread runs only the client.

    Its ``/v1/chat/completions`` streams ``pieces`` (default: ``CHUNKS`` deltas of ``PIECE``), one SSE
    chunk each, after the role chunk and before the finish chunk and ``[DONE]``."""

    def __init__(self, pieces: Sequence[str] = (PIECE,) * CHUNKS) -> None:
        # Encoded once: the server's own work is not what is measured, and less of it keeps the runs short.
        self._stream = [
            _sse_chunk({"role": "assistant", "content": ""}),
            *(_sse_chunk({"content": piece}) for piece in pieces),
            _sse_chunk({}, finish="stop"),
            b"data: [DONE]\n\n",
        ]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sse-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}/v1"

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for message in self._stream:
            await response.write(message)
        await response.write_eof()
        return response

    def __enter__(self) -> SSEServerThread:
        self._thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _cpu_of(chat: Any) -> float:
    # thread_time: only this thread (the servers run in threads of their own).
    started = time.thread_time()
    received = []
    async for chunk in chat.astream("peer question"):
        received.append(chunk.content)
    spent = time.thread_time() - started
    assert "".join(received) == PIECE * CHUNKS
    return spent


async def _measure(labs_url: str, openai_url: str, reps: int) -> tuple[list[float], list[float]]:
    from langchain_openai import ChatOpenAI

    openai_chat = ChatOpenAI(base_url=openai_url, api_key="sk-local", model="gpt-bench", max_retries=0)
    ours: list[float] = []
    theirs: list[float] = []
    async with ChatPerplexityLabs(transport="labs", base_url=labs_url, model="sonar") as labs_chat:
        await labs_chat.awarmup()
        await _cpu_of(openai_chat)  # untimed: first-use costs are not per-answer CPU
        await _cpu_of(labs_chat)
        for _ in range(reps):  # interleaved, so machine noise hits both alike
            theirs.append(await _cpu_of(openai_chat))
            ours.append(await _cpu_of(labs_chat))
    await openai_chat.root_async_client.close()  # the SDK client: the model does not close it
    return theirs, ours


def run(quick: bool, rtt: float) -> None:
    del rtt  # CPU, not latency: straight to both servers
    reps = 3 if quick else 21
    with EmulatorThread() as labs, SSEServerThread() as sse:
        labs.call(lambda: labs.emulator.script(answer=PIECE * CHUNKS, chunk_size=len(PIECE), citations=[]))
        theirs, ours = asyncio.run(_measure(labs.base_url, sse.base_url, reps))
    reference = Row("", theirs).median
    print_table(
        f"Client CPU per streamed answer, {CHUNKS} chunks of the same text (lower is better)",
        [
            Row(
                "langchain-openai ChatOpenAI.astream, local OpenAI-style SSE server",
                theirs,
                baseline=reference,
            ),
            Row("ChatPerplexityLabs.astream, Labs emulator", ours, baseline=reference),
        ],
    )
