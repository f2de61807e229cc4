"""LangChain chat model for Perplexity's web app and the retired Perplexity Labs playground."""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_pplx_labs._lazy import lazy_names

if TYPE_CHECKING:  # mypy and IDEs see the names; at run time they load on first use (PEP 562)
    from langchain_pplx_labs.chat_models import ChatPerplexityLabs
    from langchain_pplx_labs.errors import (
        PerplexityLabsAttachmentError,
        PerplexityLabsAttachmentsNotSupportedError,
        PerplexityLabsBlockedError,
        PerplexityLabsConnectionError,
        PerplexityLabsCookieError,
        PerplexityLabsDisconnectedError,
        PerplexityLabsError,
        PerplexityLabsInputError,
        PerplexityLabsModelAccessError,
        PerplexityLabsNotFoundError,
        PerplexityLabsProtocolError,
        PerplexityLabsRateLimitError,
        PerplexityLabsRetiredError,
        PerplexityLabsServerError,
        PerplexityLabsSessionExpiredError,
        PerplexityLabsSignInError,
        PerplexityLabsSilentError,
        PerplexityLabsTimeoutError,
    )
    from langchain_pplx_labs.protocol import KNOWN_MODELS, LabsProtocol

from langchain_pplx_labs._version import __version__ as __version__

# Public name -> module that defines it. Importing the package stays cheap (the pytest plugin and the
# CLI import it), and langchain_core, aiohttp and socketio load only when a name is first used.
_LAZY = {
    "ChatPerplexityLabs": "langchain_pplx_labs.chat_models",
    "KNOWN_MODELS": "langchain_pplx_labs.protocol",
    "LabsProtocol": "langchain_pplx_labs.protocol",
    "PerplexityLabsAttachmentError": "langchain_pplx_labs.errors",
    "PerplexityLabsAttachmentsNotSupportedError": "langchain_pplx_labs.errors",
    "PerplexityLabsBlockedError": "langchain_pplx_labs.errors",
    "PerplexityLabsConnectionError": "langchain_pplx_labs.errors",
    "PerplexityLabsDisconnectedError": "langchain_pplx_labs.errors",
    "PerplexityLabsError": "langchain_pplx_labs.errors",
    "PerplexityLabsInputError": "langchain_pplx_labs.errors",
    "PerplexityLabsModelAccessError": "langchain_pplx_labs.errors",
    "PerplexityLabsNotFoundError": "langchain_pplx_labs.errors",
    "PerplexityLabsProtocolError": "langchain_pplx_labs.errors",
    "PerplexityLabsServerError": "langchain_pplx_labs.errors",
    "PerplexityLabsTimeoutError": "langchain_pplx_labs.errors",
    "PerplexityLabsRateLimitError": "langchain_pplx_labs.errors",
    "PerplexityLabsRetiredError": "langchain_pplx_labs.errors",
    "PerplexityLabsSilentError": "langchain_pplx_labs.errors",
    "PerplexityLabsCookieError": "langchain_pplx_labs.errors",
    "PerplexityLabsSessionExpiredError": "langchain_pplx_labs.errors",
    "PerplexityLabsSignInError": "langchain_pplx_labs.errors",
}

__all__ = [
    "KNOWN_MODELS",
    "ChatPerplexityLabs",
    "LabsProtocol",
    "PerplexityLabsAttachmentError",
    "PerplexityLabsAttachmentsNotSupportedError",
    "PerplexityLabsBlockedError",
    "PerplexityLabsConnectionError",
    "PerplexityLabsCookieError",
    "PerplexityLabsDisconnectedError",
    "PerplexityLabsError",
    "PerplexityLabsInputError",
    "PerplexityLabsModelAccessError",
    "PerplexityLabsNotFoundError",
    "PerplexityLabsProtocolError",
    "PerplexityLabsRateLimitError",
    "PerplexityLabsRetiredError",
    "PerplexityLabsServerError",
    "PerplexityLabsSessionExpiredError",
    "PerplexityLabsSignInError",
    "PerplexityLabsSilentError",
    "PerplexityLabsTimeoutError",
    "__version__",
]

__getattr__, __dir__ = lazy_names(globals(), _LAZY)
