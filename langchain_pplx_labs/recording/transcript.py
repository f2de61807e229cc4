"""A cassette as a readable transcript: question, streamed answer, reasoning, sources and timing."""

from __future__ import annotations

from typing import Any

from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, THINK_CLOSE, THINK_OPEN, LabsProtocol
from langchain_pplx_labs.recording.cassette import Cassette, Frame, Interaction


def format_transcript(
    cassette: Cassette, *, source: str = "", frames: bool = False, protocol: LabsProtocol = DEFAULT_PROTOCOL
) -> str:
    """The whole conversation as text; ``frames=True`` adds one timeline line per recorded frame."""
    lines = [
        f"Cassette {source}".rstrip(),
        f"provenance: {cassette.provenance} · recorded {cassette.recorded_at} · model {cassette.model}"
        f" · client {cassette.client_version}" + (f" · server {cassette.server}" if cassette.server else ""),
    ]
    if cassette.source:
        lines.append(f"source: {cassette.source}")
    if cassette.note:
        lines.append(f"note: {cassette.note}")
    for number, interaction in enumerate(cassette.interactions, start=1):
        lines += ["", f"── turn {number} ──", *_turn(interaction, frames, protocol)]
    return "\n".join(lines) + "\n"


def _turn(interaction: Interaction, with_frames: bool, protocol: LabsProtocol) -> list[str]:
    messages = interaction.request.get("messages") or []
    lines = [f"[{m.get('role', '?')}] {m.get('content', '')}" for m in messages if isinstance(m, dict)]
    if interaction.refusal is not None:
        refusal = interaction.refusal
        kind = refusal.headers.get("Content-Type", refusal.headers.get("content-type", "?"))
        lines.append(f"refused: HTTP {refusal.status} ({kind}), {len(refusal.body)} characters of body")
        return lines
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
        return f"timing: no progress frame ({len(frames)} frames)"
    others = len(frames) - len(progress)
    extra = f", {others} other" if others else ""
    return (
        f"timing: first frame +{progress[0].at:.3f}s, last +{progress[-1].at:.3f}s, "
        f"{len(progress)} progress frames{extra}"
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
