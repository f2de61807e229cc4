"""The base_url and proxy checks: one function each, behind the model's fields and the CLI's --proxy."""

from __future__ import annotations

import argparse

import pytest

from langchain_pplx_labs._cliargs import proxy_url
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.settings import check_base_url, check_proxy_url

PROXY_HINT = "expected scheme://[user:password@]host:port with scheme http, socks4, socks5, e.g. socks5://127.0.0.1:1080"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://www.perplexity.ai", "https://www.perplexity.ai"),
        ("https://www.perplexity.ai/", "https://www.perplexity.ai"),
        ("http://127.0.0.1:8123/labs//", "http://127.0.0.1:8123/labs"),
        ("ws://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("wss://labs.example/root/", "https://labs.example/root"),
        ("http://user:pw@host:1", "http://user:pw@host:1"),
    ],
)
def test_check_base_url_gives_an_http_root_without_trailing_slash(given: str, kept: str) -> None:
    assert check_base_url(given) == kept


@pytest.mark.parametrize("bad", ["notaurl", "ftp://x", "http://", "", "//host:1"])
def test_check_base_url_refuses_what_is_no_server_root(bad: str) -> None:
    with pytest.raises(PerplexityLabsInputError) as caught:
        check_base_url(bad)
    assert str(caught.value) == (
        f"Invalid base_url {bad!r}: expected http(s)://host[:port], e.g. https://www.perplexity.ai"
    )


@pytest.mark.parametrize(
    "good", ["http://127.0.0.1:3128", "socks5://user:pw@127.0.0.1:1080", "socks4://proxy.example:1080"]
)
def test_check_proxy_url_keeps_a_dialable_proxy_as_given(good: str) -> None:
    assert check_proxy_url(good) == good


@pytest.mark.parametrize(
    "bad",
    ["https://127.0.0.1:3128", "socks5://127.0.0.1", "http://:3128", "127.0.0.1:3128", "http://h:99999"],
)
def test_check_proxy_url_refuses_what_aiohttp_socks_cannot_dial(bad: str) -> None:
    with pytest.raises(PerplexityLabsInputError) as caught:
        check_proxy_url(bad)
    assert str(caught.value) == f"Invalid proxy {bad!r}: {PROXY_HINT}"


def test_check_proxy_url_lets_urlsplits_own_error_through() -> None:
    with pytest.raises(ValueError, match="Invalid IPv6 URL") as caught:
        check_proxy_url("http://[::1:3128")
    assert not isinstance(caught.value, PerplexityLabsInputError)


@pytest.mark.parametrize("bad", ["https://127.0.0.1:3128", "socks5://127.0.0.1", "http://[::1:3128"])
def test_cli_proxy_type_turns_either_refusal_into_its_argparse_error(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        proxy_url(bad)
    assert str(caught.value) == (
        f"invalid proxy {bad!r}: expected http://, socks4:// or socks5://HOST:PORT (https:// proxies are not supported)"
    )


def test_cli_proxy_type_keeps_a_good_proxy() -> None:
    assert proxy_url("socks5://127.0.0.1:1080") == "socks5://127.0.0.1:1080"
