"""ChatPerplexityLabs: the LangChain chat model over the Perplexity Labs playground."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Self, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import PrivateAttr, model_validator

from langchain_pplx_labs._answer import answer_chunks
from langchain_pplx_labs._content_blocks import PROVIDER
from langchain_pplx_labs._fields import ModelFields, unknown_argument_warning, unknown_call_arguments
from langchain_pplx_labs._first_call import pay_first_call_costs
from langchain_pplx_labs._profiles import DefaultProfile, default_profile
from langchain_pplx_labs._reporting import areported, nothing_to_report, reported
from langchain_pplx_labs._stop import normalise_stop
from langchain_pplx_labs._sync import iterate_sync, run_sync
from langchain_pplx_labs.client import Client, ClientCache, client_settings
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.messages import follow_up, to_payload, to_turns
from langchain_pplx_labs.pool import PoolSettings
from langchain_pplx_labs.protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    KNOWN_MODELS,
    LABS_ONLY_MODELS,
    WEB_MODELS,
    validate_model_name,
)
from langchain_pplx_labs.settings import ConnectionSettings
from langchain_pplx_labs.structured import Method, SchemaSpec, structured_output
from langchain_pplx_labs.tools import (
    ChoiceSpec,
    convert_tools,
    parse_tool_stream,
    prepare_request,
    request_seed,
    restore_errors,
    tool_choice_name,
)
from langchain_pplx_labs.web.codec import web_model_preference
from langchain_pplx_labs.web.models import ModelList


class ChatPerplexityLabs(ModelFields):
    r"""Chat model for Perplexity's web app (Server-Sent Events) and its retired Labs playground (Socket.IO).

    Neither has an official API: this model speaks the web app's SSE ask (`transport="web"`,
    the default) or the playground's Socket.IO protocol (`transport="labs"`), splits
    `<think>` reasoning from the answer, and returns the cited sources as response metadata.
    Tool calling and structured output are prompted and strictly parsed on the client.
    The Labs playground was retired in 2025-09: against the live site `transport="labs"`
    raises `PerplexityLabsRetiredError`; the emulator and cassettes still speak it.

    The outputs shown below come from the bundled emulator, so they are synthetic but exact
    (the test suite runs every example here and compares): start it with
    `pplx-labs serve --follow-tools --port 0` and export the URL it prints as
    `PPLX_LABS_BASE_URL` to reproduce them. Live answers differ.

    ???+ info "Setup"

        Install `langchain-pplx-labs`. No API key is needed; a session cookie is optional.

        ```bash
        pip install -U langchain-pplx-labs

        # optional: a session cookie, kept as a secret
        export PPLX_LABS_COOKIES="cf_clearance=..."
        # offline: the emulator instead of https://www.perplexity.ai
        export PPLX_LABS_BASE_URL="http://127.0.0.1:PORT"
        # the retired Labs playground's Socket.IO instead of the web app (the emulator serves both)
        export PPLX_LABS_TRANSPORT="labs"
        ```

    ??? info "Instantiate"

        ```python
        from langchain_pplx_labs import ChatPerplexityLabs

        llm = ChatPerplexityLabs(
            # model="turbo",                      # default "auto": the account picks (llm.list_models())
            timeout=60,
            max_retries=2,
            # base_url="http://127.0.0.1:PORT",  # or env PPLX_LABS_BASE_URL
            # cookies="...",                      # or env PPLX_LABS_COOKIES
        )
        ```

        The model holds warm sockets: close it (`llm.close()`, `await llm.aclose()`, or use it
        as a context manager) in long-lived programs.

    ??? info "Transport"

        The model asks the web app (`transport="web"`, whose default model is `auto`) unless
        `transport="labs"` (or `PPLX_LABS_TRANSPORT=labs`) picks the retired Labs playground
        (default model `r1-1776`); everything below works the same over either:

        ```python
        print(ChatPerplexityLabs().model)
        with ChatPerplexityLabs(transport="labs") as labs:
            answer = labs.invoke("What is the capital of France?")
        print(labs.model, answer.response_metadata["citations"])
        ```

        ```text
        auto
        r1-1776 ['https://en.wikipedia.org/wiki/Paris', 'https://www.britannica.com/place/Paris']
        ```

        The web app sits behind Cloudflare, which checks that a client's TLS and HTTP/2 opening are a
        browser's: over the web the model speaks as Chrome through curl_cffi (`impersonate="chrome"`,
        the default, or `PPLX_LABS_IMPERSONATE`; another of curl_cffi's targets may be named), with
        that browser's own User-Agent. `impersonate=None` asks through plain aiohttp.

    ??? info "Invoke"

        ```python
        messages = [
            ("system", "Answer in one sentence and cite your sources."),
            ("human", "What is the capital of France?"),
        ]
        msg = llm.invoke(messages)
        print(msg.content)
        ```

        ```text
        The capital of France is Paris [1]. It has been the seat of the French government for most of the country's history [2].
        ```

    ??? info "Stream"

        ```python
        for chunk in llm.stream(messages):
            print(chunk.content, end="|")
        ```

        ```text
        The capital of France is| Paris [1]. It has been |the seat of the French g|overnment for most of th|e country's history [2].||
        ```

        Chunks add up to the whole message; the last one carries the sources and usage:

        ```python
        stream = llm.stream(messages)
        full = next(stream)
        for chunk in stream:
            full += chunk
        print(full.content == msg.content, full.response_metadata["citations"])
        ```

        ```text
        True ['https://en.wikipedia.org/wiki/Paris', 'https://www.britannica.com/place/Paris']
        ```

    ??? info "Async"

        `ainvoke`, `astream`, `abatch` and `astream_events` run on the caller's event loop:

        ```python
        msg = await llm.ainvoke("What is LangChain?")
        print(msg.content)

        async for chunk in llm.astream("What is Socket.IO?"):
            print(chunk.content, end="")
        print()

        answers = await llm.abatch(["What is LangChain?", "What is Socket.IO?"])
        print([answer.content.split(" is ")[0] for answer in answers])
        ```

        ```text
        LangChain is a framework for building applications with large language models [1]. It composes prompts, models and tools into chains and agents [2].
        Socket.IO is a protocol for bidirectional, event-based communication, built on Engine.IO [1]. It falls back from WebSocket to HTTP long-polling when needed [2].
        ['LangChain', 'Socket.IO']
        ```

    ??? info "Tool calling"

        Tools are described to the model in a system instruction and its JSON answer is
        checked against each tool's schema; a call that does not fit lands in
        `invalid_tool_calls` with the reason. `tool_choice` takes `"auto"`, `"any"`, a tool
        name or `"none"`.

        ```python
        from pydantic import BaseModel, Field


        class GetWeather(BaseModel):
            '''Get the current weather in a given city.'''

            city: str = Field(description="City name, e.g. Paris")


        llm_with_tools = llm.bind_tools([GetWeather])
        ai_msg = llm_with_tools.invoke("What is the weather in 'Paris' today?")
        print([(call["name"], call["args"]) for call in ai_msg.tool_calls])
        ```

        ```text
        [('GetWeather', {'city': 'Paris'})]
        ```

    ??? info "Structured output"

        `with_structured_output` takes a pydantic model, a TypedDict or a JSON Schema;
        `method` is `"function_calling"` (default), `"json_schema"` or `"json_mode"`, and
        `include_raw=True` returns the raw message and any parsing error instead of raising.

        ```python
        from pydantic import BaseModel, Field


        class City(BaseModel):
            '''Facts about a city.'''

            name: str
            population: int = Field(description="Inhabitants of the city proper")


        structured_llm = llm.with_structured_output(City)
        print(repr(structured_llm.invoke("Facts about 'Paris', population 2102650")))
        ```

        ```text
        City(name='Paris', population=2102650)
        ```

    ??? info "Reasoning output"

        Over the web, `pplx_reasoning` and `r1` (and every `*thinking` name) stream the web app's
        plan (its `plan_block` goals) before the answer; over Labs, `r1-1776`, `sonar-reasoning` and
        `sonar-reasoning-pro` think in a `<think>` section first. Either way the reasoning streams
        into `additional_kwargs["reasoning_content"]`, not into `content` (`reasoning=False` drops it):

        ```python
        reasoner = ChatPerplexityLabs(model="pplx_reasoning")
        msg = reasoner.invoke("What is the capital of France?")
        print(msg.additional_kwargs["reasoning_content"])
        print(msg.content_blocks[0]["type"], msg.content_blocks[1]["type"])
        ```

        ```text
        The user asks: What is the capital of France?. I should answer briefly and cite my sources.
        reasoning text
        ```

    ??? info "Token usage"

        `output_tokens` is the server's `tokens_streamed`; Labs reports no input count, so
        `input_tokens` is an estimate (characters / 4):

        ```python
        msg = llm.invoke(messages)
        print(msg.usage_metadata)
        ```

        ```text
        {'input_tokens': 19, 'output_tokens': 30, 'total_tokens': 49}
        ```

        Streams carry it on their last chunk (`stream_usage=False` leaves it out).

    ??? info "Response metadata"

        Sources come in the order the answer's `[n]` markers use, in
        `response_metadata["citations"]` (and `additional_kwargs["citations"]`); over Labs the
        server's `elapsed_time` comes too. Over the web, `images` and `related_questions` come
        when the web app sends them, and the thread's ids (`backend_uuid`, `read_write_token`, a
        credential, and `thread_url_slug`): given back at the end of a history, the next question
        is a follow-up in that thread (`docs/web_transport.md`, "Threads and search options"):

        ```python
        print(msg.response_metadata)
        ```

        ```text
        {'model_provider': 'perplexity_labs', 'model_name': 'auto', 'finish_reason': 'stop', 'citations': ['https://en.wikipedia.org/wiki/Paris', 'https://www.britannica.com/place/Paris']...}
        ```

        When the sources carry titles, `response_metadata["search_results"]` lists them
        (`url`, `title`, and more when sent); `output_version="v1"` turns each `[n]` into a
        `citation` annotation on the text block:

        ```python
        for result in msg.response_metadata.get("search_results", []):
            print(result["title"], result["url"])

        with ChatPerplexityLabs(output_version="v1") as v1_llm:
            v1 = v1_llm.invoke("What is the capital of France?")
        print(v1.content[0]["annotations"][0])
        ```

        ```text
        {'type': 'citation', 'url': 'https://en.wikipedia.org/wiki/Paris', 'start_index': 31, 'end_index': 34, 'cited_text': '[1]'}
        ```

    ??? info "Model profile"

        `llm.profile` tells LangChain what the model can do:
        text only, prompted tool calling, reasoning output for the reasoning models, and
        `max_input_tokens` from `max_input_chars` / 4. Pass `profile={...}` to replace it.

        ```python
        print(llm.profile["max_input_tokens"], llm.profile["tool_calling"], llm.profile["image_inputs"])
        print(reasoner.profile["reasoning_output"])
        ```

        ```text
        64000 True False
        True
        ```
    """

    # The client for the current settings, and those a setting change replaced (closed by close()).
    _clients: ClientCache = PrivateAttr(default_factory=ClientCache)
    # Unknown call arguments already warned about: once per name, not once per call of a loop.
    _warned_arguments: set[str] = PrivateAttr(default_factory=set)

    @model_validator(mode="after")
    def _warn_labs_name_on_the_web(self) -> Self:
        # Issue #31: the paid API's (and Labs') names have no web name in any source; say so once, here.
        if self.transport == "web" and self.model in LABS_ONLY_MODELS:
            warnings.warn(
                f"model={self.model!r} is a name of Labs and the paid API, not of the web app (transport='web'): "
                "it is sent as given, and the web app will most likely refuse it or pick its default. Web "
                f"models: {', '.join(WEB_MODELS)} (llm.list_models() reads the live list)",
                UserWarning,
                stacklevel=4,  # past pydantic and Serializable.__init__: the caller
            )
        return self

    @property
    def _llm_type(self) -> str:
        return "perplexity-labs-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "base_url": self.base_url,
            "reasoning": self.reasoning,
            "transport": self.transport,
            "impersonate": self.impersonate,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        # No ls_temperature/ls_max_tokens: Labs takes neither, so the model has no such fields.
        model = kwargs.get("model") or self.model
        params = LangSmithParams(ls_provider=PROVIDER, ls_model_name=model, ls_model_type="chat")
        stop = stop or self.stop
        if stop:
            params["ls_stop"] = list(stop)
        return params

    # -- serialization -------------------------------------------------------------------

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["langchain_pplx_labs", "chat_models"]

    # -- connection management ---------------------------------------------------------

    @property
    def _current_client(self) -> Client | None:
        """The client for the latest settings used, if any."""
        return self._clients.client

    def _settings(self) -> tuple[ConnectionSettings, PoolSettings]:
        return client_settings(self)

    def _client(self) -> Client:
        """The client for the current settings: built anew after one changed (the old one is kept to close)."""
        clients, client = self._clients.client_for(self)
        if clients is not self._clients:
            self._clients = clients
        return client

    # -- the web app's models ------------------------------------------------------------

    async def alist_models(self) -> ModelList:
        """The web app's models (``GET /rest/models/config``), read once per pool with this model's cookies.

        Typed rows (:class:`~langchain_pplx_labs.web.models.WebModel`: identifier, label, mode,
        provider, subscription tier, default, reasoning); ``.source`` says which list: ``"live"``, or
        ``"fallback"`` (the record's :data:`~langchain_pplx_labs.protocol.WEB_MODELS`, ``.reason`` says
        why) when the web app's could not be read within the connect timeout. Once read live, a default
        profile follows the list, and asking a model the session's tier lacks raises
        :class:`~langchain_pplx_labs.errors.PerplexityLabsModelAccessError` before sending.
        """
        if self.transport != "web":
            raise PerplexityLabsInputError(
                "The model list is the web app's (transport='web'); the Labs playground has none to read: "
                f"its models were {', '.join(KNOWN_MODELS)}"
            )
        models = await self._client().model_list()
        self._follow_model_list(models)
        return models

    def list_models(self) -> ModelList:
        """The web app's models; see :meth:`alist_models`."""
        return run_sync(self.alist_models())

    def _follow_model_list(self, models: ModelList) -> None:
        """A default profile made again from the live list's row of this model (its reasoning flag)."""
        row = models.get(web_model_preference(self.model)) if models.source == "live" else None
        if row is not None and isinstance(self.profile, DefaultProfile):
            self.profile = cast(
                "Any", default_profile(self.model, self.max_input_chars, listed_reasoning=row.reasoning)
            )

    async def awarmup(self) -> None:
        """Open a socket now, on this event loop, so the first question skips the handshake."""
        await self._client().warmup()

    def warmup(self) -> None:
        """Open a socket for sync calls ahead of the first question."""
        run_sync(self._client().warmup())

    async def aclose(self) -> None:
        """Close this model's sockets on the current event loop."""
        # Replaced clients are forgotten once closed here; their pools on other loops still
        # close when those loops shut down.
        clients = self._clients
        self._clients = clients.without_retired()
        await clients.aclose()

    def close(self) -> None:
        """Close the sockets sync calls use."""
        run_sync(self.aclose())

    def __enter__(self) -> ChatPerplexityLabs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> ChatPerplexityLabs:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- tools and structured output ---------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: ChoiceSpec = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools, described to the model in a system instruction (see ``langchain_pplx_labs.tools``).

        ``tool_choice``: ``"auto"`` (default), ``"any"``/``"required"``, a tool name, or ``"none"``;
        OpenAI (``{"type": "function", ...}``) and Anthropic (``{"type": "any"|"tool", ...}``) dicts too.
        """
        formatted = convert_tools(tools, strict=strict)
        tool_choice_name(tool_choice, formatted)  # fail at bind time, not at the first call
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: SchemaSpec | None = None,
        *,
        method: Method = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Answers parsed into ``schema`` (pydantic model, TypedDict or JSON Schema).

        ``method="function_calling"`` goes through the tool-call path; ``"json_mode"`` and
        ``"json_schema"`` ask for bare JSON. ``include_raw=True`` returns ``raw``, ``parsed``
        and ``parsing_error`` instead of raising ``OutputParserException``. ``strict`` is
        accepted for compatibility; answers are always validated against the schema.
        """
        if kwargs:
            raise PerplexityLabsInputError(f"Unsupported with_structured_output arguments: {sorted(kwargs)}")
        return structured_output(self, schema, method=method, include_raw=include_raw)

    # -- generation ----------------------------------------------------------------------

    def _chunks_for(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], *, streamed: bool
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._warn_unknown_arguments(kwargs)
        # Labs has no tools parameter: tools and JSON formats travel as a system instruction.
        prepared, tools = prepare_request(messages, kwargs)
        model = validate_model_name(kwargs["model"], self.transport) if kwargs.get("model") else self.model
        # An instruction may be prepended: errors must still name the caller's message indexes.
        first_index = len(messages) - len(prepared)
        thread = follow_up(prepared) if self.transport == "web" else None
        asked = prepared[-1:] if thread else prepared
        payload = to_payload(
            asked,
            model,
            protocol=self.protocol,
            max_input_chars=self.max_input_chars,
            first_index=len(messages) - 1 if thread else first_index,
        )
        if self.transport == "web":
            if thread:
                payload["thread"] = thread  # a follow-up: the new turn alone, in the answer's thread
            web_params = self._web_params()
            if web_params:
                payload["web_params"] = web_params
        chunks = answer_chunks(
            self._client,
            payload,
            keep_reasoning=self.reasoning is not False,
            stops=normalise_stop(stop if stop is not None else self.stop),
            usage=not streamed or bool(kwargs.get("stream_usage", self.stream_usage)),
            turns=to_turns(prepared, first_index=first_index) if self.transport == "web" else None,
        )
        return parse_tool_stream(chunks, tools, seed=request_seed(prepared)) if tools else chunks

    def _warn_unknown_arguments(self, kwargs: Mapping[str, Any]) -> None:
        # As the constructor warns about unknown fields: llm.invoke("Hi", top_p=0.5) must not pass silently.
        for name in unknown_call_arguments(kwargs):
            if name not in self._warned_arguments:
                self._warned_arguments.add(name)
                warnings.warn(
                    unknown_argument_warning(type(self).__name__, "call argument", name),
                    UserWarning,
                    stacklevel=2,
                )

    def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        chunks = self._chunks_for(messages, stop, kwargs, streamed=True)
        if nothing_to_report(run_manager, self.output_version):
            return chunks  # BaseChatModel.astream passes no run manager
        return areported(chunks, run_manager, self.output_version)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        chunks = iterate_sync(self._chunks_for(messages, stop, kwargs, streamed=True))
        if nothing_to_report(run_manager, self.output_version):
            return chunks  # BaseChatModel.stream passes no run manager
        return reported(chunks, run_manager, self.output_version)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._chunks_for(messages, stop, kwargs, streamed=False))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(iterate_sync(self._chunks_for(messages, stop, kwargs, streamed=False)))

    # langchain-core answers invoke from _generate, or from _stream plus its own chunk merging
    # (streaming=True, astream_events, LangGraph): every path ends here, so invalid calls get
    # their errors and raw args back whichever path ran, and streaming callbacks stay core's.
    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return restore_errors(super()._generate_with_cache(messages, stop, run_manager, **kwargs))

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return restore_errors(await super()._agenerate_with_cache(messages, stop, run_manager, **kwargs))


pay_first_call_costs(
    lambda: ChatPerplexityLabs(
        base_url=DEFAULT_BASE_URL, model=DEFAULT_MODEL, cookies=None, session_file=None
    )
)
