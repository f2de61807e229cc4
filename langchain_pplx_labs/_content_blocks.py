"""Standard (v1) content blocks for Labs answers: text with citation spans, and reasoning."""

from __future__ import annotations

import re
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages import content as types
from langchain_core.messages.block_translators import register_translator

PROVIDER = "perplexity_labs"
_MARKER = re.compile(r"\[(\d{1,3})\]")


def citation_annotations(text: str, sources: list[dict[str, Any]]) -> list[types.Citation]:
    """One ``citation`` per ``[n]`` marker in ``text`` that names an existing source (1-based)."""
    annotations: list[types.Citation] = []
    for match in _MARKER.finditer(text):
        number = int(match.group(1))
        if not 1 <= number <= len(sources):
            continue
        source = sources[number - 1]
        citation = types.Citation(
            type="citation",
            url=str(source["url"]),
            start_index=match.start(),
            end_index=match.end(),
            cited_text=match.group(0),
        )
        if source.get("title"):
            citation["title"] = str(source["title"])
        annotations.append(citation)
    return annotations


def _sources(message: AIMessage) -> list[dict[str, Any]]:
    metadata = message.response_metadata
    if metadata.get("search_results"):
        return list(metadata["search_results"])
    urls = metadata.get("citations") or message.additional_kwargs.get("citations") or []
    return [{"url": url} for url in urls]


def _translate(message: AIMessage) -> list[types.ContentBlock]:
    sources = _sources(message)
    blocks: list[types.ContentBlock] = []
    reasoning = message.additional_kwargs.get("reasoning_content")
    if isinstance(message.content, list):
        # Already v1 blocks (the closing chunk of a v1 stream): keep the spans it carries.
        blocks.extend(block for block in message.content if isinstance(block, dict))  # type: ignore[misc]
        listed = {block.get("type") for block in blocks}
        if not listed & {"tool_call", "invalid_tool_call"}:
            blocks.extend(_tool_call_blocks(message))
        return blocks
    if reasoning:
        blocks.append(types.ReasoningContentBlock(type="reasoning", reasoning=reasoning))
    if message.content or not blocks:
        text_block = types.TextContentBlock(type="text", text=message.content)
        annotations = citation_annotations(message.content, sources)
        if annotations:
            text_block["annotations"] = list(annotations)
        blocks.append(text_block)
    blocks.extend(_tool_call_blocks(message))
    return blocks


def _tool_call_blocks(message: AIMessage) -> list[types.ContentBlock]:
    blocks: list[types.ContentBlock] = [
        types.ToolCall(type="tool_call", id=call["id"], name=call["name"], args=call["args"])
        for call in message.tool_calls
    ]
    blocks.extend(
        types.InvalidToolCall(
            type="invalid_tool_call", id=call["id"], name=call["name"], args=call["args"], error=call["error"]
        )
        for call in message.invalid_tool_calls
    )
    return blocks


def _translate_chunk(chunk: AIMessageChunk) -> list[types.ContentBlock]:
    blocks = _translate(chunk)
    # A delta with neither text nor reasoning (the closing chunk) has no blocks of its own.
    return [b for b in blocks if b.get("type") != "text" or b.get("text") or b.get("annotations")]


def annotate_last_chunk(message: BaseMessage, answer: str) -> None:
    """Give a v1 stream's closing chunk the citation spans over the whole answer, which no delta knows.

    The spans ride on the chunk's own text block (empty unless text was held back to the end,
    as the tool-call parser does), which LangChain merges into the answer's text block.
    """
    if not isinstance(message, AIMessageChunk) or message.chunk_position != "last":
        return
    annotations = citation_annotations(answer, _sources(message))
    if annotations:
        text = message.content if isinstance(message.content, str) else message.text
        message.content = [types.TextContentBlock(type="text", text=text, annotations=list(annotations))]  # type: ignore[list-item]


register_translator(PROVIDER, _translate, _translate_chunk)
