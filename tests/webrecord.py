"""The web app's asks and stream as the public record writes them, for judging the emulator without our client.

Nothing here imports the client's web codec or SSE parser: the request bodies are written out from
released clients' sources (docs/web_transport.md, "The evidence"), and :func:`frames` / :func:`read_stream`
read what the emulator sends the way those clients do (split on blank lines, ``data:`` JSON, JSON Patch
applied strictly), so a slip in the emulator cannot be repaired by the client's own leniency.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

ASK = "/rest/sse/perplexity_ask"

BROWSER_USE_CASES = [
    "answer_modes",
    "media_items",
    "knowledge_cards",
    "inline_entity_cards",
    "place_widgets",
    "finance_widgets",
    "prediction_market_widgets",
    "sports_widgets",
    "flight_status_widgets",
    "news_widgets",
    "shopping_widgets",
    "jobs_widgets",
    "search_result_widgets",
    "inline_images",
    "inline_assets",
    "placeholder_cards",
    "diff_blocks",
    "inline_knowledge_cards",
    "entity_group_v2",
    "refinement_filters",
    "canvas_mode",
    "maps_preview",
    "answer_tabs",
    "price_comparison_widgets",
    "preserve_latex",
    "generic_onboarding_widgets",
    "in_context_suggestions",
    "inline_claims",
]


def diff_ask(query: str, model: str = "turbo", **params: Any) -> dict[str, Any]:
    """gpt4free 8.8.6's first ask (2026-10): blocks with ``diff_blocks``, ``mode: copilot``."""
    body: dict[str, Any] = {
        "attachments": [],
        "language": "en-US",
        "timezone": "America/Los_Angeles",
        "search_focus": "internet",
        "sources": ["web"],
        "search_recency_filter": None,
        "frontend_uuid": "f-1",
        "mode": "copilot",
        "model_preference": model,
        "is_related_query": False,
        "is_sponsored": False,
        "frontend_context_uuid": "c-1",
        "prompt_source": "user",
        "query_source": "home",
        "is_incognito": False,
        "time_from_first_type": 18361,
        "local_search_enabled": False,
        "use_schematized_api": True,
        "send_back_text_in_streaming_api": False,
        "supported_block_use_cases": BROWSER_USE_CASES,
        "client_coordinates": None,
        "mentions": [],
        "dsl_query": query,
        "skip_search_enabled": True,
        "is_nav_suggestions_disabled": False,
        "source": "default",
        "always_search_override": False,
        "override_no_search": False,
        "version": "2.18",
    }
    return {"params": body | params, "query_str": query}


def block_ask(query: str, model: str = "turbo", **params: Any) -> dict[str, Any]:
    """perplexity-webui-scraper 1.2.1's ask (``build_payload``, 2026-10): blocks, no ``supported_block_use_cases``."""
    body: dict[str, Any] = {
        "attachments": [],
        "language": "en-US",
        "timezone": "UTC",
        "client_coordinates": None,
        "sources": ["web"],
        "frontend_uuid": "f-2",
        "model_preference": model,
        "mode": "copilot",
        "search_focus": "internet",
        "skip_search_enabled": False,
        "search_recency_filter": None,
        "is_incognito": True,
        "use_schematized_api": True,
        "local_search_enabled": False,
        "prompt_source": "user",
        "query_source": "home",
        "send_back_text_in_streaming_api": False,
        "version": "2.18",
        "frontend_context_uuid": "c-2",
    }
    return {"params": body | params, "query_str": query}


def text_ask(query: str, model: str = "pplx_pro", **params: Any) -> dict[str, Any]:
    """perplexity-notebooklm 0.5.0's ask (``cited_search.py``, "confirmed live"): the ``text`` form."""
    body: dict[str, Any] = {
        "attachments": [],
        "language": "en-US",
        "timezone": None,
        "client_coordinates": None,
        "sources": ["web"],
        "model_preference": model,
        "mode": "copilot",
        "search_focus": "internet",
        "search_recency_filter": None,
        "is_incognito": True,
        "use_schematized_api": False,
        "local_search_enabled": False,
        "prompt_source": "user",
        "send_back_text_in_streaming_api": True,
        "last_backend_uuid": None,
        "version": "2.18",
    }
    return {"params": body | params, "query_str": query}


def plain_ask(query: str, model: str = "turbo", **params: Any) -> dict[str, Any]:
    """helallao's perplexity-api 1.0.5 ask (also perplexity-subscription-mcp 0.1.2): neither stream flag."""
    body: dict[str, Any] = {
        "attachments": [],
        "frontend_context_uuid": "c-3",
        "frontend_uuid": "f-3",
        "is_incognito": False,
        "language": "en-US",
        "last_backend_uuid": None,
        "mode": "concise" if model == "turbo" else "copilot",
        "model_preference": model,
        "source": "default",
        "sources": ["web"],
        "version": "2.18",
    }
    return {"query_str": query, "params": body | params}


