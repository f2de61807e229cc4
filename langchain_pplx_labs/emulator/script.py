"""What the emulator says back: scripted steps and the scenarios that build them (pure, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from langchain_pplx_labs.protocol import (
    DEFAULT_PROTOCOL,
    IMPLICIT_THINK_MODELS,
    REASONING_MODELS,
    THINK_CLOSE,
    THINK_OPEN,
    LabsProtocol,
)
from langchain_pplx_labs.web_evidence import plans


@dataclass(frozen=True)
class Emit:
    """Send a Socket.IO event after ``delay`` seconds."""

    event: str
    data: Any
    delay: float = 0.0


@dataclass(frozen=True)
class Raw:
    """Send a raw Engine.IO message (text or binary) after ``delay``: for garbage frames."""

    data: str | bytes
    delay: float = 0.0


@dataclass(frozen=True)
class Stall:
    """Go silent for ``seconds`` while keeping the socket open."""

    seconds: float


@dataclass(frozen=True)
class Drop:
    """Close the socket abruptly after ``delay``."""

    delay: float = 0.0


Step = Emit | Raw | Stall | Drop
"""One thing the emulator does while answering: send, send raw, go silent or drop."""


@dataclass(frozen=True)
class LabsRequest:
    """One question as the emulator received it, and the protocol it came in on."""

    payload: dict[str, Any]
    protocol: LabsProtocol = DEFAULT_PROTOCOL
    web_body: dict[str, Any] | None = None
    """The web ask's body as sent, when the question came over the web app's SSE endpoint."""

    @property
    def transport(self) -> str:
        """``web`` for a question asked at the web app's SSE endpoint, else ``labs`` (Socket.IO)."""
        return "labs" if self.web_body is None else "web"

    @property
    def progress_event(self) -> str:
        """The event this question's answer streams on."""
        return self.protocol.progress_event_for(self.model)

    @property
    def reasons(self) -> bool:
        """Whether the answer has a think section: a Labs reasoning model, or on the web app a model that
        streams a plan (``pplx_reasoning``, ``r1``, the ``*thinking`` models: ``web_evidence.plans``)."""
        if self.model in REASONING_MODELS:
            return True
        params = self.web_body.get("params") if self.web_body is not None else None
        preference = params.get("model_preference") if isinstance(params, dict) else None
        return isinstance(preference, str) and plans(preference)

    @property
    def version(self) -> str:
        """The payload's ``version`` field (``""`` if absent)."""
        return str(self.payload.get("version", ""))

    @property
    def model(self) -> str:
        """The model the question was asked of."""
        return str(self.payload.get("model", ""))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation sent (``[]`` if the payload has none)."""
        messages = self.payload.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def question(self) -> str:
        """The last user turn's text."""
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return str(message.get("content", ""))
        return ""


