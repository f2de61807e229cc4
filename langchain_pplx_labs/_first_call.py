"""Pay langchain-core's one-off costs of a chat model's first call at import, not in the first question."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable

from langchain_core.load import Serializable, dumpd

# What langchain-core imports on a chat model's first call (callbacks, tracers, chunk translation);
# internal names, so a langchain-core without one of them is skipped, not an error.
FIRST_CALL_IMPORTS = (
    "langchain_core.tracers.context",
    "langchain_core.tracers.stdout",
    "langchain_core.tracers.run_collector",
    "langchain_core.messages.block_translators.langchain_v0",
)


def pay_first_call_costs(make_model: Callable[[], Serializable]) -> None:
    """Import what a first call would, and ``dumpd`` the model ``make_model`` builds once.

    Measured in fresh processes (``benchmarks/ttft.py``, 0 RTT): the callback manager's first use
    imports LangSmith's tracer and friends (≈ 7 of the first question's ≈ 10.5 ms of client CPU);
    the class's first ``dumpd`` (the run's serialized model) ≈ 0.4 ms more.
    """
    for name in FIRST_CALL_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    dumpd(make_model())
