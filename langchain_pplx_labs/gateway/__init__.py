"""``pplx-labs gateway``: Perplexity Labs behind the OpenAI and Perplexity chat-completions API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_pplx_labs.gateway.app import GatewaySettings, app_factory, create_app

__all__ = ["GatewaySettings", "app_factory", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (for its errors, or on the way to ``gateway.app``) loads no aiohttp or LangChain.
    if name in __all__:
        from langchain_pplx_labs.gateway import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
