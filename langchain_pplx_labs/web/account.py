"""What the web app reports of a signed-in account's quota (``GET /rest/rate-limit/all``), read once and said in one line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import orjson

from langchain_pplx_labs.settings import ConnectionSettings
from langchain_pplx_labs.transports.base import HTTPTransport, Request, TransportError
from langchain_pplx_labs.web.codec import web_page_headers, web_request_headers

logger = logging.getLogger(__name__)

RATE_LIMITS = "/rest/rate-limit/all"
"""perplexity-web-mcp-cli 0.16.1 ``rate_limits.py`` reads it; its fields and their meaning are that client's."""
QUOTAS = (
    ("remaining_pro", "Pro Search"),
    ("remaining_research", "Deep Research"),
    ("remaining_labs", "Labs"),
    ("remaining_agentic_research", "Browser Agent"),
)
_READ_BYTES = 64 * 1024


async def read_quota(
    http: HTTPTransport, settings: ConnectionSettings, *, within: float
) -> dict[str, Any] | None:
    """The account's remaining quotas, or ``None`` when the web app gives none (anonymous, an error, nothing ``within`` seconds)."""
    url = settings.base_url.rstrip("/") + RATE_LIMITS
    headers = web_request_headers(
        {"Accept": "application/json", **web_page_headers(settings.protocol)},
        settings.headers,
        settings.protocol,
    )
    try:
        async with asyncio.timeout(within):
            async with await http.handle_request(Request("GET", url, headers)) as response:
                raw = await response.read(_READ_BYTES)
    except (TimeoutError, TransportError) as exc:
        logger.debug("the quota was not read: %r", exc)
        return None
    if response.status != 200:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def quota_summary(quota: Mapping[str, Any]) -> str:
    """``"Pro Search 300 left, Deep Research 20 left, ..."``: each remaining quota the answer has."""
    return ", ".join(
        f"{name} {quota[key]} left"
        for key, name in QUOTAS
        if isinstance(quota.get(key), int) and not isinstance(quota.get(key), bool)
    )
