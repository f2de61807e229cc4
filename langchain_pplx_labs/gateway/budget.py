"""A client's output limit (``max_tokens``, ``max_output_tokens``): the answer's text cut where it is spent."""

from __future__ import annotations

from langchain_pplx_labs._chunks import estimate_tokens
from langchain_pplx_labs._profiles import CHARS_PER_TOKEN


class OutputBudget:
    """The characters of answer text a limit of ``max_tokens`` allows, counted as the package counts tokens
    (``CHARS_PER_TOKEN`` characters each: the web app reports no token counts), reasoning not included."""

    def __init__(self, max_tokens: int | None) -> None:
        self.max_tokens = max_tokens
        self._left = None if max_tokens is None else max_tokens * CHARS_PER_TOKEN
        self.spent = False
        """More text came than the limit allows: the answer was cut, and nothing more should be read."""

    def take(self, text: str) -> str:
        """The part of ``text`` within the limit; marks the budget spent when some was left out."""
        if self._left is None or not text:
            return text
        if len(text) > self._left:
            text, self._left, self.spent = text[: self._left], 0, True
            return text
        self._left -= len(text)
        return text

    def tokens(self, chars: int) -> int:
        """Output tokens for ``chars`` characters written, never more than the limit."""
        counted = estimate_tokens(chars)
        return counted if self.max_tokens is None else min(counted, self.max_tokens)
