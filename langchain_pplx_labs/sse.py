"""Server-Sent Events framing (the WHATWG ``text/event-stream`` format): parse it incrementally, write it (pure, no I/O)."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class SSEMessage:
    """One dispatched Server-Sent Event: its ``event`` name and its ``data`` (lines joined by ``\\n``)."""

    event: str = "message"
    data: str = ""


_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEParser:
    """Incremental ``text/event-stream`` parser after the WHATWG HTML spec (section 9.2.6).

    Feed it bytes as they arrive, split anywhere (inside a line, a CRLF or a UTF-8 character).
    Lines end with CRLF, LF or CR; ``:`` lines are comments; ``event``, ``data``, ``id`` and
    ``retry`` are understood and other fields ignored. One deviation: a block that names an
    ``event`` but has no ``data`` is still dispatched (with ``data=""``), because an end marker
    such as ``event: end_of_stream`` may come without data and must not vanish.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self.last_event_id = ""
        self.retry: int | None = None
        """The last ``retry`` field in milliseconds, if the server sent one."""

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Consume ``chunk`` and return the messages it completes."""
        return self._consume(self._decoder.decode(chunk), final=False)

    def close(self) -> list[SSEMessage]:
        """End of stream: flush a last line and a last message not ended by a blank line."""
        messages = self._consume(self._decoder.decode(b"", final=True), final=True)
        if self._buffer:
            line, self._buffer = self._buffer, ""
            self._line(line, messages)
        self._dispatch(messages)
        return messages

    def _consume(self, text: str, *, final: bool) -> list[SSEMessage]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        buffer = self._buffer + text
        messages: list[SSEMessage] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer) and not final:
                break  # a CR at the end may be the first half of a CRLF split across chunks
            self._line(buffer[start : match.start()], messages)
            start = match.end()
        self._buffer = buffer[start:]
        return messages

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


def sse_message(data: str, event: str = "", *, newline: str = "\n") -> bytes:
    """One SSE message as bytes: an ``event:`` line if named, one ``data:`` line per line of ``data``."""
    lines = [f"event: {event}"] if event else []
    lines.extend(f"data: {line}" for line in _LINE_END.split(data))
    return (newline.join(lines) + newline + newline).encode("utf-8")
