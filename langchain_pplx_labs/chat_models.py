"""ChatPerplexityLabs: the LangChain chat model over the Perplexity Labs playground."""

from __future__ import annotations

import contextlib
import importlib
import logging
import ssl
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Self, cast
from urllib.parse import urlsplit

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.load import dumpd
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils import from_env, secret_from_env
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from langchain_pplx_labs._blocks import PROVIDER, annotate_last_chunk
from langchain_pplx_labs._profiles import DefaultProfile, default_profile
from langchain_pplx_labs._stamped import TextChunks
from langchain_pplx_labs._stop import StopScanner, normalise_stop
from langchain_pplx_labs._sync import iterate_sync, run_sync
from langchain_pplx_labs.client import LabsClient
from langchain_pplx_labs.connection import ConnectionSettings, Timeouts
from langchain_pplx_labs.errors import PerplexityLabsError, PerplexityLabsInputError
from langchain_pplx_labs.messages import to_labs_payload
from langchain_pplx_labs.pool import PoolSettings
from langchain_pplx_labs.protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    Finished,
    LabsProtocol,
    ProgressFrame,
    ReasoningDelta,
    StreamDecoder,
    StreamEvent,
    TextDelta,
    validate_model_name,
)
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
from langchain_pplx_labs.web import WEB_DEFAULT_MODEL
from langchain_pplx_labs.wire import Service, browser_headers

if TYPE_CHECKING:
    from langchain_core.language_models.model_profile import ModelProfile

logger = logging.getLogger(__name__)
# Header names whose values are credentials: masked by dumpd and never logged.
_SECRET_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization", "x-api-key"})
# Labs reports no prompt token count; this is the usual ~4 characters per token estimate.
_CHARS_PER_TOKEN = 4
# Common chat-model arguments Labs has no use for: accepted without a warning (documented).
_IGNORED_PARAMS = frozenset({"temperature", "max_tokens"})
# Proxy schemes aiohttp-socks can dial (it has no https:// proxies).
_PROXY_SCHEMES = ("http", "socks4", "socks5")
# One chunk per frame is the hot path: validating each one cost more than the rest of the layer.
_text_chunk = TextChunks({"model_provider": PROVIDER}).make


