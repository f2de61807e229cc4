"""langchain-tests standard suites for ``transport="web"``: the same flags and emulator as test_standard.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import test_standard

from langchain_pplx_labs.emulator import EmulatorThread


class TestChatPerplexityLabsWebUnit(test_standard.TestChatPerplexityLabsUnit):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            **super().chat_model_params,
            "transport": "web",
            "model": "turbo",
        }  # a web name: sonar-pro warns

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        env, init, expected = super().init_from_env_params
        return {**env, "PPLX_LABS_TRANSPORT": "web"}, init, {**expected, "transport": "web"}


class TestChatPerplexityLabsWebIntegration(test_standard.TestChatPerplexityLabsIntegration):
    """The full integration suite over the emulator's Server-Sent Events endpoint."""

    @pytest.fixture(autouse=True)
    def _only_over_the_web(
        self, emulator_thread: EmulatorThread, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[None]:
        # Models the suite builds itself read the transport from the env, as they read base_url.
        monkeypatch.setenv("PPLX_LABS_TRANSPORT", "web")
        yield
        assert sum(emulator_thread.emulator.handshakes.values()) == 0  # nothing went over Socket.IO

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            **super().chat_model_params,
            "transport": "web",
            "model": "turbo",
        }  # a web name: sonar-pro warns
