"""Server-Sent Events framing (the WHATWG ``text/event-stream`` format): parse it incrementally, write it (pure, no I/O)."""

from __future__ import annotations

import codecs
import re
from typing import NamedTuple


class SSEMessage(NamedTuple):
    """One dispatched Server-Sent Event: its ``event`` name and its ``data`` (lines joined by ``\\n``)."""

    # A tuple: one is made per message, and a frozen dataclass's __init__ costs several times as much.
    event: str = "message"
    data: str = ""


_LINE_END = re.compile(r"\r\n|\r|\n")
# ``str.splitlines`` ends lines at CR, LF and CRLF, as SSE does, and also at these, which SSE does not:
# text with none of them (nearly every read) is split by it, several times faster than by ``_LINE_END``.
_OTHER_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


class SSEParser:
    """Incremental ``text/event-stream`` parser after the WHATWG HTML spec (section 9.2.6).

    Feed it bytes as they arrive, split anywhere (inside a line, a CRLF or a UTF-8 character);
    each read is scanned once, so a line split over many reads costs its length, not more.
    Lines end with CRLF, LF or CR (a CR ends its line at once; a LF right after it, even at the
    start of the next read, is the rest of that CRLF); ``:`` lines are comments; ``event``, ``data``, ``id`` and
    ``retry`` are understood and other fields ignored. One deviation: a block that names an
    ``event`` but has no ``data`` is still dispatched (with ``data=""``), because an end marker
    such as ``event: end_of_stream`` may come without data and must not vanish.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # The unfinished line's pieces, one per read: joined once when its end arrives, never
        # re-joined and re-scanned per read (a long line read in many pieces stays linear).
        self._pending: list[str] = []
        # The text so far ended with a CR: a LF that starts the next text is the rest of its CRLF.
        self._after_cr = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self.last_event_id = ""
        self.retry: int | None = None
        """The last ``retry`` field in milliseconds, if the server sent one."""

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Consume ``chunk`` and return the messages it completes."""
        return self._consume(self._decoder.decode(chunk))

    def close(self) -> list[SSEMessage]:
        """End of stream: flush a last line and a last message not ended by a blank line."""
        messages = self._consume(self._decoder.decode(b"", final=True))
        if self._pending:
            self._line(self._take_line(""), messages)
        self._dispatch(messages)
        return messages

    def _consume(self, text: str) -> list[SSEMessage]:
        messages: list[SSEMessage] = []
        if not text:
            return messages
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        # Only the new text is split: the pending pieces have no line end.
        lines, rest = _split_lines(text)
        if lines and self._pending:
            lines[0] = self._take_line(lines[0])
        for line in lines:
            # The lines of nearly every message (data, event, the blank that ends it) read here, the rest in _line.
            if not line:
                data = self._data
                if data or self._event:
                    joined = data[0] if len(data) == 1 else "\n".join(data)
                    messages.append(SSEMessage(self._event or "message", joined))
                    self._event = ""
                    self._data = []
            elif line.startswith("data:"):
                self._data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif line.startswith("event:"):
                self._event = line[7:] if line.startswith("event: ") else line[6:]
            else:
                self._line(line, messages)
        if rest:
            self._pending.append(rest)
        return messages

    def _take_line(self, last: str) -> str:
        """The unfinished line ended by ``last``, its final piece; no line is pending after it."""
        if not self._pending:
            return last
        self._pending.append(last)
        line = "".join(self._pending)
        self._pending = []
        return line

    def _line(self, line: str, messages: list[SSEMessage]) -> None:
        if not line:
            self._dispatch(messages)
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)

    def _dispatch(self, messages: list[SSEMessage]) -> None:
        if self._data or self._event:
            messages.append(SSEMessage(self._event or "message", "\n".join(self._data)))
        self._event = ""
        self._data = []


def _split_lines(text: str) -> tuple[list[str], str]:
    """The lines ``text`` ends, and what follows the last line end: the start of a line still to come."""
    for other in _OTHER_BREAKS:
        if other in text:
            lines = _LINE_END.split(text)
            return lines, lines.pop()
    lines = text.splitlines()
    if not lines or text.endswith(("\n", "\r")):
        return lines, ""
    return lines, lines.pop()


def sse_message(data: str, event: str = "", *, newline: str = "\n") -> bytes:
    """One SSE message as bytes: an ``event:`` line if named, one ``data:`` line per line of ``data``."""
    lines = [f"event: {event}"] if event else []
    lines.extend(f"data: {line}" for line in _LINE_END.split(data))
    return (newline.join(lines) + newline + newline).encode("utf-8")
