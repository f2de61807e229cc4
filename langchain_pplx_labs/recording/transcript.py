"""A cassette as a readable transcript: question, streamed answer, reasoning, sources and timing."""

from __future__ import annotations

from typing import Any

from langchain_pplx_labs._plural import counted
from langchain_pplx_labs.errors import PerplexityLabsServerError
from langchain_pplx_labs.events import ReasoningDelta, Source, StreamEvent, TextDelta
from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, THINK_CLOSE, THINK_OPEN, LabsProtocol
from langchain_pplx_labs.recording.cassette import Cassette, Frame, Interaction
from langchain_pplx_labs.web.codec import WEB_END_EVENT, WebDecoder, messages_from_query


def format_transcript(
    cassette: Cassette, *, source: str = "", frames: bool = False, protocol: LabsProtocol = DEFAULT_PROTOCOL
) -> str:
    """The whole conversation as text; ``frames=True`` adds one timeline line per recorded frame."""
    lines = [
        f"Cassette {source}".rstrip(),
        f"provenance: {cassette.provenance} · recorded {cassette.recorded_at} · model {cassette.model}"
        f" · client {cassette.client_version}"
        + (f" · server {cassette.server}" if cassette.server else "")
        + f" · transport {cassette.transport}",
    ]
    if cassette.source:
        lines.append(f"source: {cassette.source}")
    if cassette.note:
        lines.append(f"note: {cassette.note}")
    for number, interaction in enumerate(cassette.interactions, start=1):
        if cassette.transport == "web":
            # The turn as a web client read it; the timeline lists the SSE messages as recorded.
            turn = _web_turn(interaction, cassette.model)
            if frames and interaction.refusal is None:
                turn += [_message_line(frame) for frame in interaction.frames]
        else:
            turn = _turn(interaction, frames, protocol)
        lines += ["", f"── turn {number} ──", *turn]
    return "\n".join(lines) + "\n"


def _turn(interaction: Interaction, with_frames: bool, protocol: LabsProtocol) -> list[str]:
    messages = interaction.request.get("messages") or []
    lines = [f"[{m.get('role', '?')}] {m.get('content', '')}" for m in messages if isinstance(m, dict)]
    if interaction.refusal is not None:
        return [*lines, _refused(interaction)]
    progress = [
        f for f in interaction.frames if f.kind == "event" and protocol.is_progress_event(f.event or "")
    ]
    last: dict[str, Any] = next((f.data for f in reversed(progress) if isinstance(f.data, dict)), {})
    output = last.get("output") if isinstance(last.get("output"), str) else ""
    thinking, answer = _split(str(output))
    if thinking:
        lines.append(f"[reasoning] {thinking}")
    lines.append(f"[answer] {answer}")
    citations = last.get("citations") or []
    if citations:
        lines.append("sources:")
        lines += [f"  [{n}] {_source(c)}" for n, c in enumerate(citations, start=1)]
    lines.append(_timing(interaction.frames, progress))
    lines.append(f"ended: {_ending(interaction.frames, last)}")
    if with_frames:
        lines += [_frame_line(frame) for frame in interaction.frames]
    return lines


def _web_turn(interaction: Interaction, model: str) -> list[str]:
    """A web interaction as a web client read it: the body's conversation, then what the codec read."""
    query = interaction.request.get("query_str")
    messages = messages_from_query(query) if isinstance(query, str) else []
    lines = [f"[{m['role']}] {m['content']}" for m in messages]
    if interaction.refusal is not None:
        return [*lines, _refused(interaction)]
    read = _WebRead(model)
    for frame in interaction.frames:
        read.take(frame)
    read.end(interaction.frames)
    if read.reasoning:
        lines.append(f"[reasoning] {''.join(read.reasoning).strip()}")
    lines.append(f"[answer] {''.join(read.answer)}")
    if read.sources:
        lines.append("sources:")
        lines += [
            f"  [{n}] {_source(s.model_dump(exclude_none=True))}" for n, s in enumerate(read.sources, 1)
        ]
    if not read.times:
        lines.append(f"timing: no answer message ({counted(len(interaction.frames), 'message')})")
    else:
        lines.append(
            f"timing: first +{read.times[0]:.3f}s, last +{read.times[-1]:.3f}s, "
            f"{counted(len(read.times), 'message')} with news of {len(interaction.frames)}"
        )
    lines.append(f"ended: {read.ending(interaction.frames)}")
    return lines


