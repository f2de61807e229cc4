"""The MCP server: Perplexity's answers, with their sources and threads, as the ``ask`` and ``list_models`` tools."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from langchain_pplx_labs._version import __version__
from langchain_pplx_labs.chat_models import ChatPerplexityLabs
from langchain_pplx_labs.errors import PerplexityLabsError
from langchain_pplx_labs.gateway.app import bearer_accepted
from langchain_pplx_labs.gateway.errors import with_notes
from langchain_pplx_labs.protocol import KNOWN_MODELS

THREADS_KEPT = 256
"""Threads a server remembers for ``continue_thread`` (the latest answers'), as the emulator keeps 256."""

MCP_PATH = "/mcp"
"""Where the streamable-HTTP transport answers."""

SearchMode = Literal["web", "academic", "sec", "social"]
RecencyFilter = Literal["day", "week", "month", "year"]


class SearchResult(BaseModel):
    """A source, as langchain-perplexity's ``search_results`` item (``url``, ``title`` when the service sent one)."""

    model_config = ConfigDict(extra="allow")

    url: str
    title: str | None = None


class Image(BaseModel):
    """An image the answer came with (``image_url``, the page it is from in ``origin_url``)."""

    model_config = ConfigDict(extra="allow")

    image_url: str
    origin_url: str | None = None


class Answer(BaseModel):
    """What ``ask`` returns as structured content: the answer, its sources, and how to continue its thread."""

    answer: str = Field(description="The answer text; [n] marks cite citations[n-1].")
    model: str = Field(description="The model asked.")
    citations: list[str] = Field(description="The sources' URLs, in the order the [n] markers count them.")
    search_results: list[SearchResult] = Field(
        description="The sources, with titles when the service sent them."
    )
    related_questions: list[str] = Field(description="Follow-up questions the service suggests.")
    images: list[Image] = Field(description="Images from the sources.")
    thread_id: str | None = Field(
        description="Pass as continue_thread to ask a follow-up in this answer's thread; null on the labs transport."
    )
    thread_url_slug: str | None = Field(description="The thread's slug on the web app, when it sent one.")


class ModelInfo(BaseModel):
    """One model ``ask`` can name."""

    name: str = Field(description="The value of ask's model argument.")
    label: str = Field(description="The web app's name for it.")
    subscription_tier: str | None = Field(description="The tier it needs (pro, max); null: any session.")
    reasoning: bool = Field(description="It thinks before it answers.")


class Models(BaseModel):
    """What ``list_models`` returns as structured content."""

    transport: str = Field(description="web (the web app) or labs (the retired playground).")
    source: str = Field(
        description="live: the web app's own list; fallback: the names on record (it could not be read)."
    )
    default: str = Field(description="The model ask uses when none is named.")
    models: list[ModelInfo] = Field(description="The models ask's model argument takes.")


class Threads:
    """The conversations this server answered, by their last answer's id, so a follow-up can continue one.

    The thread's write token stays here, never in a tool result: it grants writing to the thread.
    """

    def __init__(self, kept: int = THREADS_KEPT) -> None:
        self._kept = kept
        self._histories: MutableMapping[str, list[BaseMessage]] = OrderedDict()

    def history(self, thread_id: str) -> list[BaseMessage]:
        """The conversation whose last answer is ``thread_id``, or a tool error saying it is not known."""
        history = self._histories.get(thread_id)
        if history is None:
            raise ToolError(
                f"Unknown thread {thread_id!r}: this server keeps the threads of its latest {self._kept} "
                "answers since it started; ask without continue_thread to start a new one"
            )
        return history

    def keep(self, history: list[BaseMessage], answer: AIMessage) -> str | None:
        """Remember ``history`` and its ``answer``; the id that continues them, ``None`` without thread ids."""
        thread_id = answer.response_metadata.get("backend_uuid")
        if not isinstance(thread_id, str):
            return None
        self._histories[thread_id] = [*history, answer]
        while len(self._histories) > self._kept:
            self._histories.pop(next(iter(self._histories)))
        return thread_id


class Asker:
    """One chat model (so one warm pool) answering the tools' calls, and the threads it answered."""

    def __init__(self, model: ChatPerplexityLabs) -> None:
        self.model = model
        self.threads = Threads()
        # Built now, so every per-call copy (search options) shares this client and its pool.
        model._client()

    async def list_models(self) -> Models:
        """The transport's models: the web app's live list (read once per pool), or Labs' names."""
        if self.model.transport != "web":
            rows = [
                ModelInfo(name=name, label=name, subscription_tier=None, reasoning=False)
                for name in KNOWN_MODELS
            ]
            return Models(transport="labs", source="fallback", default=self.model.model, models=rows)
        listed = await self.model.alist_models()
        rows = [
            ModelInfo(
                name=m.identifier, label=m.label, subscription_tier=m.subscription_tier, reasoning=m.reasoning
            )
            for m in listed
        ]
        return Models(transport="web", source=listed.source, default=self.model.model, models=rows)

    async def _known_names(self) -> list[str]:
        """The names ``ask`` takes: the default (the web app's ``auto`` lets the account pick), then the list's."""
        listed = await self.list_models()
        return list(dict.fromkeys([listed.default, *(row.name for row in listed.models)]))

    async def ask(
        self,
        question: str,
        *,
        model: str | None = None,
        search_mode: SearchMode | None = None,
        search_recency_filter: RecencyFilter | None = None,
        disable_search: bool = False,
        continue_thread: str | None = None,
    ) -> CallToolResult:
        if not question.strip():
            raise ToolError("The question is empty")
        name = model or self.model.model
        known = await self._known_names()
        if name not in known:
            raise ToolError(f"Unknown model {name!r}: use one of {', '.join(known)} (see list_models)")
        history = self._history(continue_thread)
        messages = [*history, HumanMessage(question)]
        options = {
            "search_mode": search_mode,
            "search_recency_filter": search_recency_filter,
            "disable_search": disable_search,
        }
        # A shallow copy shares the model's client (its pool); only the ask's parameters differ.
        chat = self.model.model_copy(update=options)
        reply = await chat.ainvoke(messages, model=name)
        assert isinstance(reply, AIMessage)
        answer = _answer(reply, name, self.threads.keep(messages, reply))
        return CallToolResult(
            content=[
                TextContent(type="text", text=answer.answer),
                TextContent(type="text", text=_sources(answer)),
            ],
            structured_content=answer.model_dump(mode="json"),
        )

    def _history(self, thread_id: str | None) -> list[BaseMessage]:
        if thread_id is None:
            return []
        if self.model.transport != "web":
            raise ToolError("continue_thread needs the web transport: the Labs playground has no threads")
        return self.threads.history(thread_id)


def _answer(reply: AIMessage, model: str, thread_id: str | None) -> Answer:
    meta = reply.response_metadata
    citations = [url for url in meta.get("citations", []) if isinstance(url, str)]
    # ChatPerplexity always has search_results; here they are sent only with titles, else built from the URLs.
    results = meta.get("search_results") or [{"url": url} for url in citations]
    slug = meta.get("thread_url_slug")
    return Answer(
        answer=reply.text,
        model=model,
        citations=citations,
        search_results=[SearchResult.model_validate(result) for result in results],
        related_questions=[text for text in meta.get("related_questions", []) if isinstance(text, str)],
        images=[Image.model_validate(image) for image in meta.get("images", [])],
        thread_id=thread_id,
        thread_url_slug=slug if isinstance(slug, str) else None,
    )


def _sources(answer: Answer) -> str:
    """The sources and the thread as text, for clients that show the model only the text content."""
    lines = ["Sources:"] if answer.search_results else ["Sources: none"]
    for number, result in enumerate(answer.search_results, 1):
        lines.append(
            f"[{number}] {result.title} - {result.url}" if result.title else f"[{number}] {result.url}"
        )
    if answer.thread_id is not None:
        lines.append(f"continue_thread: {answer.thread_id} (to ask a follow-up in this thread)")
    return "\n".join(lines)


ASK_DESCRIPTION = (
    "Ask Perplexity a question: it searches the web and answers with numbered citations. Returns the answer, "
    "its sources (citations, search_results), related questions, and a thread_id: pass it as continue_thread "
    "to ask a follow-up in the same thread."
)


def create_server(asker: Asker) -> MCPServer[Any]:
    """The MCP server of ``asker``'s tools (``ask``, ``list_models``), for any transport."""
    server: MCPServer[Any] = MCPServer(
        name="pplx-labs",
        version=__version__,
        instructions="Perplexity's web answers with their sources: call ask; list_models names the models.",
        log_level="WARNING",  # a refused call is the caller's answer, not a line on the operator's stderr
    )
    server.add_tool(
        _ask_tool(asker),
        name="ask",
        description=ASK_DESCRIPTION,
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True),
    )
    server.add_tool(
        _list_models_tool(asker),
        name="list_models",
        description="The models ask can use (the web app's live list: name, label, tier it needs), and its default.",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
    )
    return server


