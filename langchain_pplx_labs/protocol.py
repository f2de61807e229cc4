"""The protocol as data (``LabsProtocol``: both services' names and paths), model names, and the question payload (no I/O)."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from langchain_pplx_labs.errors import (
    PerplexityLabsInputError,
)

DEFAULT_BASE_URL = "https://www.perplexity.ai"
DEFAULT_MODEL = "r1-1776"
"""The model a Labs question (``transport="labs"``) asks when none is named."""
WEB_DEFAULT_MODEL = "auto"
"""The model a web question (``transport="web"``) asks when none is named: the account picks (``turbo`` anonymous)."""
SEARCH_SOURCES: dict[str, str] = {"web": "web", "academic": "scholar", "sec": "edgar", "social": "social"}
"""ChatPerplexity's ``search_mode`` -> the web app's ``sources`` entry (perplexity-webui-scraper 1.2.1 ``SourceFocus``)."""
RECENCY_FILTERS = ("day", "week", "month", "year")
"""ChatPerplexity's ``search_recency_filter`` values, sent as the web app's ``search_recency_filter``."""

WEB_MODELS = (
    "auto",
    "turbo",
    "pplx_pro",
    "experimental",
    "pplx_reasoning",
    "r1",
    "pplx_alpha",
    "claude45sonnet",
    "gpt5",
)
"""Model names for ``transport="web"`` in the public clients (docs/web_transport.md, "Models"): ``auto``
lets the account pick, the rest are the web app's ``model_preference`` values; other names are accepted too."""


WEB_MODELS_PATH = "/rest/models/config"
"""The web app's model list (its model picker): ``models`` by identifier and ``config`` rows, each with its
``subscription_tier`` (perplexity-web-mcp-cli 0.16.1 ``catalog.py``, ``constants.ENDPOINT_MODELS_CONFIG``)."""
WEB_MODEL_TIERS: dict[str, str | None] = {
    "auto": None,
    "turbo": None,
    "pplx_pro": "pro",
    "experimental": "pro",
    "pplx_reasoning": "pro",
    "r1": "pro",
    "pplx_alpha": "pro",
    "claude45sonnet": "pro",
    "gpt5": "pro",
}
"""The tier each of :data:`WEB_MODELS` needs by the record, listed when the live list cannot be read: ``turbo``
answers anonymous sessions (gpt4free 9931e874), ``pplx_pro`` only Pro ones (perplexity-webui-scraper 1.1.0),
the rest ``pro`` as perplexity-web-mcp-cli 0.16.1 ``shared.py`` has them (``minimum_tier`` "pro")."""
WEB_REASONING_MODELS = frozenset({"pplx_reasoning", "r1"})
"""Web models that stream a plan (reasoning) in the record, besides every ``*thinking`` name."""
LABS_ONLY_MODELS = frozenset({"sonar-pro", "sonar-reasoning", "sonar-reasoning-pro"})
"""Labs (and the paid API's) names with no web name in any source: over the web they are sent as given."""


def default_model(transport: str | None) -> str:
    """The model asked when none is named: each service's own (Labs' default does not exist on the web app)."""
    return DEFAULT_MODEL if transport == "labs" else WEB_DEFAULT_MODEL


KNOWN_MODELS = ("r1-1776", "sonar-pro", "sonar", "sonar-reasoning", "sonar-reasoning-pro")
"""Labs models seen on the playground in 2025; other names are accepted too."""
REASONING_MODELS = frozenset({"r1-1776", "sonar-reasoning", "sonar-reasoning-pro"})
# These models start their output already inside a think section, without "<think>".
IMPLICIT_THINK_MODELS = frozenset({"r1-1776"})
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")

Role = Literal["system", "user", "assistant"]


class LabsMessage(TypedDict):
    """One chat turn as the Labs payload carries it."""

    role: Role
    content: str