class _WebRead:
    """What the web codec (:class:`WebDecoder`) reads from a cassette's messages, and when."""

    def __init__(self, model: str) -> None:
        self.decoder = WebDecoder(model)
        self.reasoning: list[str] = []
        self.answer: list[str] = []
        self.sources: tuple[Source, ...] = ()
        self.times: list[float] = []
        self.failure: PerplexityLabsServerError | None = None

    def take(self, frame: Frame) -> None:
        if self.decoder.finished or frame.kind in ("stall", "drop"):
            return
        ended = frame.event == WEB_END_EVENT or (frame.kind == "raw" and str(frame.data).strip() == "[DONE]")
        try:
            if ended:
                self._read(self.decoder.finish(), frame.at)
            elif frame.kind == "event" and frame.event == "message" and isinstance(frame.data, dict):
                self._read(self.decoder.feed(frame.data), frame.at)
        except PerplexityLabsServerError as exc:
            self.failure = exc
            self.times.append(frame.at)

    def end(self, frames: list[Frame]) -> None:
        """A stream that ends after ``COMPLETED`` ended the answer (unless it stalled or dropped)."""
        if self.decoder.completed and frames and frames[-1].kind == "event":
            self._read(self.decoder.finish(), frames[-1].at)

    def _read(self, events: list[StreamEvent], at: float) -> None:
        if events:
            self.times.append(at)
        for event in events:
            if isinstance(event, TextDelta):
                self.answer.append(event.text)
            elif isinstance(event, ReasoningDelta):
                self.reasoning.append(event.text)
            else:
                self.sources = event.sources

    def ending(self, frames: list[Frame]) -> str:
        tail = frames[-1] if frames else None
        if tail is not None and tail.kind in ("stall", "drop") and not self.decoder.finished:
            return _ending(frames, {})
        if self.failure is not None:
            code = getattr(self.failure, "error_code", "")
            return (
                f"failed ({code}): {self.failure.server_message}"
                if code
                else f"failed: {self.failure.server_message}"
            )
        return "completed" if self.decoder.finished else "incomplete"


def _refused(interaction: Interaction) -> str:
    refusal = interaction.refusal
    assert refusal is not None
    kind = refusal.headers.get("Content-Type", refusal.headers.get("content-type", "?"))
    return f"refused: HTTP {refusal.status} ({kind}), {len(refusal.body)} characters of body"


def _split(output: str) -> tuple[str, str]:
    if THINK_CLOSE not in output:
        return "", output
    thinking, answer = output.split(THINK_CLOSE, 1)
    return thinking.removeprefix(THINK_OPEN).strip(), answer.lstrip("\n")


def _source(citation: Any) -> str:
    if isinstance(citation, dict):
        title = citation.get("title")
        return f"{citation.get('url', '?')}" + (f" — {title}" if title else "")
    return str(citation)


def _timing(frames: list[Frame], progress: list[Frame]) -> str:
    if not progress:
        return f"timing: no progress frame ({counted(len(frames), 'frame')})"
    others = len(frames) - len(progress)
    extra = f", {others} other" if others else ""
    return (
        f"timing: first frame +{progress[0].at:.3f}s, last +{progress[-1].at:.3f}s, "
        f"{counted(len(progress), 'progress frame')}{extra}"
    )


def _ending(frames: list[Frame], last: dict[str, Any]) -> str:
    tail = frames[-1] if frames else None
    if tail is not None and tail.kind == "stall":
        return f"server went silent at +{tail.at:.3f}s"
    if tail is not None and tail.kind == "drop":
        return f"socket closed at +{tail.at:.3f}s"
    if last.get("status") == "failed":
        code = f" ({last['error_code']})" if last.get("error_code") else ""
        text = last.get("text")
        return f"failed{code}: {text}" if text else f"failed{code}"
    return "completed" if last.get("final") else "incomplete"


def _frame_line(frame: Frame) -> str:
    if frame.kind != "event":
        return f"  +{frame.at:.3f}s  <{frame.kind}>"
    data = frame.data if isinstance(frame.data, dict) else {}
    size = len(data["output"]) if isinstance(data.get("output"), str) else 0
    return f"  +{frame.at:.3f}s  {frame.event}  output {size} chars" + (
        "  final" if data.get("final") else ""
    )


def _message_line(frame: Frame) -> str:
    """One recorded SSE message of a web cassette: its time, event, status and whether it is the last."""
    if frame.kind in ("stall", "drop"):
        return f"  +{frame.at:.3f}s  <{frame.kind}>"
    data = frame.data if isinstance(frame.data, dict) else {}
    status = data.get("status")
    last = data.get("final_sse_message") is True or data.get("final") is True
    return (
        f"  +{frame.at:.3f}s  {frame.event or 'message'}"
        + ("  <raw>" if frame.kind == "raw" else "")
        + (f"  status {status}" if isinstance(status, str) else "")
        + ("  final" if last else "")
    )