class ChatPerplexityLabs(BaseChatModel):
    r"""Chat model for the Perplexity Labs playground, streamed over its Socket.IO WebSocket.

    Labs has no official API: this model speaks the playground's Socket.IO protocol, splits
    `<think>` reasoning from the answer, and returns the cited sources as response metadata.
    Tool calling and structured output are prompted and strictly parsed on the client.

    The outputs shown below come from the bundled emulator, so they are synthetic but exact
    (the test suite runs every example here and compares): start it with
    `pplx-labs serve --follow-tools --port 0` and export the URL it prints as
    `PPLX_LABS_BASE_URL` to reproduce them. Live answers differ.

    ???+ info "Setup"

        Install `langchain-pplx-labs`. No API key is needed; a session cookie is optional.

        ```bash
        pip install -U langchain-pplx-labs

        # optional: a playground session cookie, kept as a secret
        export PPLX_LABS_COOKIES="cf_clearance=..."
        # offline: the emulator instead of https://www.perplexity.ai
        export PPLX_LABS_BASE_URL="http://127.0.0.1:PORT"
        ```

    ??? info "Key init args — completion params"

        | Param | Type | Description |
        | --- | --- | --- |
        | `model` | `str` | Labs model: `r1-1776` (default), `sonar-pro`, `sonar`, `sonar-reasoning`, `sonar-reasoning-pro`, or a newer name. |
        | `reasoning` | `bool \| None` | `None`/`True`: thinking goes to `additional_kwargs["reasoning_content"]`; `False`: dropped. |
        | `stop` | `list[str] \| None` | Cut the answer at the first of these strings (on the client: Labs has no stop). |
        | `streaming` | `bool` | Stream internally even for `invoke`, so callbacks see each token. |
        | `stream_usage` | `bool` | Attach `usage_metadata` to the last chunk of a stream (default `True`). |
        | `max_input_chars` | `int \| None` | Refuse longer conversations before sending them (default 256 000). |

        `temperature` and `max_tokens` are accepted and ignored: Labs has neither.
        See the full list of init args and their descriptions below.

    ??? info "Key init args — client params"

        | Param | Type | Description |
        | --- | --- | --- |
        | `base_url` | `str` | Server root (`/socket.io/` is appended). Env `PPLX_LABS_BASE_URL`, default `https://www.perplexity.ai`. |
        | `timeout` | `float \| None` | Seconds for a whole answer, retries included (default 300). |
        | `connect_timeout`, `handshake_timeout`, `first_token_timeout`, `idle_timeout` | `float` | The phases of a question: 10, 10, 60 and 30 seconds. |
        | `max_retries` | `int` | Retries before the first token only (default 2). |
        | `cookies` | `SecretStr \| None` | `Cookie` header value. Env `PPLX_LABS_COOKIES`. |
        | `proxy`, `default_headers`, `verify_ssl`, `ssl_context` | | Transport: `http://`/`socks5://` proxy, extra headers, TLS. |
        | `max_connections`, `pool_idle_timeout` | `int`, `float \| None` | Warm sockets per event loop (16), and how long one stays idle (60 s). |
        | `protocol` | `LabsProtocol` | Labs' path, event names, payload version, Origin and auth, as data: change it when Labs changes. |

    ??? info "Instantiate"

        ```python
        from langchain_pplx_labs import ChatPerplexityLabs

        llm = ChatPerplexityLabs(
            model="sonar-pro",
            timeout=60,
            max_retries=2,
            # base_url="http://127.0.0.1:PORT",  # or env PPLX_LABS_BASE_URL
            # cookies="...",                      # or env PPLX_LABS_COOKIES
        )
        ```

        The model holds warm sockets: close it (`llm.close()`, `await llm.aclose()`, or use it
        as a context manager) in long-lived programs.

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

        `r1-1776`, `sonar-reasoning` and `sonar-reasoning-pro` think first; the thinking
        streams into `additional_kwargs["reasoning_content"]`, not into `content`
        (`reasoning=False` drops it):

        ```python
        reasoner = ChatPerplexityLabs(model="sonar-reasoning-pro")
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
        `response_metadata["citations"]` (and `additional_kwargs["citations"]`):

        ```python
        print(msg.response_metadata)
        ```

        ```text
        {'model_provider': 'perplexity_labs', 'model_name': 'sonar-pro', 'finish_reason': 'stop', 'citations': ['https://en.wikipedia.org/wiki/Paris', 'https://www.britannica.com/place/Paris'], 'elapsed_time': 0.25}
        ```

        When the sources carry titles, `response_metadata["search_results"]` lists them
        (`url`, `title`, and more when sent); `output_version="v1"` turns each `[n]` into a
        `citation` annotation on the text block:

        ```python
        for result in msg.response_metadata.get("search_results", []):
            print(result["title"], result["url"])

        with ChatPerplexityLabs(model="sonar-pro", output_version="v1") as v1_llm:
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

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    model: str = Field(default=DEFAULT_MODEL, alias="model_name")
    """Labs model: r1-1776, sonar-pro, sonar, sonar-reasoning, sonar-reasoning-pro, or any newer name."""
    base_url: str = Field(default_factory=from_env("PPLX_LABS_BASE_URL", default=DEFAULT_BASE_URL))
    """Server root; ``/socket.io/`` is appended. Env: ``PPLX_LABS_BASE_URL``."""
    timeout: float | None = Field(default=300.0, alias="request_timeout")
    """Upper bound in seconds on a whole call, retries and backoff included; ``None`` for no bound. Not retried."""
    connect_timeout: float = 10.0
    """Seconds to open the TCP (and TLS) connection, per attempt; retried (``max_retries``)."""
    handshake_timeout: float = 10.0
    """Seconds for the Engine.IO / Socket.IO handshake once connected, per attempt; retried (``max_retries``)."""
    first_token_timeout: float | None = 60.0
    """Seconds to wait for the first frame after the question is sent. Not retried: the server has the question."""
    idle_timeout: float | None = 30.0
    """Seconds of silence allowed between two frames of an answer. Not retried."""
    max_retries: int = 2
    """Retries for connection failures before the first token (connect and handshake failures and
    timeouts, a socket dropped before answering); never after text was streamed, never for a
    first_token, idle or total timeout (a slow answer is not asked again)."""
    retry_server_failures: bool = False
    """Also retry when the server answers ``status: failed``."""
    proxy: str | None = None
    """``http://``, ``socks5://`` or ``socks4://`` proxy URL with a port (checked at construction)."""
    default_headers: dict[str, str] | None = Field(default=None, repr=False)
    """Extra HTTP headers (e.g. cookies); never logged, shown masked."""
    verify_ssl: bool = True
    """Verify TLS certificates (on by default)."""
    ssl_context: ssl.SSLContext | None = Field(default=None, exclude=True, repr=False)
    """A custom TLS context, e.g. to trust a private CA; overrides ``verify_ssl``."""
    streaming: bool = False
    """Stream internally even for ``invoke`` (callbacks then see each token)."""
    reasoning: bool | None = None
    """``None``/``True``: thinking goes to ``reasoning_content``; ``False``: dropped."""
    stream_usage: bool = True
    """Attach ``usage_metadata`` to the last chunk of a stream."""
    max_connections: int = Field(default=16, ge=1)
    """Sockets this model may hold per event loop; also its concurrency limit."""
    pool_idle_timeout: float | None = 60.0
    """Seconds a warm socket stays open unused."""
    drain_timeout: float = 30.0
    """Seconds the rest of an answer the caller stopped reading (a ``break``, a stop sequence, a
    cancel) is read in the background to keep its socket warm; ``0`` closes the socket instead."""
    max_input_chars: int | None = 256_000
    """Refuse conversations longer than this before sending them."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    """Cut the answer at the first of these strings (Labs has no server-side stop)."""
    cookies: SecretStr | None = Field(default_factory=secret_from_env("PPLX_LABS_COOKIES", default=None))
    """``Cookie`` header value (e.g. a session); a secret: masked, and a secret in ``dumpd``. Env: ``PPLX_LABS_COOKIES``."""
    protocol: LabsProtocol = Field(default_factory=LabsProtocol)
    """Labs' path, event names, payload version, Origin and auth; change it when Labs changes."""
    transport: Service = Field(
        default_factory=cast("Callable[[], Service]", from_env("PPLX_LABS_TRANSPORT", default="labs"))
    )
    """``labs``: the Labs playground's Socket.IO; ``web``: the web app's Server-Sent Events (whose default
    model is ``WEB_DEFAULT_MODEL`` when ``model`` is not given). Env: ``PPLX_LABS_TRANSPORT``."""

    _client: LabsClient | None = PrivateAttr(default=None)
    _client_key: tuple[Any, ...] | None = PrivateAttr(default=None)
    # Clients replaced after a setting changed; their sockets are closed by close()/aclose().
    _retired: tuple[LabsClient, ...] = PrivateAttr(default=())

    @model_validator(mode="before")
    @classmethod
    def _warn_unknown_params(cls, values: Any) -> Any:
        # Like langchain-openai: a typo (``modl=``) or another provider's option should not
        # pass silently, yet it must not break code written for other chat models either.
        if isinstance(values, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            for key in values:
                if key not in known and key not in _IGNORED_PARAMS:
                    warnings.warn(
                        f"ChatPerplexityLabs got unknown parameter {key!r}; it is ignored",
                        UserWarning,
                        stacklevel=4,  # past pydantic and Serializable.__init__: the caller
                    )
        return values

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        return validate_model_name(value)

    @field_validator("transport", mode="before")
    @classmethod
    def _check_transport(cls, value: Any) -> Any:
        if value not in ("labs", "web"):
            raise PerplexityLabsInputError(f"Invalid transport {value!r}: use 'labs' or 'web'")
        return value

    @model_validator(mode="after")
    def _web_default_model(self) -> ChatPerplexityLabs:
        # Labs' default model does not exist on the web app: there, an unnamed model is the web's default.
        if self.transport == "web" and "model" not in self.model_fields_set:
            self.model = WEB_DEFAULT_MODEL
        return self

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise PerplexityLabsInputError(
                f"Invalid base_url {value!r}: expected http(s)://host[:port], e.g. {DEFAULT_BASE_URL}"
            )
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in _PROXY_SCHEMES or not parts.hostname or port is None:
            raise PerplexityLabsInputError(
                f"Invalid proxy {value!r}: expected scheme://[user:password@]host:port with scheme "
                f"{', '.join(_PROXY_SCHEMES)}, e.g. socks5://127.0.0.1:1080"
            )
        return value

    @field_validator("timeout", "connect_timeout", "handshake_timeout", "first_token_timeout", "idle_timeout")
    @classmethod
    def _check_timeout(cls, value: float | None) -> float | None:
        # A zero or negative budget would fail every call with a timeout that never had a chance.
        if value is not None and not value > 0:
            raise PerplexityLabsInputError(f"Invalid timeout {value!r}: use a positive number of seconds")
        return value

    @field_validator("pool_idle_timeout", "max_retries", "drain_timeout")
    @classmethod
    def _check_not_negative(cls, value: float | None) -> float | None:
        if value is not None and not value >= 0:
            raise PerplexityLabsInputError(f"Invalid value {value!r}: use zero or more")
        return value

    @model_validator(mode="before")
    @classmethod
    def _drop_default_profile(cls, values: Any) -> Any:
        # configurable_fields(model=...) rebuilds a model from another's fields, profile included:
        # a profile made for the other model's settings is made afresh; one the user gave is kept.
        if isinstance(values, dict) and isinstance(values.get("profile"), DefaultProfile):
            return {key: value for key, value in values.items() if key != "profile"}
        return values

    @model_validator(mode="after")
    def _set_labs_profile(self) -> ChatPerplexityLabs:
        # Newer langchain-core fills ``profile`` from _resolve_model_profile itself; cores from
        # before that hook (profiles came in 1.1) need this validator.
        if self.profile is None:
            self.profile = self._resolve_model_profile()
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied; a default profile follows a changed model or size bound."""
        copied = super().model_copy(update=update, deep=deep)
        changed = set(update or ()) & {"model", "max_input_chars"}
        if changed and "profile" not in (update or {}) and isinstance(self.profile, DefaultProfile):
            copied.profile = copied._resolve_model_profile()
        return copied

    def _resolve_model_profile(self) -> ModelProfile | None:
        """This model's default profile (a ``profile=`` given at construction replaces it)."""
        return cast("ModelProfile", default_profile(self.model, self.max_input_chars))

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

    @property
    def lc_secrets(self) -> dict[str, str]:
        """``cookies`` is a secret; credential headers in ``default_headers`` are masked too."""
        # langchain-core escapes nested secret markers, so a dump with credential headers
        # never holds them in clear, but only top-level ``cookies`` is restored by ``load``.
        headers = {
            f"default_headers.{name}": "PPLX_LABS_" + name.upper().replace("-", "_")
            for name in self.default_headers or {}
            if name.lower() in _SECRET_HEADERS
        }
        return {"cookies": "PPLX_LABS_COOKIES", **headers}

    def to_json(self) -> Any:
        # ``load`` rebuilds only Serializable objects: the protocol travels as its plain fields,
        # and only when it is not the default, so dumps of ordinary models do not change.
        data = super().to_json()
        kwargs = data.get("kwargs")
        if isinstance(kwargs, dict) and isinstance(kwargs.get("protocol"), LabsProtocol):
            protocol = kwargs.pop("protocol")
            if protocol != LabsProtocol():
                kwargs["protocol"] = protocol.model_dump()
        return data

    def __getstate__(self) -> dict[Any, Any]:
        # Sockets and event loops cannot be pickled; the copy opens its own on first use.
        state: dict[Any, Any] = super().__getstate__()
        private = dict(state.get("__pydantic_private__") or {})
        private.update(_client=None, _client_key=None, _retired=())
        state["__pydantic_private__"] = private
        return state

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> ChatPerplexityLabs:
        # Deep-copying live sockets and event loops fails; the copy opens its own client instead.
        memo = {} if memo is None else memo
        if self._client is not None:
            memo[id(self._client)] = None
        memo[id(self._retired)] = ()
        return super().__deepcopy__(memo)

    # -- connection management ---------------------------------------------------------

    def _settings(self) -> tuple[ConnectionSettings, PoolSettings]:
        headers = {**browser_headers(self.protocol), **(self.default_headers or {})}
        if self.cookies is not None:
            headers["Cookie"] = self.cookies.get_secret_value()
        timeouts = Timeouts(
            connect=self.connect_timeout,
            handshake=self.handshake_timeout,
            first_token=self.first_token_timeout,
            idle=self.idle_timeout,
            total=self.timeout,
        )
        ssl_option: ssl.SSLContext | bool = self.ssl_context or self.verify_ssl
        return (
            ConnectionSettings(
                self.base_url, tuple(headers.items()), timeouts, self.protocol, self.transport
            ),
            PoolSettings(
                self.max_connections,
                self.pool_idle_timeout,
                self.proxy,
                ssl_option,
                drain_timeout=self.drain_timeout,
            ),
        )

    def _labs_client(self) -> LabsClient:
        connection, pool = self._settings()
        key = (connection, pool, self.max_retries, self.retry_server_failures)
        if self._client is None or self._client_key != key:
            if self._client is not None:
                # A setting changed: the old client may still hold warm sockets on some loop.
                self._retired = (*self._retired, self._client)
            self._client = LabsClient(
                connection,
                pool,
                max_retries=self.max_retries,
                retry_server_failures=self.retry_server_failures,
            )
            self._client_key = key
        return self._client

    async def awarmup(self) -> None:
        """Open a socket now, on this event loop, so the first question skips the handshake."""
        await self._labs_client().warmup()

    def warmup(self) -> None:
        """Open a socket for sync calls ahead of the first question."""
        run_sync(self._labs_client().warmup())

    async def aclose(self) -> None:
        """Close this model's sockets on the current event loop."""
        await self._close_clients()

    def close(self) -> None:
        """Close the sockets sync calls use."""
        run_sync(self._close_clients())

    async def _close_clients(self) -> None:
        # Retired clients are dropped once closed here; their pools on other loops still
        # close when those loops shut down.
        retired, self._retired = self._retired, ()
        for client in (*retired, self._client):
            if client is not None:
                await client.aclose()

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

    def _payload(
        self, messages: Sequence[BaseMessage], model: str | None = None, *, first_index: int = 0
    ) -> dict[str, Any]:
        return to_labs_payload(
            messages,
            model or self.model,
            protocol=self.protocol,
            max_input_chars=self.max_input_chars,
            first_index=first_index,
        )

    async def _chunks(
        self,
        messages: list[BaseMessage],
        *,
        include_usage: bool,
        stop: list[str] | None = None,
        model: str | None = None,
        first_index: int = 0,
    ) -> AsyncIterator[ChatGenerationChunk]:
        model = validate_model_name(model) if model else self.model
        payload = self._payload(messages, model, first_index=first_index)
        input_tokens = _estimate_tokens(sum(len(m["content"]) for m in payload["messages"]))
        decoder = StreamDecoder(model, keep_reasoning=self.reasoning is not False)
        scanner = StopScanner(normalise_stop(stop if stop is not None else self.stop))
        usage_input = input_tokens if include_usage else None
        logger.debug("Labs query: model=%s, %d messages", model, len(payload["messages"]))
        try:
            # stream() is an async generator; closing it on an early stop releases the socket now.
            stream = cast("AsyncGenerator[ProgressFrame, None]", self._labs_client().stream(payload))
            async with aclosing(stream) as frames:
                async for frame in frames:
                    for event in decoder.feed(frame):
                        if not scanner.stops:
                            yield self._chunk(event, decoder, usage_input)
                            continue
                        for out in _apply_stop(event, scanner):
                            yield self._chunk(out, decoder, usage_input)
                        if scanner.stopped:
                            # Leaving the stream hands the socket to the pool, which reads the
                            # rest of the answer in the background before reusing it.
                            logger.debug("Labs answer cut at a stop sequence")
                            return
        except PerplexityLabsError as exc:
            exc.partial_content = exc.partial_content or decoder.answer_so_far
            raise
        logger.debug("Labs answer finished: model=%s, %d chars", model, len(decoder.answer_so_far))

    def _chunks_for(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], usage: bool
    ) -> AsyncIterator[ChatGenerationChunk]:
        # Labs has no tools parameter: tools and JSON formats travel as a system instruction.
        prepared, tools = prepare_request(messages, kwargs)
        # An instruction may be prepended: errors must still name the caller's message indexes.
        first_index = len(messages) - len(prepared)
        chunks = self._chunks(
            prepared, include_usage=usage, stop=stop, model=kwargs.get("model"), first_index=first_index
        )
        return parse_tool_stream(chunks, tools, seed=request_seed(prepared)) if tools else chunks

    def _chunk(
        self, event: StreamEvent, decoder: StreamDecoder, input_tokens: int | None
    ) -> ChatGenerationChunk:
        if isinstance(event, TextDelta):
            return _text_chunk(event.text)
        if isinstance(event, ReasoningDelta):
            return ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    additional_kwargs={"reasoning_content": event.text},
                    response_metadata={"model_provider": PROVIDER},
                )
            )
        return ChatGenerationChunk(message=self._final_message(event, decoder, input_tokens))

    def _final_message(
        self, event: Finished, decoder: StreamDecoder, input_tokens: int | None
    ) -> AIMessageChunk:
        citations = [source.url for source in event.sources]
        metadata: dict[str, Any] = {
            "model_name": decoder.model,
            "model_provider": PROVIDER,
            "finish_reason": "stop",
            "citations": citations,
        }
        if event.rich_sources:
            metadata["search_results"] = [source.model_dump(exclude_none=True) for source in event.sources]
        if event.elapsed_time is not None:
            metadata["elapsed_time"] = event.elapsed_time
        usage = None
        if input_tokens is not None:
            output_tokens = event.tokens_streamed
            if output_tokens is None:
                output_tokens = _estimate_tokens(len(decoder.answer_so_far))
            usage = UsageMetadata(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
            )
        return AIMessageChunk(
            content="",
            additional_kwargs={"citations": list(citations)},
            response_metadata=metadata,
            usage_metadata=usage,
            chunk_position="last",
        )

    def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        include_usage = bool(kwargs.get("stream_usage", self.stream_usage))
        chunks = self._chunks_for(messages, stop, kwargs, include_usage)
        if run_manager is None and self.output_version != "v1":
            # BaseChatModel.astream passes no run manager: nothing to add per chunk, and one
            # async-generator level less on every chunk.
            return chunks
        return self._reported(chunks, run_manager)

    async def _reported(
        self, chunks: AsyncIterator[ChatGenerationChunk], run_manager: AsyncCallbackManagerForLLMRun | None
    ) -> AsyncIterator[ChatGenerationChunk]:
        """``chunks`` with per-token callbacks and, for ``output_version="v1"``, the closing annotations."""
        parts: list[str] = []
        async for chunk in chunks:
            self._note_chunk(chunk, parts)
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        include_usage = bool(kwargs.get("stream_usage", self.stream_usage))
        parts: list[str] = []
        for chunk in iterate_sync(self._chunks_for(messages, stop, kwargs, include_usage)):
            self._note_chunk(chunk, parts)
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _note_chunk(self, chunk: ChatGenerationChunk, parts: list[str]) -> None:
        """Keep ``chunk``'s text; for ``output_version="v1"``, annotate the closing chunk with all of it."""
        parts.append(chunk.text)
        # Join only at the closing chunk: joining per chunk would make long answers quadratic.
        if self.output_version == "v1" and getattr(chunk.message, "chunk_position", None) == "last":
            annotate_last_chunk(chunk.message, "".join(parts))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._chunks_for(messages, stop, kwargs, True))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(iterate_sync(self._chunks_for(messages, stop, kwargs, True)))

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


