"""One client of ``web_cpu.py`` in a process of its own: an answer streamed per line read, its CPU printed."""

# Run as a script, not a module: ``python benchmarks/_web_cpu_client.py KIND URL ROOT MODEL``. KIND is
# ``labs-web`` (``ChatPerplexityLabs(transport="web")``), ``labs-web-plain`` (the same with ``impersonate=None``), ``openai`` (langchain-openai's ``ChatOpenAI``) or
# ``floor`` (this version's model over the answer's events played from memory: URL is then a JSON file);
# ROOT goes first on ``sys.path``, so ``langchain_pplx_labs`` is imported from the source tree being measured
# (this checkout, or a copy of an older commit); it imports nothing else of this repository for that reason.
# Prints one JSON line when the model is built (where its package came from), then, for every line read on
# stdin, streams one answer to the question and prints one JSON line: the process's CPU (``process_time``:
# the process holds only the client), wall time, the bytes read from sockets and the SSE messages in them.

from __future__ import annotations

import _socket
import asyncio
import hashlib
import json
import socket
import sys
import time
from typing import Any

QUESTION = "What changed in the web client's stream handling, with sources?"

_received: list[bytes] = []


def _counting_recv(self: socket.socket, *args: Any) -> bytes:
    # asyncio's socket transports read with ``sock.recv``; counted here, under every HTTP client alike.
    data: bytes = _socket.socket.recv(self, *args)
    _received.append(data)
    return data


def _model(kind: str, url: str, model: str) -> Any:
    if kind == "floor":
        return _floor_model(url)
    if kind == "openai":
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(base_url=url, api_key="sk-local", model=model, max_retries=0)
    from langchain_pplx_labs import ChatPerplexityLabs

    if kind == "labs-web-plain":  # through aiohttp, as c2bcc78 (which had no impersonate field) always did
        return ChatPerplexityLabs(transport="web", base_url=url, model=model, impersonate=None)
    return ChatPerplexityLabs(transport="web", base_url=url, model=model)


def _floor_model(path: str) -> Any:
    """This version's model over a client that plays the answer's events from memory: the layer above the wire.

    ``path`` is a JSON file of ``{"pieces": [...], "sources": [...]}``; no socket is opened, so what is
    measured is what every answer costs above its events (LangChain's chunk handling and ours).
    """
    from langchain_pplx_labs import ChatPerplexityLabs
    from langchain_pplx_labs.events import TextDelta, finished

    with open(path, encoding="utf-8") as file:
        recorded = json.load(file)

    class Played:
        async def stream(self, payload: Any) -> Any:
            for piece in recorded["pieces"]:
                yield TextDelta(piece)
            yield finished(recorded["sources"])

        async def aclose(self) -> None:
            return None

    chat = ChatPerplexityLabs(transport="web", base_url="http://127.0.0.1:9")
    played = Played()
    chat.__dict__["_client"] = lambda: played  # in place of the pool: the events, and nothing under them
    return chat


async def _answer(chat: Any) -> dict[str, Any]:
    _received.clear()
    pieces: list[str] = []
    wall, cpu = time.perf_counter(), time.process_time()
    async for chunk in chat.astream(QUESTION):
        pieces.append(chunk.content)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    read = b"".join(_received)
    text = "".join(pieces)
    return {
        "cpu": cpu,
        "wall": wall,
        "bytes": len(read),
        "messages": read.count(b"\ndata:"),  # every SSE message has one data line; JSON escapes newlines
        "chars": len(text),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


async def _serve(kind: str, url: str, model: str) -> None:
    chat = _model(kind, url, model)
    package = sys.modules.get("langchain_pplx_labs" if kind != "openai" else "langchain_openai")
    print(json.dumps({"ready": True, "package": getattr(package, "__file__", None)}), flush=True)
    try:
        # Blocking reads between answers: nothing of the client has to run while the parent asks the others.
        while sys.stdin.readline():
            print(json.dumps(await _answer(chat)), flush=True)
    finally:
        if kind == "openai":
            await chat.root_async_client.close()  # the SDK client: the model does not close it
        elif kind != "floor":
            await chat.aclose()


def main(argv: list[str]) -> None:
    kind, url, root, model = argv
    # In place of this script's directory (``benchmarks/``, whose module names are not for the client).
    sys.path[0:1] = [root] if root else []
    socket.socket.recv = _counting_recv  # type: ignore[method-assign, assignment]
    asyncio.run(_serve(kind, url, model))


if __name__ == "__main__":
    main(sys.argv[1:])