class Scenario(BaseModel):
    """A scripted answer: text, sources, pacing and faults, turned into steps per request."""

    model_config = ConfigDict(extra="forbid")

    answer: str | None = None
    """Answer text; ``None`` makes one up from the question."""
    reasoning: str | None = None
    """Think-section text for reasoning models; ``None`` makes one up, ``""`` sends none."""
    citations: list[str | dict[str, Any]] | None = None
    """Sources on the final frame; ``None`` gives two example URLs."""
    chunk_size: int = Field(default=24, ge=1)
    """Characters added per progress frame."""
    delay: float = 0.0
    """Seconds between frames."""
    first_delay: float = 0.0
    """Seconds before the first frame."""
    fail: str | None = None
    """Send ``status: failed`` with this text instead of finishing."""
    failure: dict[str, Any] | None = None
    """Send this failed frame's data as it is instead of finishing (wins over ``fail``), e.g. :data:`RATE_LIMIT_FRAME`."""
    fail_after: int = 0
    """Frames sent before the failure."""
    stall_after: int | None = None
    """Frames sent before going silent for good."""
    drop_after: int | None = None
    """Frames sent before closing the socket."""
    garbage_after: int | None = None
    """Frames sent before an undecodable packet."""
    wrong_types_after: int | None = None
    """Frames sent before a frame whose ``output`` is not a string."""
    binary_after: int | None = None
    """Frames sent before a binary Engine.IO message the playground never sends."""
    extra_events: bool = False
    """Interleave unknown events, as the live site may."""
    partial_status: str | None = None
    """``status`` on partial frames; the evidence says none (``None``), older emulators sent ``pending``."""
    partial_citations: bool = False
    """Also send the citations on every partial frame, not only the final one."""
    citation_titles: bool = False
    """Send citations as ``{"url", "title"}`` objects instead of bare URLs."""
    final_citations: bool = True
    """``False``: the final frame has no ``citations`` key at all."""
    versions: list[str] | None = None
    """Payload versions this server accepts; another gets ``status: failed``. ``None`` accepts any."""

    def full_output(self, request: LabsRequest) -> str:
        """The last cumulative ``output``, think section included."""
        answer = self.answer if self.answer is not None else made_up_answer(request.question)
        model = request.model
        if not request.reasons:
            return answer
        thinking = self.reasoning if self.reasoning is not None else made_up_reasoning(request.question)
        if not thinking:
            return answer
        opening = "" if model in IMPLICIT_THINK_MODELS else THINK_OPEN
        return f"{opening}{thinking}{THINK_CLOSE}\n\n{answer}"

    def steps(self, request: LabsRequest) -> list[Step]:
        """The steps that answer ``request``."""
        event = request.progress_event
        if self.versions is not None and request.version not in self.versions:
            text = (
                f"Unsupported payload version {request.version!r}; expected one of {', '.join(self.versions)}"
            )
            return [Emit(event, {"status": "failed", "text": text}, self.first_delay)]
        output = self.full_output(request)
        prefixes = [output[:end] for end in range(self.chunk_size, len(output), self.chunk_size)]
        citations = self._citations(request)
        partial_citations = citations if self.partial_citations else ()
        steps: list[Step] = []
        for index, prefix in enumerate(prefixes):
            fault = self._fault_at(index, event)
            if fault is not None:
                return steps + fault
            delay = self.first_delay if index == 0 else self.delay
            frame = progress_frame(
                prefix, elapsed=0.05 * (index + 1), citations=partial_citations, status=self.partial_status
            )
            steps.append(Emit(event, frame, delay))
            if self.extra_events:
                steps.append(Emit("query_status", {"status": "pending", "index": index}))
        fault = self._fault_at(len(prefixes), event)
        if fault is not None:
            return steps + fault
        final = progress_frame(
            output,
            elapsed=0.05 * (len(prefixes) + 1),
            citations=citations if self.final_citations else None,
            final=True,
        )
        steps.append(Emit(event, final, self.first_delay if not prefixes else self.delay))
        return steps

    def _citations(self, request: LabsRequest) -> list[str | dict[str, Any]]:
        citations = self.citations if self.citations is not None else default_citations(request.question)
        if not self.citation_titles:
            return list(citations)
        return [{"url": c, "title": _title_of(c)} if isinstance(c, str) else c for c in citations]

    def _fault_at(self, index: int, event: str) -> list[Step] | None:
        if self.failure is not None and index == self.fail_after:
            return [Emit(event, dict(self.failure), self.delay)]
        if self.fail is not None and index == self.fail_after:
            return [Emit(event, {"status": "failed", "text": self.fail}, self.delay)]
        if self.stall_after == index:
            return [Stall(3600.0)]
        if self.drop_after == index:
            return [Drop(self.delay)]
        if self.garbage_after == index:
            return [Raw('2["' + event + '", {not json', self.delay), Stall(3600.0)]
        if self.binary_after == index:
            return [Raw(b"\x00\xffnot a socket.io packet", self.delay), Stall(3600.0)]
        if self.wrong_types_after == index:
            return [
                Emit(event, {"output": 42, "citations": "nope", "final": False}, self.delay),
                Stall(3600.0),
            ]
        return None


