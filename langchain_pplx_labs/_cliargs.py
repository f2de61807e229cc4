"""What the ``pplx-labs`` commands share to judge their arguments: the argument types and ``CliError``."""

from __future__ import annotations

import argparse
from collections.abc import Callable


class CliError(Exception):
    """A failure the user can fix from its message alone; printed without a traceback."""


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: not a number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: use 0-65535 (0 picks a free port)")
    return value


def number(kind: Callable[[str], float], *, minimum: float, inclusive: bool = True) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` at least (or, not ``inclusive``, above) ``minimum``."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if not (value >= minimum if inclusive else value > minimum) or value != value:  # NaN is no number
            raise argparse.ArgumentTypeError(f"invalid value {text}: must be {bound}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


seconds = number(float, minimum=0)
count = number(int, minimum=0)
positive_int = number(int, minimum=1)
positive_seconds = number(float, minimum=0, inclusive=False)


def proxy_url(text: str) -> str:
    """An argparse type for ``--proxy`` (``cassette record``, ``doctor``): the schemes aiohttp-socks can dial, with a host and a port."""
    from langchain_pplx_labs.settings import check_proxy_url  # pydantic's import, paid only with --proxy

    try:
        return check_proxy_url(text)  # as ChatPerplexityLabs.proxy accepts
    except ValueError:  # its PerplexityLabsInputError, or urlsplit's own on a malformed URL
        raise argparse.ArgumentTypeError(
            f"invalid proxy {text!r}: expected http://, socks4:// or socks5://HOST:PORT "
            "(https:// proxies are not supported)"
        ) from None


def impersonation(text: str) -> str:
    """An argparse type for ``--impersonate``: one of curl_cffi's targets, or ``none``; kept as given."""
    from langchain_pplx_labs.settings import check_impersonate  # pydantic's import, paid only with the flag

    try:
        check_impersonate(text)  # as ChatPerplexityLabs.impersonate accepts
    except ValueError as exc:  # its PerplexityLabsInputError
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def ca_file(text: str) -> str:
    """An argparse type for ``--ca-file``: a PEM file of CA certificates that ``ssl`` can load."""
    import ssl

    try:
        ssl.create_default_context(cafile=text)
    except (OSError, ssl.SSLError) as exc:
        raise argparse.ArgumentTypeError(f"cannot load CA certificates from {text!r}: {exc}") from None
    return text


def server_root(text: str) -> str:
    """An argparse type for ``--base-url``: a server root as ``ChatPerplexityLabs.base_url`` accepts it."""
    from langchain_pplx_labs.settings import check_base_url  # pydantic's import, paid only with the flag

    try:
        return check_base_url(text)  # the one check: the model's field and PPLX_LABS_BASE_URL use it too
    except ValueError as exc:  # its PerplexityLabsInputError, naming the problem
        raise argparse.ArgumentTypeError(str(exc)) from None


def model_name(text: str) -> str:
    """An argparse type for ``--model``: any name but an empty one (the model's own check judges the rest)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "the model name is empty: leave --model out for the transport's default"
        )
    return text
