"""What the public record shows of Perplexity's web app, as data: names both our client and our emulator use.

Neither side owns these: the client's codec (``web/codec.py``) reads and writes them, the emulator
(``emulator/web.py``) serves them, and each does its own work with them, so a test of one never
passes because it shares the other's code. Each name says where it comes from (released clients'
sources, read with ``pip download`` or in their repositories; ``docs/web_transport.md`` has the
table). Names marked *ours* are conventions of this package, not of the web app.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WEB_END_EVENT = "end_of_stream"
"""SSE event after the last message: helallao/perplexity-ai and perplexity-subscription-mcp 0.1.2 stop at
``event: end_of_stream`` (its data is not in the record)."""

WEB_SESSION_COOKIES = ("__Secure-next-auth.session-token", "next-auth.session-token")
"""Cookies that make a web-app session signed in: next-auth's names over https and over http
(perplexity-webui-scraper 1.2.1 ``SESSION_COOKIE_NAME``, perplexity-web-mcp-cli 0.16.1)."""

BEARER_PREFIX = "Bearer "
"""``Authorization: Bearer <token>`` is a signed-in client too (pxcli 0.7.1 ``build_perplexity_headers``;
perplexity-webui-scraper 1.2.1 ``AUTH_BEARER_PREFIX``)."""

WEB_MODEL_ALIASES: Mapping[str, str] = {"r1-1776": "r1", "sonar": "experimental"}
"""Labs model names with a web ``model_preference`` in the record: gpt4free db299525 ``model_aliases``
(``r1-1776`` -> ``r1``); helallao ``config.py`` and perplexity-web-mcp-cli 0.16.1 ``Models.SONAR``
(``sonar`` -> ``experimental``). Other names travel unchanged."""

PLAN_MODELS = frozenset({"pplx_reasoning", "r1"})
"""Web models whose answers stream a plan (``pro_search_steps`` ``plan_block`` goals) before the text: the
"reasoning" mode of helallao 1.0.5, perplexity-subscription-mcp 0.1.2 and perplexity-notebooklm 0.5.0
(``pplx_reasoning`` its default, ``r1`` beside it); names ending in ``thinking`` (:func:`plans`) too."""


def plans(model_preference: str) -> bool:
    """Whether the web app streams a plan for ``model_preference``: :data:`PLAN_MODELS` and every
    ``*thinking`` model (``claude45sonnetthinking``, ``gpt5_thinking``, ...; the clients' model tables)."""
    return model_preference in PLAN_MODELS or model_preference.endswith("thinking")


BLOCK_USE_CASES = (
    "answer_modes",
    "media_items",
    "knowledge_cards",
    "inline_entity_cards",
    "place_widgets",
    "finance_widgets",
    "sports_widgets",
    "shopping_widgets",
    "jobs_widgets",
    "search_result_widgets",
    "clarification_responses",
    "inline_images",
    "inline_assets",
    "inline_finance_widgets",
    "placeholder_cards",
    "diff_blocks",
    "inline_knowledge_cards",
    "entity_group_v2",
    "refinement_filters",
    "canvas_mode",
)
"""``supported_block_use_cases`` as gpt4free sent it from 2025-10 (copied from a browser's request; 8.8.6,
2026-10, sends a longer list, ``diff_blocks`` still in it): ``diff_blocks`` asks for ``diff_block`` patches
instead of whole block snapshots."""

DIFF_BLOCKS = "diff_blocks"

STREAM_PARAMS: Mapping[str, Any] = {
    "use_schematized_api": True,
    "send_back_text_in_streaming_api": False,
    "supported_block_use_cases": BLOCK_USE_CASES,
}
"""The stream form an ask chooses, as the current record has it (2026-10): schematized ``blocks`` with
``diff_block`` patches (gpt4free 8.8.6; perplexity-webui-scraper 1.2.1 and pxcli 0.7.1 ask for blocks too,
without ``diff_blocks``). ``use_schematized_api: false`` / ``send_back_text_in_streaming_api: true``
(perplexity-web-mcp-cli 0.16.1, perplexity-notebooklm 0.5.0), or neither flag (helallao 1.0.5,
perplexity-subscription-mcp 0.1.2), gets the ``text`` form: see :func:`text_form`."""


def text_form(params: Mapping[str, Any]) -> bool:
    """Whether an ask's ``params`` choose the ``text`` form (a ``text`` field in every message) over blocks:
    ``send_back_text_in_streaming_api: true``, or no ``use_schematized_api: true``."""
    return (
        params.get("send_back_text_in_streaming_api") is True or params.get("use_schematized_api") is not True
    )


def diff_form(params: Mapping[str, Any]) -> bool:
    """Whether a blocks-form ask gets ``diff_block`` patches (``diff_blocks`` in its
    ``supported_block_use_cases``, as gpt4free sends) rather than whole block snapshots (pxcli,
    perplexity-webui-scraper 1.2.1, which send no such list)."""
    cases = params.get("supported_block_use_cases")
    return isinstance(cases, list | tuple) and DIFF_BLOCKS in cases


RATE_LIMITED = {"status": "failed", "error_code": "FREE_TIER_RATE_LIMITED", "experience": "upgrade"}
"""An ask refused for the free tier's rate limit, as henrique-coder's ``tests/test_parser.py`` (0ff78647)
has it (with ``final_sse_message: true``); perplexity-web-mcp-cli 0.16.1 matches ``error_code``."""

TRANSCRIPT_PREAMBLE = (
    "The conversation so far follows, oldest turn first. "
    "Follow any System turns and reply to the last User turn."
)
"""*Ours*: the first line of a multi-turn ``query_str`` (the web app takes one question; a conversation
travels as a transcript of ``[System]`` / ``[User]`` / ``[Assistant]`` turns, docs/web_transport.md)."""
TRANSCRIPT_ROLES = ("System", "User", "Assistant")
"""*Ours*: the transcript's turn headers, each alone on its line as ``[Label]``."""