def validate_model_name(model: str, transport: str | None = None) -> str:
    """Return ``model`` if it is a plausible model name, else raise naming the transport's own models."""
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        service, known = ("web", WEB_MODELS) if transport == "web" else ("Labs", KNOWN_MODELS)
        raise PerplexityLabsInputError(
            f"Invalid {service} model name {model!r}: use letters, digits and . _ : / - "
            f"(known {service} models: {', '.join(known)})",
            param="model",
        )
    return model


_MODEL_SLOT = "{model}"
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%-]+")


class LabsProtocol(BaseModel):
    """The playground's names and constants as data: when Labs changes one, change it here, no release.

    ``progress_event`` is a template: ``{model}`` stands for the model asked. Load one from
    JSON with :meth:`from_file`; the emulator serves whatever protocol it is given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    socketio_path: str = "/socket.io/"
    """Path of the Socket.IO endpoint under the base URL."""
    query_event: str = "perplexity_labs"
    """Event the question is sent as."""
    progress_event: str = "{model}_query_progress"
    """Event the answer frames arrive on; ``{model}`` is the model's name."""
    payload_version: str = "2.18"
    """``version`` field of the question payload."""
    source: str = "default"
    """``source`` field of the question payload."""
    origin: str = "https://labs.perplexity.ai"
    """``Origin`` header of the handshake; ``""`` sends none."""
    referer: str = "https://labs.perplexity.ai/"
    """``Referer`` header of the handshake; ``""`` sends none."""
    auth: dict[str, Any] = {"jwt": "anonymous-ask-user"}
    """Payload of the Socket.IO CONNECT."""
    web_path: str = "/rest/sse/perplexity_ask"
    """Path of the web app's Server-Sent Events ask endpoint (``transport="web"``)."""
    web_session_path: str = "/api/auth/session"
    """Path of the web app's session check: ``{}`` anonymous, ``{"user": {"id": ...}}`` signed in."""
    web_origin: str = "https://www.perplexity.ai"
    """``Origin`` header of web asks; ``""`` sends none."""
    web_referer: str = "https://www.perplexity.ai/"
    """``Referer`` header of web asks; ``""`` sends none."""
    web_version: str = "2.18"
    """``params.version`` of the web ask body."""
    web_params: dict[str, Any] = {}
    """Extra ``params`` of the web ask body, laid over the defaults (e.g. ``{"mode": "copilot"}``)."""
    web_client_headers: dict[str, str] = {"x-app-apiclient": "default", "x-app-apiversion": "2.18"}
    """Headers the web app's own client sends on every request (the session check too): perplexity-web-mcp
    added these two "to avoid Cloudflare 403" (its PR #15, 2026-07-21). ``{}`` sends none."""

    @field_validator("socketio_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        segments = [part for part in value.split("/") if part]
        if not segments or not all(_PATH_SEGMENT.fullmatch(part) for part in segments):
            raise ValueError(f"socketio_path {value!r} is not a URL path such as '/socket.io/'")
        return "/" + "/".join(segments) + "/"

    @field_validator("web_path", "web_session_path")
    @classmethod
    def _check_web_path(cls, value: str) -> str:
        first, *segments = value.split("/")
        if first or not all(_PATH_SEGMENT.fullmatch(part) for part in segments if part):
            raise ValueError(f"{value!r} is not a URL path such as '/rest/sse/perplexity_ask'")
        return value

    @field_validator("query_event")
    @classmethod
    def _check_event(cls, value: str) -> str:
        if not value:
            raise ValueError("query_event must not be empty")
        return value

    @field_validator("progress_event")
    @classmethod
    def _check_template(cls, value: str) -> str:
        if not value or value.count(_MODEL_SLOT) > 1:
            raise ValueError(f"progress_event {value!r} must be an event name with at most one {_MODEL_SLOT}")
        return value

    def __hash__(self) -> int:
        # Frozen, but ``auth`` is a dict: hash its canonical JSON so settings can key pools.
        fields = (self.socketio_path, self.query_event, self.progress_event, self.payload_version)
        labs = (*fields, self.source, self.origin, self.referer, _canonical(self.auth))
        web = (self.web_path, self.web_session_path, self.web_origin, self.web_referer, self.web_version)
        return hash((*labs, *web, _canonical(self.web_params), _canonical(self.web_client_headers)))

    @classmethod
    def from_file(cls, path: str | Path) -> LabsProtocol:
        """Read a protocol from a JSON file holding any of the fields (the rest keep their defaults)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PerplexityLabsInputError(f"{path}: not JSON ({exc})") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'protocol'}: "
                f"{err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()[:3]
            )
            raise PerplexityLabsInputError(f"{path}: not a LabsProtocol ({problems})") from None

    @property
    def engineio_path(self) -> str:
        """The path as python-socketio takes it (no outer slashes)."""
        return self.socketio_path.strip("/")

    def endpoint(self, base_url: str, transport: str = "polling") -> str:
        """The Engine.IO URL under ``base_url`` for a new session on ``transport``."""
        return f"{base_url.rstrip('/')}{self.socketio_path}?EIO=4&transport={transport}"

    def progress_event_for(self, model: str) -> str:
        """Name of the event the server streams answers for ``model`` on."""
        return self.progress_event.replace(_MODEL_SLOT, model)

    @property
    def is_progress_event(self) -> Callable[[str], bool]:
        """A fast test for progress event names (any model), built once per template."""
        return _progress_matcher(self.progress_event)

    @property
    def headers(self) -> dict[str, str]:
        """The ``Origin`` and ``Referer`` headers this protocol sends."""
        pairs = (("Origin", self.origin), ("Referer", self.referer))
        return {name: value for name, value in pairs if value}


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@functools.lru_cache(maxsize=32)
def _progress_matcher(template: str) -> Callable[[str], bool]:
    # Called for every frame on the hot path: a bare endswith for the usual "{model}<suffix>".
    prefix, slot, suffix = template.partition(_MODEL_SLOT)
    if not slot:
        return template.__eq__
    if not prefix:
        return lambda event: event.endswith(suffix) and len(event) > len(suffix)
    return lambda event: (
        len(event) > len(template) - len(slot) and event.startswith(prefix) and event.endswith(suffix)
    )


DEFAULT_PROTOCOL = LabsProtocol()


def progress_event(model: str, protocol: LabsProtocol = DEFAULT_PROTOCOL) -> str:
    """Name of the event the server streams answers for ``model`` on."""
    return protocol.progress_event_for(model)


def is_progress_event(event: str, protocol: LabsProtocol = DEFAULT_PROTOCOL) -> bool:
    """True for progress event names (``<model>_query_progress`` by default)."""
    return protocol.is_progress_event(event)


def build_payload(
    model: str,
    messages: Sequence[LabsMessage],
    *,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
    version: str | None = None,
    source: str | None = None,
    max_input_chars: int | None = None,
) -> dict[str, Any]:
    """Build the question payload (``version`` and ``source`` from ``protocol``), checked before it is sent."""
    validate_model_name(model)
    if not messages:
        raise PerplexityLabsInputError("Cannot send an empty conversation: give at least one message")
    merged = _merge_consecutive_assistant(messages)
    if max_input_chars is not None:
        size = sum(len(m["content"]) for m in merged)
        if size > max_input_chars:
            raise PerplexityLabsInputError(
                f"Conversation is {size} characters, over the max_input_chars limit of "
                f"{max_input_chars}; shorten it or raise the limit"
            )
    return {
        "version": protocol.payload_version if version is None else version,
        "source": protocol.source if source is None else source,
        "model": model,
        "messages": merged,
    }


def _merge_consecutive_assistant(messages: Sequence[LabsMessage]) -> list[LabsMessage]:
    """Join back-to-back assistant turns, which the playground does not accept."""
    merged: list[LabsMessage] = []
    for message in messages:
        if merged and message["role"] == "assistant" and merged[-1]["role"] == "assistant":
            previous = merged[-1]
            merged[-1] = {"role": "assistant", "content": previous["content"] + "\n\n" + message["content"]}
        else:
            merged.append({"role": message["role"], "content": message["content"]})
    return merged
