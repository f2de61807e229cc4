"""What both services make of an HTTP refusal alike: Cloudflare's block and a rate limit (each service reads the rest)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from langchain_pplx_labs.errors import (
    LABS,
    PerplexityLabsBlockedError,
    PerplexityLabsError,
    PerplexityLabsRateLimitError,
    excerpt_of,
)

# What a Cloudflare block page says, in its title or body (lower-cased).
BLOCK_MARKERS = ("cloudflare", "cf-chl", "challenge-platform", "just a moment", "attention required")


def is_cloudflare_block(status: int, headers: Mapping[str, str], body: str) -> bool:
    """A Cloudflare signature: ``cf-mitigated``, or a 403/429/503 with ``cf-ray``/Cloudflare's server or page."""
    if "cf-mitigated" in headers:
        return True
    if status not in (403, 429, 503):
        return False  # Cloudflare fronts every Labs answer, its 404s too: cf-ray alone is no block
    lowered = body.lower()
    return (
        "cf-ray" in headers
        or headers.get("server", "").lower() == "cloudflare"
        or any(marker in lowered for marker in BLOCK_MARKERS)
    )


def shared_refusal(
    url: str,
    status: int,
    headers: Mapping[str, str],
    body: str,
    *,
    blocked: str,
    behind: str,
    service: str = LABS,
) -> PerplexityLabsError | None:
    """Cloudflare's block (``blocked`` says what, ``behind`` which service) or HTTP 429's rate limit, else ``None``
    (a redirect, a page that is not the service's, an auth failure: each service's classifier reads those)."""
    if is_cloudflare_block(status, headers, body):
        page = (
            "a Cloudflare challenge page" if "cf-chl" in body or "challenge" in body.lower() else "Cloudflare"
        )
        return PerplexityLabsBlockedError(
            f"{blocked}: HTTP {status} from {page} at {url}. {behind} sits behind Cloudflare, which refuses "
            "many non-browser clients; try again later, with browser cookies (cookies=...), from another "
            "network, or through a proxy (proxy=...)",
            status=status,
            excerpt=excerpt_of(body.strip()),
        )
    if status == 429:
        code, text = _json_detail(body)
        return PerplexityLabsRateLimitError(
            f"HTTP 429 at {url}: {text or excerpt_of(body.strip()) or 'Too Many Requests'}",
            error_code=code,
            service=service,
        )
    return None


def _json_detail(body: str) -> tuple[str, str]:
    """The ``error_code`` and message of a JSON error body, where it has them."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    code = next((data[key] for key in ("error_code", "code") if isinstance(data.get(key), str)), "")
    text = next(
        (data[key] for key in ("text", "message", "detail", "error") if isinstance(data.get(key), str)), ""
    )
    return code, text