# Frames from the public record (docs/retirement.md), for scenarios and cassettes that replay them.
FAILED_FRAME: dict[str, Any] = {"status": "failed", "text": "Error in processing query"}
"""The one real Labs frame in public reports, a failure (gpt4free issue #2861, 2025-03-29)."""
RATE_LIMIT_FRAME: dict[str, Any] = {
    "error_code": "FREE_TIER_RATE_LIMITED",
    "experience": "upgrade",
    "status": "failed",
    "final_sse_message": True,
}
"""The main site's rate-limit message (henrique-coder/perplexity-webui-scraper, tests/test_parser.py)."""

Responder = Callable[[LabsRequest], "Scenario | Sequence[Step]"]
"""How the emulator answers a request: a scenario, or the steps to play."""


def progress_frame(
    output: str,
    *,
    elapsed: float,
    citations: Sequence[str | dict[str, Any]] | None = (),
    final: bool = False,
    status: str | None = None,
) -> dict[str, Any]:
    """A progress frame as the playground sends it.

    Evidence says partial frames carry no ``status`` and the final one ``completed``;
    ``status`` overrides that. ``citations=None`` leaves the key out.
    """
    frame: dict[str, Any] = {"output": output}
    if citations is not None:
        frame["citations"] = list(citations)
    frame.update(
        chunks=[],
        final=final,
        elapsed_time=round(elapsed, 3),
        tokens_streamed=max(1, len(output) // 4) if output else 0,
    )
    status = status if status is not None else ("completed" if final else None)
    if status is not None:
        frame["status"] = status
    return frame


def _title_of(url: str) -> str:
    """A readable title for a made-up citation object: the URL's last path part, else its host."""
    rest = url.split("://", 1)[-1].rstrip("/")
    host, _, path = rest.partition("/")
    return (path.rsplit("/", 1)[-1] or host).replace("_", " ").replace("-", " ") or url


_FACTS = (
    (
        re.compile(r"capital of france", re.I),
        "The capital of France is Paris [1]. It has been the seat of the French government for most of the country's history [2].",
    ),
    (
        re.compile(r"langchain", re.I),
        "LangChain is a framework for building applications with large language models [1]. It composes prompts, models and tools into chains and agents [2].",
    ),
    (
        re.compile(r"socket\.?io", re.I),
        "Socket.IO is a protocol for bidirectional, event-based communication, built on Engine.IO [1]. It falls back from WebSocket to HTTP long-polling when needed [2].",
    ),
)


def made_up_answer(question: str) -> str:
    """A plausible, clearly synthetic answer with ``[n]`` citation markers."""
    for pattern, answer in _FACTS:
        if pattern.search(question):
            return answer
    topic = question.strip().rstrip("?.!") or "your question"
    return (
        f"This is the offline Perplexity Labs emulator answering “{topic}” [1]. "
        "Its answers are synthetic, but they stream and cite sources exactly like the playground [2]."
    )


def made_up_reasoning(question: str) -> str:
    """A short think section for reasoning models."""
    return f"The user asks: {question.strip()[:200]}. I should answer briefly and cite my sources."


def default_citations(question: str) -> list[str]:
    """Example source URLs matching :func:`made_up_answer`."""
    if re.search(r"capital of france", question, re.I):
        return ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
    if re.search(r"langchain", question, re.I):
        return [
            "https://python.langchain.com/docs/introduction/",
            "https://github.com/langchain-ai/langchain",
        ]
    if re.search(r"socket\.?io", question, re.I):
        return ["https://socket.io/docs/v4/", "https://github.com/socketio/engine.io-protocol"]
    return ["https://docs.perplexity.ai/", "https://labs.perplexity.ai/"]


def default_responder(request: LabsRequest) -> Scenario:
    """Answer every question with a made-up, cited answer."""
    return Scenario()
