"""Model profiles (langchain-core's ``ModelProfile``) for the Labs and web models: what each one takes and gives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_type_hints

from langchain_pplx_labs.protocol import (
    KNOWN_MODELS,
    REASONING_MODELS,
    WEB_DEFAULT_MODEL,
    WEB_MODELS,
    WEB_REASONING_MODELS,
)

# Context windows Perplexity documents for its API models (models.dev data, as shipped in
# langchain-perplexity's profiles: sonar, sonar-pro, sonar-reasoning-pro). r1-1776 and
# sonar-reasoning are not in that data; 128k is the window Perplexity gave for both. The
# playground publishes no limits of its own, so these only cap max_input_tokens.
DOCUMENTED_CONTEXT_TOKENS: dict[str, int] = {
    "r1-1776": 128_000,
    "sonar": 128_000,
    "sonar-pro": 200_000,
    "sonar-reasoning": 128_000,
    "sonar-reasoning-pro": 128_000,
}
# For a model name we have never seen: the smallest documented window.
UNKNOWN_MODEL_CONTEXT_TOKENS = min(DOCUMENTED_CONTEXT_TOKENS.values())
# The usual ~4 characters per token estimate; usage_metadata's input tokens use it too.
CHARS_PER_TOKEN = 4

# What every Labs model shares: text in, text out; tools and JSON answers are prompted and parsed
# on the client (tool_calling, tool_choice), which is not provider-native structured output: with
# structured_output False, langchain's create_agent picks ToolStrategy (prompted tool calls, with
# retries on a bad answer) rather than ProviderStrategy (one bare-JSON answer, no retry).
_COMMON: dict[str, Any] = {
    "text_inputs": True,
    "image_inputs": False,
    "image_url_inputs": False,
    "pdf_inputs": False,
    "audio_inputs": False,
    "video_inputs": False,
    "image_tool_message": False,
    "pdf_tool_message": False,
    "text_outputs": True,
    "image_outputs": False,
    "audio_outputs": False,
    "video_outputs": False,
    "tool_calling": True,
    "tool_choice": True,
    "tool_call_streaming": True,
    "structured_output": False,
    "attachment": False,
    "temperature": False,
}


class DefaultProfile(dict[str, Any]):
    """A profile made from the model's settings, not given by the user: remade when they change."""


def default_profile(
    model: str, max_input_chars: int | None, *, listed_reasoning: bool | None = None
) -> DefaultProfile:
    """The profile of model ``model`` for a client that sends at most ``max_input_chars``.

    ``max_input_tokens`` is the smaller of the model's documented context window and
    ``max_input_chars`` / 4 (an estimate: Labs counts no input tokens), since the client
    refuses longer conversations before sending them. ``listed_reasoning``: whether the web app's
    live model list names it as a reasoning model (``None``: not listed, or the list not read), which
    then decides ``reasoning_output`` over the record's names.
    """
    window = DOCUMENTED_CONTEXT_TOKENS.get(model, UNKNOWN_MODEL_CONTEXT_TOKENS)
    if max_input_chars is not None:
        window = min(window, max_input_chars // CHARS_PER_TOKEN)
    known_reasoning = model in REASONING_MODELS or model in WEB_REASONING_MODELS or model.endswith("thinking")
    profile = {
        **_COMMON,
        "max_input_tokens": window,
        "reasoning_output": known_reasoning if listed_reasoning is None else listed_reasoning,
    }
    # ``auto`` names no model (the account picks one), so it gets no name, as an unknown model.
    web_name = model in WEB_MODELS and model != WEB_DEFAULT_MODEL
    if model in KNOWN_MODELS or web_name or listed_reasoning is not None:
        profile["name"] = model
    return DefaultProfile(_known_keys(profile))


def drop_default_profile(values: Any) -> Any:
    """A model's constructor input without a ``DefaultProfile``, so one is made afresh for its settings.

    ``configurable_fields(model=...)`` rebuilds a model from another's fields, profile included;
    a profile the user gave is kept.
    """
    if isinstance(values, dict) and isinstance(values.get("profile"), DefaultProfile):
        return {key: value for key, value in values.items() if key != "profile"}
    return values


def profile_outdated(update: Mapping[str, Any] | None, profile: object) -> bool:
    """Whether a copy with ``update`` needs its profile made again: a default one, whose model or size bound changed."""
    changed = set(update or ()) & {"model", "max_input_chars"}
    return bool(changed) and "profile" not in (update or {}) and isinstance(profile, DefaultProfile)


def _known_keys(profile: dict[str, Any]) -> dict[str, Any]:
    """``profile`` without keys the installed langchain-core's ``ModelProfile`` lacks (it warns on those)."""
    from langchain_core.language_models.model_profile import ModelProfile

    declared = get_type_hints(ModelProfile)
    return {key: value for key, value in profile.items() if key in declared}
