"""What the ``pplx-labs`` commands share: the loopback rule and the bind error, checked directly."""

from __future__ import annotations

import pytest

from langchain_pplx_labs._cliargs import CliError
from langchain_pplx_labs.cli import CliError as ReExported
from langchain_pplx_labs.cli._shared import is_loopback, listening


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),  # all of 127.0.0.0/8
        ("::1", True),
        ("localhost", True),
        ("LocalHost", True),
        ("ip6-localhost", True),
        ("0.0.0.0", False),  # every interface
        ("::", False),
        ("192.0.2.10", False),
        ("labs.perplexity.ai", False),
        ("", False),  # a URL without a host
    ],
)
def test_loopback_rule(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_a_failed_bind_names_the_address_and_still_cleans_up() -> None:
    stopped: list[str] = []

    async def start() -> None:
        raise OSError(98, "Address already in use")

    async def stop() -> None:
        stopped.append("stop")

    with pytest.raises(CliError, match=r"^cannot serve on 127\.0\.0\.1:8000: Address already in use$"):
        async with listening("127.0.0.1", 8000, start, stop):
            pytest.fail("the block must not run when the bind failed")
    assert stopped == ["stop"]


async def test_a_served_block_is_stopped_once_even_when_it_raises() -> None:
    events: list[str] = []

    async def start() -> None:
        events.append("start")

    async def stop() -> None:
        events.append("stop")

    async def serve() -> None:
        async with listening("127.0.0.1", 0, start, stop):
            events.append("serving")
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        await serve()
    assert events == ["start", "serving", "stop"]


def test_cli_error_is_still_importable_from_the_cli() -> None:
    assert ReExported is CliError