def _ask_tool(asker: Asker) -> Callable[..., Awaitable[Annotated[CallToolResult, Answer]]]:
    async def ask(
        question: Annotated[str, Field(description="The question, in plain words.")],
        model: Annotated[
            str | None, Field(description="A name from list_models; default: the server's.")
        ] = None,
        search_mode: Annotated[
            SearchMode | None,
            Field(description="Which sources: web (default), academic, sec filings, social."),
        ] = None,
        search_recency_filter: Annotated[
            RecencyFilter | None, Field(description="Only sources from the last day, week, month or year.")
        ] = None,
        disable_search: Annotated[bool, Field(description="Answer without searching the web.")] = False,
        continue_thread: Annotated[
            str | None, Field(description="A previous answer's thread_id: ask this as its follow-up.")
        ] = None,
    ) -> Annotated[CallToolResult, Answer]:
        try:
            return await asker.ask(
                question,
                model=model,
                search_mode=search_mode,
                search_recency_filter=search_recency_filter,
                disable_search=disable_search,
                continue_thread=continue_thread,
            )
        except PerplexityLabsError as exc:  # our typed errors: a tool error in their own (the server's) words
            raise ToolError(with_notes(exc)) from None

    return ask


def _list_models_tool(asker: Asker) -> Callable[[], Awaitable[Models]]:
    async def list_models() -> Models:
        try:
            return await asker.list_models()
        except PerplexityLabsError as exc:
            raise ToolError(with_notes(exc)) from None

    return list_models


def with_key(app: Any, key: str | None) -> Any:
    """The ASGI ``app`` behind the gateway's key check: HTTP requests without ``Authorization: Bearer KEY``
    get a 401 (``None``: no check, for loopback)."""
    if key is None:
        return app

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers", ()))
            sent = headers.get(b"authorization", b"").decode("latin-1")
            if not bearer_accepted(sent, key):
                from starlette.responses import JSONResponse

                refusal = JSONResponse(
                    {"error": "Missing or incorrect API key (send Authorization: Bearer KEY)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await refusal(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded
