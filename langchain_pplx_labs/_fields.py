"""The fields every ChatPerplexityLabs has: defaults, environment variables, checks and serialization."""

from __future__ import annotations

import os
import ssl
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.utils import from_env, secret_from_env
from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from langchain_pplx_labs._profiles import default_profile, drop_default_profile, profile_outdated
from langchain_pplx_labs.cookies import cookie_header
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.protocol import (
    DEFAULT_BASE_URL,
    RECENCY_FILTERS,
    SEARCH_SOURCES,
    LabsProtocol,
    default_model,
    validate_model_name,
)
from langchain_pplx_labs.session_file import load_session, session_path
from langchain_pplx_labs.settings import (
    DEFAULT_IMPERSONATE,
    Service,
    check_base_url,
    check_impersonate,
    check_not_negative,
    check_proxy_url,
    check_timeout,
)

if TYPE_CHECKING:
    from langchain_core.language_models.model_profile import ModelProfile

# Header names whose values are credentials: masked by dumpd and never logged.
_SECRET_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization", "x-api-key"})

# Common chat-model arguments Labs has no use for: accepted without a warning (documented).
_IGNORED_PARAMS = frozenset({"temperature", "max_tokens"})
CALL_ARGUMENTS = frozenset({"model", "stream_usage", "tools", "tool_choice", "response_format"})
"""What a call may pass besides ``stop``: read by the model (``model`` and ``stream_usage`` override the
fields; the rest is how ``bind_tools`` and ``with_structured_output`` bind)."""
# What LangChain itself passes down a call (its callbacks and run config, with_structured_output's
# tracing hint), and what other providers' helpers bind (create_agent's parallel_tool_calls, strict):
# never the caller's mistake, so never warned about.
_LANGCHAIN_CALL_ARGUMENTS = frozenset(
    {
        "callbacks",
        "tags",
        "metadata",
        "run_name",
        "run_id",
        "run_manager",
        "config",
        "ls_structured_output_format",
        "parallel_tool_calls",
        "strict",
    }
)


def unknown_argument_warning(owner: str, what: str, name: str) -> str:
    """The one wording for an argument nobody reads, at construction (``parameter``) or per call (``call argument``)."""
    return f"{owner} got unknown {what} {name!r}; it is ignored"


def unknown_call_arguments(kwargs: Mapping[str, Any]) -> list[str]:
    """The names among a call's ``kwargs`` that neither the model nor LangChain reads, in the order given."""
    return [
        name
        for name in kwargs
        if name not in CALL_ARGUMENTS
        and name not in _LANGCHAIN_CALL_ARGUMENTS
        and name not in _IGNORED_PARAMS
    ]


def _default_session_file() -> str | None:
    path = session_path()
    return None if path is None else str(path)