def _estimate_tokens(chars: int) -> int:
    return max(1, -(-chars // _CHARS_PER_TOKEN)) if chars else 0


def _apply_stop(event: StreamEvent, scanner: StopScanner) -> list[StreamEvent]:
    """Pass ``event`` through the stop scanner: answer text may be held back, cut or ended early."""
    if isinstance(event, TextDelta):
        text = scanner.feed(event.text)
        out: list[StreamEvent] = [TextDelta(text)] if text else []
        if scanner.stopped:
            # No final frame will come: close the answer here, without the sources it never sent.
            tokens = _estimate_tokens(scanner.emitted)
            out.append(Finished(sources=(), rich_sources=False, tokens_streamed=tokens, elapsed_time=None))
        return out
    if isinstance(event, Finished):
        tail = scanner.flush()
        return [TextDelta(tail), event] if tail else [event]
    return [event]


# What langchain-core imports on a chat model's first call (callbacks, tracers, chunk translation);
# internal names, so a langchain-core without one of them is skipped, not an error.
_FIRST_CALL_IMPORTS = (
    "langchain_core.tracers.context",
    "langchain_core.tracers.stdout",
    "langchain_core.tracers.run_collector",
    "langchain_core.messages.block_translators.langchain_v0",
)


def _pay_first_call_costs() -> None:
    """Pay langchain-core's one-off costs of a model's first call here, at import, not in the first question.

    Measured in fresh processes (``benchmarks/ttft.py``, 0 RTT): the callback manager's first use
    imports LangSmith's tracer and friends (≈ 7 of the first question's ≈ 10.5 ms of client CPU);
    the class's first ``dumpd`` (the run's serialized model) ≈ 0.4 ms more.
    """
    for name in _FIRST_CALL_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    dumpd(ChatPerplexityLabs(base_url=DEFAULT_BASE_URL, model=DEFAULT_MODEL, cookies=None))


_pay_first_call_costs()
