"""What both recorders (Labs and web) raise when the server to record gives no HTTP answer at all."""

from __future__ import annotations

from langchain_pplx_labs.errors import PerplexityLabsError


class UpstreamUnreachableError(PerplexityLabsError):
    """The server to record could not be reached at all (no HTTP answer), so there is nothing to save."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


def describe_error(exc: BaseException) -> str:
    """An exception's text, or its type's name when it has none (for one-line reasons)."""
    return str(exc) or type(exc).__name__
