"""A connection's settings, both services': URL, headers, timeouts, protocol, and the checks of what users give."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.protocol import DEFAULT_BASE_URL, DEFAULT_PROTOCOL, LabsProtocol

Transport = Literal["websocket", "polling", "web"]
"""How a connection reaches its service: Labs' direct WebSocket or polling handshake, or the web app's SSE."""
Service = Literal["labs", "web"]
"""Which Perplexity service answers: the Labs playground (Socket.IO) or the web app (Server-Sent Events)."""

BROWSER_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


def browser_headers(protocol: LabsProtocol = DEFAULT_PROTOCOL) -> dict[str, str]:
    """The headers a browser on the playground sends: the protocol's Origin and Referer, a User-Agent."""
    return {**protocol.headers, "User-Agent": BROWSER_USER_AGENT}


DEFAULT_HEADERS: Mapping[str, str] = browser_headers()
# Proxy schemes aiohttp-socks can dial (it has no https:// proxies).
PROXY_SCHEMES = ("http", "socks4", "socks5")

DEFAULT_IMPERSONATE = "chrome"
"""The browser the web transport speaks as by default: curl_cffi's newest Chrome (docs/browser_voice.md)."""
NO_IMPERSONATION = "none"
"""What ``impersonate`` (and ``PPLX_LABS_IMPERSONATE``, ``--impersonate``) says for plain aiohttp."""


def check_impersonate(value: str | None) -> str | None:
    """``value`` as the web transport takes it: ``None`` (no impersonation) for ``None`` or ``"none"``, else
    one of curl_cffi's targets, unchanged; any other name is refused with the targets curl_cffi knows."""
    if value is None or value.strip().lower() == NO_IMPERSONATION:
        return None
    if value == DEFAULT_IMPERSONATE:
        return value  # known to every curl_cffi the package allows: no need to import it to check
    targets = impersonation_targets()
    if value not in targets:
        raise PerplexityLabsInputError(
            f"Invalid impersonate {value!r}: use one of curl_cffi's targets ({', '.join(targets)}), "
            f"or {NO_IMPERSONATION!r} for plain aiohttp (which Cloudflare challenges)"
        )
    return value


def impersonation_targets() -> tuple[str, ...]:
    """The browsers the installed curl_cffi can speak as (its ``BrowserTypeLiteral``), in its order."""
    from typing import get_args

    from curl_cffi.requests.impersonate import BrowserTypeLiteral  # imported only to check a name

    return tuple(get_args(BrowserTypeLiteral))


def check_base_url(value: str) -> str:
    """``value`` as a server root: ``http(s)://host[:port][/path]``, ``ws(s)://`` read as ``http(s)://``, no trailing slash.

    Every refusal is a ``PerplexityLabsInputError`` naming the problem: the model's field, its
    environment variable and the CLI's ``--base-url`` all check here, before anything is dialled.
    """
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise PerplexityLabsInputError(f"Invalid base_url {value!r}: {_lowered(str(exc))}") from None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise PerplexityLabsInputError(
            f"Invalid base_url {value!r}: expected http(s)://host[:port], e.g. {DEFAULT_BASE_URL}"
        )
    host_port = parts.netloc.rpartition("@")[2]
    _check_host(value, host_port)
    _check_port(value, host_port)
    if parts.query or parts.fragment:
        # Each service appends its own path and query (/rest/sse/..., /socket.io/?EIO=4...): a query
        # or fragment of the root would be dropped on one transport and kept on another.
        raise PerplexityLabsInputError(
            f"Invalid base_url {value!r}: a server root takes no ?query or #fragment "
            "(a path is kept: the service's own path is appended to it)"
        )
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _check_host(value: str, host_port: str) -> None:
    """Refuse ``value`` if its ``host[:port]`` holds a character no URL host may hold (a space, a control)."""
    bad = next(
        (char for char in host_port if char.isspace() or not char.isprintable() or char in '<>"{}|\\^`'), None
    )
    if bad is not None:
        # curl refuses such a host only once asked, and aiohttp quotes it mangled: refuse it here.
        raise PerplexityLabsInputError(f"Invalid base_url {value!r}: a host cannot hold {bad!r}")


def _check_port(value: str, host_port: str) -> None:
    """Refuse ``value`` unless the port of its ``host[:port]`` is absent or 1-65535 (urllib lets 0 by)."""
    host, colon, port = host_port.rpartition(":")
    if not colon or not port or host.endswith(":") or "]" in port:  # none given; an IPv6 address's colons
        return
    if not port.isdigit():
        raise PerplexityLabsInputError(f"Invalid base_url {value!r}: port {port!r} is not a number")
    if not 1 <= int(port) <= 65535:
        raise PerplexityLabsInputError(
            f"Invalid base_url {value!r}: port {port} is out of range (use 1-65535)"
        )


def _lowered(text: str) -> str:
    """``text`` with its first letter lower-cased, to follow a colon (urllib's "Invalid IPv6 URL")."""
    return text[:1].lower() + text[1:]


def check_proxy_url(value: str) -> str:
    """``value`` unchanged if aiohttp-socks can dial it: a ``PROXY_SCHEMES`` URL with a host and a port.

    A URL ``urlsplit`` itself cannot parse (an unclosed ``[``) raises its own ``ValueError``.
    """
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname or port is None:
        raise PerplexityLabsInputError(
            f"Invalid proxy {value!r}: expected scheme://[user:password@]host:port with scheme "
            f"{', '.join(PROXY_SCHEMES)}, e.g. socks5://127.0.0.1:1080"
        )
    return value


def check_timeout(value: float | None) -> float | None:
    """``value`` unchanged if it is ``None`` or a positive number of seconds."""
    # A zero or negative budget would fail every call with a timeout that never had a chance.
    if value is not None and not value > 0:
        raise PerplexityLabsInputError(f"Invalid timeout {value!r}: use a positive number of seconds")
    return value


def check_not_negative(value: float | None) -> float | None:
    """``value`` unchanged if it is ``None``, zero or more."""
    if value is not None and not value >= 0:
        raise PerplexityLabsInputError(f"Invalid value {value!r}: use zero or more")
    return value


@dataclass(frozen=True)
class Timeouts:
    """Every wait a query can make, in seconds; ``None`` waits forever."""

    connect: float = 10.0
    handshake: float = 10.0
    first_token: float | None = 60.0
    idle: float | None = 30.0
    total: float | None = 300.0


@dataclass(frozen=True)
class ConnectionSettings:
    """What a connection needs to know; hashable, so pools can be keyed by it."""

    base_url: str
    # Kept out of repr: user headers may carry cookies, and settings end up in logs and tracebacks.
    headers: tuple[tuple[str, str], ...] = field(
        default_factory=lambda: tuple(DEFAULT_HEADERS.items()), repr=False
    )
    timeouts: Timeouts = Timeouts()
    protocol: LabsProtocol = DEFAULT_PROTOCOL
    service: Service = "labs"

    @property
    def header_dict(self) -> dict[str, str]:
        return dict(self.headers)
