"""Stop sequences over streamed text: cut at the first match, even when it spans deltas (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_pplx_labs._chunks import estimate_tokens
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.events import Finished, StreamEvent, TextDelta


def normalise_stop(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """Return the stop sequences as a tuple, refusing empty strings and non-strings."""
    if stop is None:
        return ()
    sequences = (stop,) if isinstance(stop, str) else tuple(stop)
    for sequence in sequences:
        if not isinstance(sequence, str) or not sequence:
            raise PerplexityLabsInputError(f"Invalid stop sequence {sequence!r}: use non-empty strings")
    return sequences


class StopScanner:
    """Pass text through until a stop sequence is complete; the sequence itself is never emitted.

    Text that could be the start of a stop sequence is held back until the next
    delta shows whether it is one, so a sequence split across deltas is still caught.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.stopped = False
        self.emitted = 0
        self._held = ""

    def feed(self, text: str) -> str:
        """Return the part of ``text`` that is safe to emit now."""
        safe = self._scan(text)
        self.emitted += len(safe)
        return safe

    def _scan(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buffer = self._held + text
        cut = first_stop(buffer, self.stops)
        if cut is not None:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = max(_partial_suffix(buffer, stop) for stop in self.stops)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """Return text held back when the answer ends without a stop sequence."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def apply_stop(event: StreamEvent, scanner: StopScanner) -> list[StreamEvent]:
    """Pass ``event`` through the stop scanner: answer text may be held back, cut or ended early."""
    if isinstance(event, TextDelta):
        text = scanner.feed(event.text)
        out: list[StreamEvent] = [TextDelta(text)] if text else []
        if scanner.stopped:
            # No final frame will come: close the answer here, without the sources it never sent.
            tokens = estimate_tokens(scanner.emitted)
            out.append(Finished(sources=(), rich_sources=False, tokens_streamed=tokens, elapsed_time=None))
        return out
    if isinstance(event, Finished):
        tail = scanner.flush()
        return [TextDelta(tail), event] if tail else [event]
    return [event]


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Where ``text`` is cut: at the stop sequence that is complete first, as a model stops
    generating at the first token that completes one (ties go to the longer sequence)."""
    matches = [(i + len(stop), i) for stop in stops if (i := text.find(stop)) >= 0]
    return min(matches)[1] if matches else None


def _partial_suffix(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if stop.startswith(text[-size:]):
            return size
    return 0
