"""The web app's model list: ``GET /rest/models/config`` read as typed rows (or the record's list), and who may ask each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from langchain_pplx_labs.errors import PerplexityLabsModelAccessError
from langchain_pplx_labs.protocol import WEB_MODEL_TIERS, WEB_MODELS, WEB_MODELS_PATH, WEB_REASONING_MODELS
from langchain_pplx_labs.settings import ConnectionSettings
from langchain_pplx_labs.transports.base import HTTPTransport, Request, TransportError
from langchain_pplx_labs.web.codec import web_page_headers, web_request_headers

logger = logging.getLogger(__name__)

# The row keys that name a model, in the picker's order (perplexity-web-mcp-cli 0.16.1 catalog.py).
_MODEL_KEYS = ("non_reasoning_model", "reasoning_model", "fast_model", "text_only_model")
# Rows of the browser agent and "computer" picker, not models an ask can name (the same client skips them).
_NOT_ASK_PREFIXES = ("comet_", "pplx_asi_")
# Tiers by rank: the values of ``subscription_tier`` the record shows (perplexity-web-mcp-cli's
# ``SubscriptionTier``: none, pro, max, education_pro); Education Pro ranked as Pro is ours.
_TIER_RANK = {"none": 0, "pro": 1, "education_pro": 1, "max": 2}
# A list bigger than this is not the picker: read no further (the emulator's is under 2 KB).
_MAX_LIST_BYTES = 1024 * 1024
# Names that let the account pick: never refused, since the web app chooses what the session has.
_ACCOUNT_PICKS = frozenset({"auto", "perplexity"})

ModelSource = Literal["live", "fallback"]


@dataclass(frozen=True)
class WebModel:
    """One model of the web app's picker, as ``ChatPerplexityLabs(model=identifier)`` asks it."""

    identifier: str
    """The ``model_preference`` value (``turbo``, ``claude45sonnetthinking``, ...)."""
    label: str
    """The picker's name for it (``Best``, ``Claude Sonnet 4.5 Thinking``)."""
    mode: str
    """The mode it answers in (``copilot``, ...); ``""`` when not said."""
    provider: str
    """Whose model it is (``perplexity``, ``anthropic``, ...); ``""`` when not said."""
    subscription_tier: str | None
    """The tier it needs (``pro``, ``max``); ``None``: any session, anonymous ones included."""
    is_default: bool
    """The picker's default."""
    reasoning: bool
    """It thinks first: its row names it as the ``reasoning_model``."""


@dataclass(frozen=True)
class ModelList:
    """The web app's models, and which list they are: read ``live`` from the web app, or the record's
    ``fallback`` (:data:`~langchain_pplx_labs.protocol.WEB_MODELS`) because the read failed (``reason``)."""

    models: tuple[WebModel, ...]
    source: ModelSource
    reason: str = ""

    def __iter__(self) -> Iterator[WebModel]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def get(self, identifier: str) -> WebModel | None:
        """The row of ``identifier``, ``None`` when the list does not name it."""
        return next((model for model in self.models if model.identifier == identifier), None)

    @property
    def identifiers(self) -> tuple[str, ...]:
        return tuple(model.identifier for model in self.models)


def parse_models_config(payload: object) -> tuple[WebModel, ...]:
    """The ask models of a ``/rest/models/config`` answer: each identifier of its ``config`` rows once, in
    order, described by its ``models`` entry (``label``, ``mode``, ``provider``) and its row (the tier,
    the default, and whether it is the row's reasoning model). Anything malformed is skipped."""
    if not isinstance(payload, Mapping):
        return ()
    described = payload.get("models")
    described = described if isinstance(described, Mapping) else {}
    rows = payload.get("config")
    found: dict[str, WebModel] = {}
    for row in rows if isinstance(rows, list) else ():
        if not isinstance(row, Mapping):
            continue
        named = [(key, row.get(key)) for key in _MODEL_KEYS]
        names = [(key, value) for key, value in named if isinstance(value, str) and value]
        if any(value.startswith(_NOT_ASK_PREFIXES) for _, value in names):
            continue
        for key, identifier in names:
            if identifier not in found:
                found[identifier] = _row_model(identifier, key, row, described.get(identifier))
    return tuple(found.values())


def _row_model(identifier: str, key: str, row: Mapping[str, Any], described: object) -> WebModel:
    meta = described if isinstance(described, Mapping) else {}
    tier = row.get("subscription_tier")
    return WebModel(
        identifier=identifier,
        label=str(meta.get("label") or row.get("label") or identifier),
        mode=str(meta.get("mode") or ""),
        provider=str(meta.get("provider") or ""),
        subscription_tier=str(tier) if tier else None,
        is_default=bool(row.get("is_default")),
        reasoning=key == "reasoning_model",
    )


