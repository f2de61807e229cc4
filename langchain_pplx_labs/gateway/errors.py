"""Errors in OpenAI's shape: which status, type and code each failure answers with."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from langchain_core.messages import AIMessageChunk
from pydantic import ValidationError

from langchain_pplx_labs.errors import (
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsError,
    PerplexityLabsInputError,
    PerplexityLabsModelAccessError,
    PerplexityLabsNotFoundError,
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsRetiredError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)


class GatewayError(Exception):
    """A failure the gateway answers with ``status`` and ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.retry = retry
        """``False``: asking again cannot help; the answer says ``x-should-retry: false`` (the OpenAI SDK obeys)."""

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI clients parse into their typed errors."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    """A 400 naming the request field at fault."""
    return GatewayError(400, message, param=param, code=code)


def from_labs(exc: PerplexityLabsError) -> GatewayError:
    """The answer to a Labs failure: 400 bad input (404 a model the session may not ask), 429 rate limit, 502 Labs failed, retired, blocked or not there, 504 timeout."""
    message = with_notes(exc)
    if isinstance(exc, PerplexityLabsModelAccessError):
        # OpenAI's answer to a model the key may not use ("does not exist or you do not have access to it").
        return GatewayError(404, message, param="model", code="model_not_found")
    if isinstance(exc, PerplexityLabsInputError):
        # The model's "raise the limit" means its max_input_chars: the gateway's operator sets it by a flag.
        message = message.replace("raise the limit", "raise the limit (pplx-labs gateway --max-input-chars)")
        return GatewayError(400, message, param=exc.param, code="invalid_request")
    if isinstance(exc, PerplexityLabsTimeoutError):
        # A silent Labs (PerplexityLabsSilentError) stays the timeout it is; its note says it may be retired.
        return GatewayError(504, message, type="timeout_error", code=f"labs_{exc.which}_timeout")
    if isinstance(exc, PerplexityLabsRetiredError):
        # Never retried by the package: a client asking again meets the same answer.
        return GatewayError(
            502, _with_evidence(message, exc), type="upstream_error", code="labs_retired", retry=False
        )
    if isinstance(exc, PerplexityLabsBlockedError):
        return GatewayError(502, message, type="upstream_error", code="labs_blocked")
    if isinstance(exc, PerplexityLabsRateLimitError):
        # OpenAI's own shape for a rate limit (the SDK raises RateLimitError); not retried at once, as
        # the package does not retry it: asking again only prolongs the limit.
        return GatewayError(429, message, type="requests", code="rate_limit_exceeded", retry=False)
    if isinstance(exc, PerplexityLabsServerError):
        # The server's own text is the message: it is what the caller needs to see.
        return GatewayError(502, message, type="upstream_error", code="labs_failed")
    if isinstance(exc, PerplexityLabsNotFoundError):
        return GatewayError(502, message, type="upstream_error", code="labs_not_found")
    if isinstance(exc, PerplexityLabsProtocolError):
        return GatewayError(502, message, type="upstream_error", code="labs_protocol_error")
    if isinstance(exc, PerplexityLabsConnectionError):
        return GatewayError(502, message, type="upstream_error", code="labs_connection_error")
    return GatewayError(502, message, type="upstream_error", code="labs_error")


def with_notes(exc: BaseException) -> str:
    """The message (the server's words) and the notes added to it (a silent Labs' retirement note), as one line."""
    notes = [
        " ".join(note.split())
        for note in getattr(exc, "__notes__", ())
        if isinstance(note, str) and note.strip()
    ]
    return "; ".join([str(exc) or type(exc).__name__, *notes])


def _with_evidence(message: str, exc: PerplexityLabsRetiredError) -> str:
    return message if exc.evidence in message else f"{message} ({exc.evidence})"


def internal() -> GatewayError:
    """A bug on our side: the details go to the log, not to the caller."""
    return GatewayError(
        500, "The gateway failed unexpectedly; see its log", type="server_error", code="internal_error"
    )


async def next_chunk(chunks: AsyncGenerator[AIMessageChunk, None]) -> AIMessageChunk | None:
    """The answer's next chunk, ``None`` at its end; a failure of the service as the gateway's own error."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return None
    except PerplexityLabsError as exc:
        raise from_labs(exc) from exc


def field_error(exc: ValidationError) -> GatewayError:
    """A request body's first validation error as a 400 naming its field (``input.0.content``), as the
    Anthropic and Responses doors word it."""
    error = exc.errors()[0]
    if error["type"] in ("json_invalid", "json_type"):
        return invalid(f"The request body is not valid JSON: {error['msg']}")
    param = ".".join(
        str(part) for part in error["loc"] if isinstance(part, int) or not is_type_name(str(part))
    )
    if error["type"] == "missing":
        return invalid(f"{param}: Field required", param)
    return invalid(f"{param}: {error['msg']}", param)


def is_type_name(part: str) -> bool:
    """Whether a validation error's path part is a union member's name (``str``, ``list[Part]``), not a field."""
    return part == "str" or "[" in part or part[:1].isupper()
