"""The public web-app client's flow, written anew: new session, session check and full JSON decode per question.

The flow is the one gpt4free's ``g4f/Provider/Perplexity.py`` follows (summarised in
docs/web_transport.md, "The evidence"): a new HTTP session for every question, ``GET
/api/auth/session`` before every ask, then the ``POST``; every ``data:`` line of the stream decoded
whole with ``json.loads``; the ``markdown_block`` patches read as answer text, a value that starts
with the text so far taken as cumulative and re-sliced, a value the answer already ends with
dropped. Our own code, not a copy; it reads the emulator's schematized stream.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

USER_AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
SESSION_PATH = "/api/auth/session"
ASK_PATH = "/rest/sse/perplexity_ask"


@dataclass
class WebReferenceAnswer:
    text: str
    ttft: float
    total: float


def _body(question: str, model: str) -> dict[str, Any]:
    """The anonymous body of the evidence (2025-10): concise mode, a new visitor and request id."""
    frontend_uuid = str(uuid.uuid4())
    return {
        "params": {
            "attachments": [],
            "language": "en-US",
            "timezone": "UTC",
            "search_focus": "internet",
            "sources": ["web"],
            "frontend_uuid": frontend_uuid,
            "frontend_context_uuid": str(uuid.uuid4()),
            "visitor_id": str(uuid.uuid4()),
            "mode": "concise",
            "model_preference": model,
            "is_related_query": False,
            "is_sponsored": False,
            "prompt_source": "user",
            "query_source": "home",
            "is_incognito": False,
            "use_schematized_api": True,
            "send_back_text_in_streaming_api": False,
            "supported_block_use_cases": ["answer_modes", "diff_blocks", "media_items", "web_results"],
            "dsl_query": question,
            "source": "default",
            "version": "2.18",
        },
        "query_str": question,
    }


def _answer_texts(message: dict[str, Any]) -> list[str]:
    """The answer-text values of one message's ``markdown_block`` patches (``/progress`` skipped)."""
    texts: list[str] = []
    for block in message.get("blocks") or []:
        diff = block.get("diff_block") or {}
        if diff.get("field") != "markdown_block":
            continue
        for patch in diff.get("patches") or []:
            if patch.get("path") == "/progress":
                continue
            value = patch.get("value")
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, dict):
                if isinstance(value.get("answer"), str):
                    texts.append(value["answer"])
                elif isinstance(value.get("chunks"), list):
                    texts.append("".join(str(chunk) for chunk in value["chunks"]))
    return texts


async def web_reference_ask(base_url: str, question: str, model: str = "turbo") -> WebReferenceAnswer:
    """Ask once the way the public client does; the answer, time to its first text and to the stream's end."""
    started = time.perf_counter()
    headers = {
        "User-Agent": USER_AGENT,
        "Origin": "https://www.perplexity.ai",
        "Referer": "https://www.perplexity.ai/",
    }
    body = _body(question, model)
    answer = ""
    ttft = 0.0
    # A new session per question: a new TCP connection each time.
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(base_url + SESSION_PATH) as response:
            response.raise_for_status()
            json.loads(await response.text() or "{}")  # the user id, if signed in
        ask_headers = {
            "accept": "text/event-stream",
            "content-type": "application/json",
            "x-perplexity-request-reason": "perplexity-query-state-provider",
            "x-request-id": body["params"]["frontend_uuid"],
        }
        async with session.post(base_url + ASK_PATH, data=json.dumps(body), headers=ask_headers) as response:
            response.raise_for_status()
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                message = json.loads(data)
                if not isinstance(message, dict):
                    continue
                for text in _answer_texts(message):
                    if text.startswith(answer):
                        new = text[len(answer) :]  # cumulative: re-slice past what we have
                    elif answer.endswith(text):
                        new = ""  # a repeated chunk
                    else:
                        new = text  # a delta
                    if new:
                        if not ttft:
                            ttft = time.perf_counter() - started
                        answer += new
    return WebReferenceAnswer(answer, ttft, time.perf_counter() - started)