def fallback_list(reason: str) -> ModelList:
    """The record's list (:data:`WEB_MODELS` and :data:`WEB_MODEL_TIERS`), for when the live one was not read."""
    models = tuple(
        WebModel(
            identifier=name,
            label=name,
            mode="",
            provider="perplexity" if name in ("auto", "turbo", "pplx_pro", "experimental") else "",
            subscription_tier=WEB_MODEL_TIERS.get(name),
            is_default=name == "auto",
            reasoning=name in WEB_REASONING_MODELS,
        )
        for name in WEB_MODELS
    )
    return ModelList(models, "fallback", reason)


async def read_model_list(http: HTTPTransport, settings: ConnectionSettings) -> ModelList:
    """``GET /rest/models/config`` with the session's headers and cookies, bounded by the connect timeout
    as a whole; any failure gives :func:`fallback_list` saying why (a cancel still cancels)."""
    url = settings.base_url.rstrip("/") + WEB_MODELS_PATH
    protocol = settings.protocol
    headers = web_request_headers(
        {"Accept": "application/json", **web_page_headers(protocol)}, settings.headers, protocol
    )
    seconds = settings.timeouts.connect
    try:
        async with asyncio.timeout(seconds):
            async with await http.handle_request(Request("GET", url, headers)) as response:
                if response.status != 200:
                    return _fell_back(f"{url} answered HTTP {response.status}")
                body = await response.read(_MAX_LIST_BYTES)
        models = parse_models_config(orjson.loads(body))
    except TimeoutError:
        return _fell_back(f"{url} gave no model list within the connect timeout ({seconds:g} s)")
    except TransportError as exc:
        return _fell_back(f"{url} could not be read ({type(exc).__name__}: {exc})")
    except orjson.JSONDecodeError:
        return _fell_back(f"{url} did not answer JSON")
    if not models:
        return _fell_back(f"{url} listed no models")
    return ModelList(models, "live")


def _fell_back(reason: str) -> ModelList:
    logger.info("the web app's model list was not read (%s); using the record's list", reason)
    return fallback_list(reason)


def session_tier(session: object) -> str | None:
    """The signed-in user's ``subscription_tier`` from an ``/api/auth/session`` answer (perplexity-webui-scraper
    1.2.1 ``AccountUser``), ``None`` when it says none."""
    user = session.get("user") if isinstance(session, Mapping) else None
    tier = user.get("subscription_tier") if isinstance(user, Mapping) else None
    return str(tier) if tier else None


def may_ask(required: str | None, *, signed_in: bool, tier: str | None) -> bool:
    """Whether a session (signed in or not, on ``tier``) may ask a model that needs ``required``.

    Only what the list and the session say for sure refuses: a tier either side does not rank, or a
    signed-in session that names no tier, is left to the web app.
    """
    if required is None or required == "none":
        return True
    if not signed_in:
        return False
    if tier is None or required not in _TIER_RANK or tier not in _TIER_RANK:
        return True
    return _TIER_RANK[tier] >= _TIER_RANK[required]


def access_refusal(
    model: str, preference: str, models: ModelList, *, signed_in: bool, tier: str | None
) -> PerplexityLabsModelAccessError | None:
    """The error for asking ``model`` (``preference`` on the web) on this session, ``None`` when it may.

    Judged on the live list only: the record's tiers are its clients' reading, and the web app decides.
    """
    if models.source != "live" or model in _ACCOUNT_PICKS:
        return None
    row = models.get(preference)
    if row is None or may_ask(row.subscription_tier, signed_in=signed_in, tier=tier):
        return None
    required = row.subscription_tier or ""
    usable = (
        "auto",
        *(m.identifier for m in models if may_ask(m.subscription_tier, signed_in=signed_in, tier=tier)),
    )
    named = repr(model) if model == preference else f"{model!r} ({preference!r} on the web app)"
    if signed_in:
        session = f"this session is signed in on the {tier!r} tier"
        fix = f"sign in with an account on the {required!r} tier"
    else:
        session = "this session is anonymous"
        fix = "sign in (cookies=... with a session token)"
    return PerplexityLabsModelAccessError(
        f"Model {named} needs a signed-in session on the {required!r} tier (the web app's model list: "
        f"subscription_tier {required!r}); {session}. Not sent: {fix}, or ask a model this session has: "
        f"{', '.join(usable)}",
        model=model,
        required_tier=required,
        session_tier=tier if signed_in else None,
        usable=usable,
    )