class ModelFields(BaseChatModel):
    """ChatPerplexityLabs's settings as pydantic fields, checked when the model is built.

    Apart from the model class so that ``chat_models`` reads as LangChain's surface alone,
    as langchain-openai keeps ``BaseChatOpenAI`` apart from ``ChatOpenAI``.
    """

    # Inputs kept out of validation errors: a cookie or header refused must not be quoted back into logs.
    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True, hide_input_in_errors=True)

    # Declared before ``model``: the default model is the transport's, and a default factory sees
    # only the fields validated before it.
    transport: Service = Field(
        default_factory=cast("Callable[[], Service]", from_env("PPLX_LABS_TRANSPORT", default="web")),
        validate_default=True,  # a PPLX_LABS_TRANSPORT of neither name is refused, not ignored
    )
    """``web`` (the default): the web app's Server-Sent Events, the live service; ``labs``: the retired
    Labs playground's Socket.IO (the emulator and cassettes still speak it). Env: ``PPLX_LABS_TRANSPORT``."""
    model: str = Field(
        default_factory=lambda fields: default_model(fields.get("transport")), alias="model_name"
    )
    """Model name; when not given, the transport's default: ``WEB_DEFAULT_MODEL`` (``auto``, the account
    picks) on web, ``DEFAULT_MODEL`` (``r1-1776``) on labs. Web names: ``turbo``, ``pplx_reasoning``, ``r1``
    and the rest of ``WEB_MODELS`` (``list_models()`` reads the live list). Labs knew ``KNOWN_MODELS``
    (r1-1776, sonar-pro, sonar, sonar-reasoning, sonar-reasoning-pro); those with no web name
    (``LABS_ONLY_MODELS``) warn over the web. Any newer name is accepted."""
    base_url: str = Field(
        default_factory=from_env("PPLX_LABS_BASE_URL", default=DEFAULT_BASE_URL),
        validate_default=True,  # a bad PPLX_LABS_BASE_URL is refused here, not after a call's retries
    )
    """Server root, a path kept (``http://host/perplexity`` asks at ``/perplexity/rest/sse/...``); ``/rest/sse/perplexity_ask``
    (web) or ``/socket.io/`` (labs) is appended. A ``?query``, ``#fragment`` or port out of 1-65535 is refused when the
    model is built, from here or from the environment. Env: ``PPLX_LABS_BASE_URL``."""
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
    impersonate: str | None = Field(
        default_factory=from_env("PPLX_LABS_IMPERSONATE", default=DEFAULT_IMPERSONATE),
        validate_default=True,  # an unknown PPLX_LABS_IMPERSONATE is refused, not ignored
    )
    """The browser the web transport speaks as (curl_cffi's ``impersonate``): its TLS and HTTP/2
    fingerprint and its own User-Agent and client hints, which Cloudflare, in front of the web app,
    checks. ``"chrome"`` (the default: curl_cffi's newest Chrome) or one of curl_cffi's targets
    (``"chrome152"``, ``"safari"``, ...); ``None`` or ``"none"``: plain aiohttp, which Cloudflare
    challenges. Labs (``transport="labs"``) always dials with aiohttp. Env: ``PPLX_LABS_IMPERSONATE``."""
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
    cookies: SecretStr | None = Field(
        default_factory=secret_from_env("PPLX_LABS_COOKIES", default=None),
        validate_default=True,  # $PPLX_LABS_COOKIES may name a file, and is checked as cookies= is
    )
    """The session's cookies: a ``Cookie`` header (``"name=value; ..."``), a dict, or the path of a Netscape
    ``cookies.txt``, a Cookie-Editor JSON export or a HAR file (only perplexity.ai cookies are kept); checked at
    construction (a control character, a malformed file: :class:`~langchain_pplx_labs.errors.PerplexityLabsCookieError`).
    A secret: masked, and a secret in ``dumpd``. Env: ``PPLX_LABS_COOKIES``. Neither given: the ``session_file``'s."""
    # Not serialized: a path of this machine means nothing where the model is loaded (it finds its own there).
    session_file: str | None = Field(default_factory=_default_session_file, exclude=True)
    """The session ``pplx-labs login`` saved, used when no ``cookies`` (nor ``PPLX_LABS_COOKIES``) are given and
    the file exists: ``$XDG_CONFIG_HOME/pplx-labs/session.json`` or the platform's config folder; ``None``: never.
    Env: ``PPLX_LABS_SESSION_FILE`` (empty: none)."""
    search_mode: str | None = None
    """ChatPerplexity's name, on the web app's sources: ``"web"``, ``"academic"`` (scholar), ``"sec"``
    (edgar filings) or ``"social"``; ``None``: the web app's default (web)."""
    search_recency_filter: str | None = None
    """Only sources from the last ``"day"``, ``"week"``, ``"month"`` or ``"year"`` (ChatPerplexity's name)."""
    disable_search: bool = False
    """Answer without searching: the web app's writing mode (ChatPerplexity's name)."""
    incognito: bool = True
    """Ask incognito (``is_incognito``): nothing lands in the account's history unless ``False``."""
    return_images: bool = False
    """Accepted for a swap from ChatPerplexity: images come in ``response_metadata["images"]`` whenever
    the web app sends them."""
    return_related_questions: bool = False
    """Accepted for a swap from ChatPerplexity: ``response_metadata["related_questions"]`` whenever sent."""
    protocol: LabsProtocol = Field(default_factory=LabsProtocol)
    """Labs' and the web app's paths, event names, payload versions, Origins and auth, as data: change it when they change."""

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
                        unknown_argument_warning(cls.__name__, "parameter", key),
                        UserWarning,
                        stacklevel=4,  # past pydantic and Serializable.__init__: the caller
                    )
        return values

    @field_validator("cookies", mode="before")
    @classmethod
    def _read_cookies(cls, value: Any) -> Any:
        # Every form becomes the one header it stands for, checked here rather than at the first connect.
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or not isinstance(value, str | os.PathLike | Mapping):
            return value
        return SecretStr(cookie_header(value))

    @field_validator("session_file", mode="before")
    @classmethod
    def _session_file_path(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _cookies_from_session_file(self) -> Self:
        if self.cookies is None and self.session_file is not None:
            header = load_session(Path(self.session_file))
            if header is not None:
                self.cookies = SecretStr(header)
        return self

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str, info: ValidationInfo) -> str:
        return validate_model_name(
            value, info.data.get("transport")
        )  # a bad name lists its transport's models

    @field_validator("transport", mode="before")
    @classmethod
    def _check_transport(cls, value: Any) -> Any:
        if value not in ("labs", "web"):
            raise PerplexityLabsInputError(f"Invalid transport {value!r}: use 'labs' or 'web'")
        return value

    @field_validator("search_mode")
    @classmethod
    def _check_search_mode(cls, value: str | None) -> str | None:
        if value is not None and value not in SEARCH_SOURCES:
            raise PerplexityLabsInputError(
                f"Invalid search_mode {value!r}: use one of {', '.join(map(repr, SEARCH_SOURCES))}"
            )
        return value

    @field_validator("search_recency_filter")
    @classmethod
    def _check_recency(cls, value: str | None) -> str | None:
        if value is not None and value not in RECENCY_FILTERS:
            raise PerplexityLabsInputError(
                f"Invalid search_recency_filter {value!r}: use one of {', '.join(map(repr, RECENCY_FILTERS))}"
            )
        return value

    def _web_params(self) -> dict[str, Any]:
        """The web ask's ``params`` these fields set (laid over the defaults by ``web_request_body``)."""
        params: dict[str, Any] = {"is_incognito": self.incognito}
        if self.disable_search:
            params.update(search_focus="writing", sources=[])
        elif self.search_mode is not None:
            params["sources"] = [SEARCH_SOURCES[self.search_mode]]
        if self.search_recency_filter is not None:
            params["search_recency_filter"] = self.search_recency_filter
        return params

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return check_base_url(value)

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        return value if value is None else check_proxy_url(value)

    @field_validator("impersonate")
    @classmethod
    def _check_impersonate(cls, value: str | None) -> str | None:
        return check_impersonate(value)

    @field_validator("timeout", "connect_timeout", "handshake_timeout", "first_token_timeout", "idle_timeout")
    @classmethod
    def _check_timeout(cls, value: float | None) -> float | None:
        return check_timeout(value)

    @field_validator("pool_idle_timeout", "max_retries", "drain_timeout")
    @classmethod
    def _check_not_negative(cls, value: float | None) -> float | None:
        return check_not_negative(value)

    @model_validator(mode="before")
    @classmethod
    def _drop_default_profile(cls, values: Any) -> Any:
        return drop_default_profile(values)

    @model_validator(mode="after")
    def _set_labs_profile(self) -> Self:
        # Newer langchain-core fills ``profile`` from _resolve_model_profile itself; cores from
        # before that hook (profiles came in 1.1) need this validator.
        if self.profile is None:
            self.profile = self._resolve_model_profile()
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied; a default profile follows a changed model or size bound."""
        copied = super().model_copy(update=update, deep=deep)
        if profile_outdated(update, self.profile):
            copied.profile = copied._resolve_model_profile()
        return copied

    def _resolve_model_profile(self) -> ModelProfile | None:
        """This model's default profile (a ``profile=`` given at construction replaces it)."""
        return cast("ModelProfile", default_profile(self.model, self.max_input_chars))

    # -- serialization -------------------------------------------------------------------

    @property
    def lc_secrets(self) -> dict[str, str]:
        """``cookies`` is a secret; credential headers in ``default_headers`` are masked too."""
        return {"cookies": "PPLX_LABS_COOKIES", **_secret_headers(self.default_headers)}

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


def _secret_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """``lc_secrets`` entries for the credential headers among ``headers``."""
    # langchain-core escapes nested secret markers, so a dump with credential headers
    # never holds them in clear, but only top-level ``cookies`` is restored by ``load``.
    return {
        f"default_headers.{name}": "PPLX_LABS_" + name.upper().replace("-", "_")
        for name in headers or {}
        if name.lower() in _SECRET_HEADERS
    }
