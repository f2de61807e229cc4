"""Pure Labs protocol: request payloads, progress frames, deltas, reasoning and sources (no I/O)."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from langchain_pplx_labs.errors import (
    PerplexityLabsInputError,
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsServerError,
    excerpt_of,
)
from langchain_pplx_labs.events import ReasoningDelta, Source, StreamEvent, TextDelta, finished

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://www.perplexity.ai"
DEFAULT_MODEL = "r1-1776"
"""The model a Labs question (``transport="labs"``) asks when none is named."""
WEB_DEFAULT_MODEL = "auto"
"""The model a web question (``transport="web"``) asks when none is named: the account picks (``turbo`` anonymous)."""
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


def validate_model_name(model: str) -> str:
    """Return ``model`` if it is a plausible Labs model name, else raise."""
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise PerplexityLabsInputError(
            f"Invalid Labs model name {model!r}: use letters, digits and . _ : / - "
            f"(known models: {', '.join(KNOWN_MODELS)})"
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
        return hash((*labs, *web, _canonical(self.web_params)))

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


class ProgressFrame(BaseModel):
    """One ``<model>_query_progress`` frame; ``output`` is the whole answer so far."""

    model_config = ConfigDict(extra="allow")

    output: str = ""
    citations: list[str | Source] = []
    final: bool = False
    status: str | None = None
    text: str | None = None
    error_code: str | int | None = None
    """Why a failed frame failed, as a code (the main site sends ``FREE_TIER_RATE_LIMITED``)."""
    elapsed_time: float | None = None
    tokens_streamed: int | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def rate_limited(self) -> bool:
        """A failed frame whose ``error_code`` names a rate limit."""
        return self.failed and "RATE_LIMIT" in str(self.error_code or "").upper()


def failure_of(frame: ProgressFrame, *, model: str, partial_content: str = "") -> PerplexityLabsServerError:
    """The typed error for a ``status: failed`` frame, with the server's own text and ``error_code``.

    A rate limit (``error_code`` such as ``FREE_TIER_RATE_LIMITED``) is its own error, never retried.
    """
    if frame.rate_limited:
        return PerplexityLabsRateLimitError(
            frame.text or "", error_code=str(frame.error_code), model=model, partial_content=partial_content
        )
    text = frame.text or (f"error_code {frame.error_code}" if frame.error_code is not None else "")
    return PerplexityLabsServerError(
        text or "(the server gave no message)", model=model, partial_content=partial_content
    )


def parse_frame(data: object) -> ProgressFrame:
    """Validate the data of a progress event, raising a protocol error on a bad shape."""
    if not isinstance(data, dict):
        raise PerplexityLabsProtocolError(
            f"Progress frame is a {type(data).__name__}, not a JSON object", excerpt=excerpt_of(data)
        )
    try:
        return ProgressFrame.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise PerplexityLabsProtocolError(
            f"Malformed progress frame ({problems})", excerpt=excerpt_of(data)
        ) from None


_START, _REASONING, _ANSWER = "start", "reasoning", "answer"


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could begin ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class StreamDecoder:
    """Turn cumulative progress frames into text, reasoning and final events.

    Each frame's ``output`` repeats the whole answer so far; the decoder keeps
    what it has classified and emits only the new part, so a frame that repeats
    or shrinks the output never duplicates text. ``<think>`` sections become
    :class:`ReasoningDelta` events, including for models that omit the opening tag.
    """

    def __init__(self, model: str, *, keep_reasoning: bool = True) -> None:
        self.model = model
        self.keep_reasoning = keep_reasoning
        self._implicit_think = model in IMPLICIT_THINK_MODELS
        self._mode = _START
        self._seen = ""
        self._pos = 0
        self._skip_space = True
        self._saw_close = False
        self._reasoning_parts: list[str] = []
        self._answer_parts: list[str] = []
        self._citations: list[str | Source] = []
        self.finished = False

    @property
    def answer_so_far(self) -> str:
        return "".join(self._answer_parts)

    def feed(self, frame: ProgressFrame) -> list[StreamEvent]:
        """Consume one frame and return the events it produces."""
        if self.finished:
            return []
        if frame.failed:
            raise failure_of(frame, model=self.model, partial_content=self.answer_so_far)
        self._accept_output(frame.output)
        events = self._advance(final=frame.final)
        if frame.citations:
            self._citations = frame.citations  # a later frame may leave them out
        if frame.final:
            events.extend(self._finish(frame))
        return events

    def _accept_output(self, output: str) -> None:
        seen = self._seen
        if len(output) >= len(seen) and output.startswith(seen):
            self._seen = output
        elif seen.startswith(output):
            return  # a repeated or shortened frame: nothing new
        else:
            # The server rewrote text we already emitted: keep ours, take the rest from the new
            # output, and drop held-back text (a partial tag) that it no longer has.
            logger.debug("progress output diverged at %d chars; keeping emitted text", self._pos)
            self._seen = seen[: self._pos] + output[self._rewrite_start(output) :]

    def _rewrite_start(self, output: str) -> int:
        """Where the new output continues ours: at ``_pos``, or at a ``</think>`` the cut would split."""
        if self._mode == _REASONING:
            near = max(0, self._pos - len(THINK_CLOSE) + 1)
            tag_at = output.find(THINK_CLOSE, near, self._pos + len(THINK_CLOSE) - 1)
            if 0 <= tag_at < self._pos:
                return tag_at
        return self._pos

    def _advance(self, *, final: bool) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while True:
            if self._mode == _START:
                if not self._classify_start(final):
                    return events
            elif self._mode == _REASONING:
                if not self._advance_reasoning(final, events):
                    return events
            else:
                self._emit(self._seen[self._pos :], events)
                self._pos = len(self._seen)
                return events

    def _classify_start(self, final: bool) -> bool:
        rest = self._seen[self._pos :]
        stripped = rest.lstrip()
        if stripped.startswith(THINK_OPEN):
            self._pos += len(rest) - len(stripped) + len(THINK_OPEN)
            self._mode = _REASONING
            return True
        if not final and THINK_OPEN.startswith(stripped):
            return False  # too short to tell whether a think section opens
        # r1-1776's output begins inside its think section, without the opening tag.
        self._mode = _REASONING if self._implicit_think else _ANSWER
        return True

    def _advance_reasoning(self, final: bool, events: list[StreamEvent]) -> bool:
        close_at = self._seen.find(THINK_CLOSE, self._pos)
        if close_at >= 0:
            self._emit(self._seen[self._pos : close_at], events)
            self._pos = close_at + len(THINK_CLOSE)
            self._mode = _ANSWER
            self._skip_space = True
            self._saw_close = True
            return True
        held = 0 if final else _partial_tag_suffix(self._seen, THINK_CLOSE)
        end = len(self._seen) - held
        if end > self._pos:
            self._emit(self._seen[self._pos : end], events)
            self._pos = end
        return False

    def _emit(self, text: str, events: list[StreamEvent]) -> None:
        if not text:
            return  # a repeated frame: an empty delta would be a spurious chunk
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return
            self._skip_space = False
        if self._mode == _ANSWER:
            self._answer_parts.append(text)
            events.append(TextDelta(text))
        else:
            self._reasoning_parts.append(text)
            if self.keep_reasoning:
                events.append(ReasoningDelta(text))

    def _finish(self, frame: ProgressFrame) -> list[StreamEvent]:
        self.finished = True
        events: list[StreamEvent] = []
        if self._mode == _REASONING and not self._saw_close and self._implicit_think:
            # The model never closed the think section it was assumed to be in: what it wrote
            # was the answer after all. It was streamed as reasoning; the answer repeats it.
            self._mode = _ANSWER
            self._skip_space = True
            self._emit("".join(self._reasoning_parts), events)
        events.append(
            finished(self._citations, tokens_streamed=frame.tokens_streamed, elapsed_time=frame.elapsed_time)
        )
        return events
