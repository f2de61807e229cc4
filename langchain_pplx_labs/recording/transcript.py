"""A cassette as a readable transcript: question, streamed answer, reasoning, sources and timing."""

from __future__ import annotations

from typing import Any

from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, THINK_CLOSE, THINK_OPEN, LabsProtocol
from langchain_pplx_labs.recording.cassette import Cassette, Frame, Interaction
from langchain_pplx_labs.web_protocol import WEB_END_EVENT, WebAnswer, messages_from_query


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
            turn = _turn(_as_labs(interaction, cassette.model, protocol), False, protocol)
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


def _as_labs(interaction: Interaction, model: str, protocol: LabsProtocol) -> Interaction:
    """A web interaction as the Labs one it stands for: the body's conversation, its messages folded into frames.

    The codec that reads the live stream (:class:`WebAnswer`) folds the recorded messages, so the
    transcript shows what a web client would have seen; each frame keeps its message's time.
    """
    query = interaction.request.get("query_str")
    messages = messages_from_query(query) if isinstance(query, str) else []
    request = {"model": model, "messages": messages}
    if interaction.refusal is not None:
        return Interaction(request=request, refusal=interaction.refusal)
    answer = WebAnswer(model)
    event = protocol.progress_event_for(model)
    frames: list[Frame] = []
    for frame in interaction.frames:
        if frame.kind in ("stall", "drop"):
            frames.append(frame)
            continue
        message_ended = frame.event == WEB_END_EVENT or (
            frame.kind == "raw" and str(frame.data).strip() == "[DONE]"
        )
        if message_ended:
            labs = answer.finish()
        elif frame.kind == "event" and frame.event == "message" and isinstance(frame.data, dict):
            labs = answer.feed(frame.data)
        else:
            labs = None
        if labs is not None:
            frames.append(Frame(at=frame.at, event=event, data=labs))
    if answer.completed and not answer.finished and frames and frames[-1].kind == "event":
        frames.append(Frame(at=frames[-1].at, event=event, data=answer.finish()))
    return Interaction(request=request, frames=frames)


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