BROWSER_HEADERS = {
    "accept": "text/event-stream",
    "accept-language": "en-US,en;q=0.9",
    "content-type": "application/json",
    "origin": "https://www.perplexity.ai",
    "referer": "https://www.perplexity.ai/",
    "x-perplexity-request-reason": "perplexity-query-state-provider",
    "x-request-id": "f-1",
}
"""gpt4free 8.8.6's ask headers (without its user-agent)."""

_BLANK_LINE = re.compile(rb"\r\n\r\n|\n\n")


def frames(raw: bytes) -> list[tuple[str, Any]]:
    """``(event, data)`` per SSE message of ``raw``, as helallao's client splits it (on a blank line) and
    reads each ``event:`` / ``data:`` line; ``data`` is the JSON value when it is JSON, else the string."""
    found: list[tuple[str, Any]] = []
    for block in _BLANK_LINE.split(raw):
        event, data = "message", []
        for line in block.decode().replace("\r\n", "\n").split("\n"):
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            text = "\n".join(data)
            try:
                found.append((event, json.loads(text)))
            except ValueError:
                found.append((event, text))
    return found


class PatchError(AssertionError):
    """A JSON Patch operation that does not apply as RFC 6902 says."""


def apply_patch(document: Any, operation: dict[str, Any]) -> Any:
    """Apply one RFC 6902 ``add`` / ``replace`` / ``remove`` strictly: an array index past the end, or a
    missing parent, raises :class:`PatchError` (no repair)."""
    op, path, value = operation["op"], operation["path"], copy.deepcopy(operation.get("value"))
    if path == "":
        if op not in ("add", "replace"):
            raise PatchError(f"{op} at the root")
        return value
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    parent = document
    for token in tokens[:-1]:
        try:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        except (KeyError, IndexError, ValueError) as exc:
            raise PatchError(f"{path}: no {token}") from exc
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        limit = len(parent) if op == "add" else len(parent) - 1
        if not 0 <= index <= limit:
            raise PatchError(f"{op} {path}: index {index} past {len(parent)} items")
        if op == "add":
            parent.insert(index, value)
        elif op == "replace":
            parent[index] = value
        else:
            del parent[index]
    elif isinstance(parent, dict):
        if op in ("replace", "remove") and last not in parent:
            raise PatchError(f"{op} {path}: no {last}")
        if op == "remove":
            del parent[last]
        else:
            parent[last] = value
    else:
        raise PatchError(f"{path}: parent is not a container")
    return document


def read_stream(raw: bytes) -> dict[str, Any]:
    """What a strict reader of the record takes from ``raw``: ``answer`` (the answer block's last whole
    text), ``plan`` (the plan's goals), ``sources`` (web results of either block, or of the ``text``
    form), ``final`` (a message said it was the last), ``failed`` (a failed message as sent, if any)."""
    blocks: dict[tuple[str, str], Any] = {}
    answer, plan, sources, final, failed = "", "", [], False, None
    for event, data in frames(raw):
        if event != "message" or not isinstance(data, dict):
            continue
        if data.get("status") == "failed" or "error_code" in data:
            failed = data
            break
        for block in data.get("blocks", []):
            usage = block.get("intended_usage", "")
            for name, value in block.items():
                if name == "diff_block":
                    key = (usage, value["field"])
                    document = blocks.get(key, {})
                    for operation in value["patches"]:
                        document = apply_patch(document, operation)
                    blocks[key] = document
                elif name.endswith("_block"):
                    blocks[usage, name] = copy.deepcopy(value)
        if "text" in data:
            text = json.loads(data["text"])
            steps = (
                text
                if isinstance(text, list)
                else [{"step_type": "FINAL", "content": {"answer": data["text"]}}]
            )
            for step in steps:
                content = step.get("content", {})
                if step.get("step_type") == "SEARCH_RESULTS":
                    sources = [r["url"] for r in content["web_results"]]
                elif step.get("step_type") == "FINAL":
                    inner = json.loads(content["answer"])
                    answer = inner["answer"]
                    sources = [r["url"] for r in inner.get("web_results", [])] or sources
        final = final or data.get("final_sse_message") is True or data.get("final") is True
        for (_, field), document in blocks.items():
            if field == "markdown_block":
                answer = document.get("answer") or "".join(document.get("chunks", []))
            elif field == "workflow_block":
                payload = document["steps"][0]["items"][0]["payload"]["text_payload"]
                answer = payload.get("text") or "".join(payload.get("chunks", []))
            elif field == "plan_block":
                plan = "\n".join(document.get("goals", []))
            elif field in ("web_result_block", "sources_mode_block") and document.get("web_results"):
                sources = [r["url"] for r in document["web_results"]]
    return {"answer": answer, "plan": plan, "sources": sources, "final": final, "failed": failed}
