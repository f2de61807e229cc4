"""A model's client settings and its client cache: built from the fields, replaced on a change, never copied."""

from __future__ import annotations

import copy
import pickle
import ssl
from dataclasses import dataclass, replace

from pydantic import SecretStr

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.client import Client, ClientCache, client_settings
from langchain_pplx_labs.pool import PoolSettings
from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsProtocol
from langchain_pplx_labs.settings import BROWSER_USER_AGENT, Timeouts


@dataclass(frozen=True)
class Options:
    """The fields ``client_settings`` reads, without a chat model around them."""

    base_url: str = "http://127.0.0.1:8123"
    protocol: LabsProtocol = DEFAULT_PROTOCOL
    transport: str = "labs"
    default_headers: dict[str, str] | None = None
    cookies: SecretStr | None = None
    connect_timeout: float = 1.0
    handshake_timeout: float = 2.0
    first_token_timeout: float | None = 3.0
    idle_timeout: float | None = 4.0
    timeout: float | None = 5.0
    max_connections: int = 6
    pool_idle_timeout: float | None = 7.0
    proxy: str | None = None
    impersonate: str | None = "chrome"
    verify_ssl: bool = True
    ssl_context: ssl.SSLContext | None = None
    drain_timeout: float = 8.0
    max_retries: int = 2
    retry_server_failures: bool = False


def test_client_settings_map_each_field() -> None:
    connection, pool = client_settings(Options(proxy="socks5://127.0.0.1:1080"))
    assert connection.base_url == "http://127.0.0.1:8123"
    assert connection.timeouts == Timeouts(connect=1.0, handshake=2.0, first_token=3.0, idle=4.0, total=5.0)
    assert connection.protocol == LabsProtocol()
    assert pool == PoolSettings(6, 7.0, "socks5://127.0.0.1:1080", True, drain_timeout=8.0)
    assert pool.impersonate == "chrome"
    assert client_settings(Options(impersonate=None))[1].impersonate is None


def test_client_settings_headers_are_the_browsers_then_the_users_then_the_cookie() -> None:
    options = Options(
        default_headers={"X-Trace": "t", "Origin": "https://mine.example"}, cookies=SecretStr("a=b")
    )
    connection, _ = client_settings(options)
    assert connection.header_dict == {
        "Origin": "https://mine.example",  # the user's header wins over the protocol's
        "Referer": "https://labs.perplexity.ai/",
        "User-Agent": BROWSER_USER_AGENT,
        "X-Trace": "t",
        "Cookie": "a=b",
    }


def test_client_settings_ssl_context_overrides_verify_ssl() -> None:
    context = ssl.create_default_context()
    assert client_settings(Options(verify_ssl=False))[1].ssl is False
    assert client_settings(Options(verify_ssl=False, ssl_context=context))[1].ssl is context


def test_cache_keeps_its_client_while_the_settings_stay() -> None:
    empty = ClientCache()
    cache, client = empty.client_for(Options())
    assert empty.client is None  # immutable: the old cache is untouched
    assert cache.client is client
    assert client.max_retries == 2
    assert client.settings.base_url == "http://127.0.0.1:8123"
    again, same = cache.client_for(Options())
    assert again is cache
    assert same is client


def test_cache_replaces_the_client_on_a_change_and_keeps_the_old_to_close() -> None:
    cache, first = ClientCache().client_for(Options())
    cache, second = cache.client_for(Options(timeout=60.0))
    cache, third = cache.client_for(Options(timeout=60.0, retry_server_failures=True))
    assert len({id(first), id(second), id(third)}) == 3
    assert cache.retired == (first, second)
    assert third.retry_server_failures is True
    kept = cache.without_retired()
    assert kept.client is third
    assert kept.retired == ()
    assert kept.client_for(Options(timeout=60.0, retry_server_failures=True)) == (kept, third)


async def test_cache_aclose_closes_every_client_it_holds() -> None:
    closed: list[str] = []

    class Recording(Client):
        def __init__(self, name: str) -> None:
            self.name = name

        async def aclose(self) -> None:
            closed.append(self.name)

    await ClientCache(Recording("current"), ("key",), (Recording("old"), Recording("older"))).aclose()
    assert closed == ["old", "older", "current"]
    await ClientCache().aclose()  # nothing built yet: nothing to close
    assert closed == ["old", "older", "current"]


def test_cache_pickles_and_deep_copies_empty_but_shallow_copies_itself() -> None:
    cache, _ = ClientCache().client_for(Options())
    cache, _ = cache.client_for(replace(Options(), idle_timeout=None))
    assert pickle.loads(pickle.dumps(cache)) == ClientCache()
    assert copy.deepcopy(cache) == ClientCache()
    assert copy.copy(cache) is cache


def test_a_models_shallow_copy_shares_the_client_until_either_changes_a_setting() -> None:
    chat = ChatPerplexityLabs(base_url="http://127.0.0.1:9", cookies=None)
    client = chat._client()  # builds the client object only: no socket until a question
    twin = chat.model_copy()
    assert twin._client() is client
    twin.timeout = 60.0
    replaced = twin._client()
    assert replaced is not client
    assert chat._client() is client  # the original keeps its own
    assert twin._clients.retired == (client,)
    assert chat._clients.retired == ()
    assert pickle.loads(pickle.dumps(chat))._current_client is None
