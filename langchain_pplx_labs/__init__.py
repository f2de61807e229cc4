"""LangChain chat model for the Perplexity Labs playground."""

from langchain_pplx_labs.chat_models import ChatPerplexityLabs
from langchain_pplx_labs.errors import (
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsInputError,
    PerplexityLabsNotFoundError,
    PerplexityLabsProtocolError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.protocol import KNOWN_MODELS, LabsProtocol

__version__ = "0.1.0"

__all__ = [
    "KNOWN_MODELS",
    "ChatPerplexityLabs",
    "LabsProtocol",
    "PerplexityLabsBlockedError",
    "PerplexityLabsConnectionError",
    "PerplexityLabsDisconnectedError",
    "PerplexityLabsError",
    "PerplexityLabsInputError",
    "PerplexityLabsNotFoundError",
    "PerplexityLabsProtocolError",
    "PerplexityLabsServerError",
    "PerplexityLabsTimeoutError",
    "__version__",
]
