"""Follow-ups for gateway clients: the web thread of each answer, found again from the history that repeats it.

OpenAI and Anthropic clients send a conversation back as plain messages, without the thread ids the model
put in its answer's ``response_metadata``. The gateway keeps those ids (in this process only, the latest
``max_threads``) under the digest of the conversation the answer ended; a request whose history hashes
the same gets them back on its last answer, and the model's own digest check decides the follow-up, as it
does for LangChain histories. The ``read_write_token`` stays here and upstream: never in a response or a log.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.messages import THREAD_DIGEST, conversation_digest, to_turns
from langchain_pplx_labs.web.codec import THREAD_FIELDS

MAX_THREADS = 4096
"""Threads remembered per process: a history older than the latest ones is sent as a transcript again."""

_KEPT = (*THREAD_FIELDS, THREAD_DIGEST)
_NEEDED = ("backend_uuid", "read_write_token", THREAD_DIGEST)


def digest_of(messages: Sequence[BaseMessage]) -> str | None:
    """The digest of a conversation's turns (the model's own), ``None`` when it has no turns it can send."""
    try:
        return conversation_digest(to_turns(messages))
    except PerplexityLabsInputError:
        return None


class Threads:
    """Thread ids by the digest of (history + answer text), bounded, least recently used out first."""

    def __init__(self, max_threads: int = MAX_THREADS) -> None:
        self.max_threads = max_threads
        self._ids: collections.OrderedDict[str, dict[str, str]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def continued(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        """``messages`` with the thread ids on their last answer when the history before the new question is
        one this gateway answered; otherwise as they are (the model sends them as a transcript)."""
        if len(messages) < 2 or not isinstance(messages[-1], HumanMessage):
            return messages
        answer = messages[-2]
        if (
            not isinstance(answer, AIMessage)
            or answer.tool_calls
            or "backend_uuid" in answer.response_metadata
        ):
            return messages
        key = digest_of(messages[:-1])
        ids = None if key is None else self._ids.get(key)
        if ids is None:
            return messages
        self._ids.move_to_end(key)  # type: ignore[arg-type]  # key is not None when ids was found
        known = answer.model_copy(update={"response_metadata": {**answer.response_metadata, **ids}})
        return [*messages[:-2], known, messages[-1]]

    async def kept(
        self, messages: list[BaseMessage], chunks: AsyncGenerator[AIMessageChunk, None]
    ) -> AsyncGenerator[AIMessageChunk, None]:
        """``chunks`` passed on, the thread ids of the answer remembered under the digest of ``messages`` and
        its text, and taken off the chunk: no door hands them to a client."""
        text: list[str] = []
        async with aclosing(chunks):
            async for chunk in chunks:
                if isinstance(chunk.content, str):
                    text.append(chunk.content)
                meta = chunk.response_metadata
                if "read_write_token" in meta:
                    ids = {name: meta.pop(name) for name in _KEPT if name in meta}
                    if all(isinstance(ids.get(name), str) for name in _NEEDED):
                        self._remember([*messages, AIMessage(content="".join(text))], ids)
                yield chunk

    def _remember(self, conversation: list[BaseMessage], ids: dict[str, str]) -> None:
        key = digest_of(conversation)
        if key is None:
            return
        self._ids[key] = ids
        self._ids.move_to_end(key)
        while len(self._ids) > self.max_threads:
            self._ids.popitem(last=False)
