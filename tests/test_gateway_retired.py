"""The gateway's answers to a retired Labs, a silent one and a rate limit, through the unmodified openai SDK."""

from __future__ import annotations

import subprocess
import sys
from typing import TypeVar

import openai
import pytest
from retired import HISTORY, INSTEAD, MAIN_SITE
from test_cli import serving
from test_gateway import PARIS, QUESTION, ask, gateway_for, sdk_for

from langchain_pplx_labs.emulator import RATE_LIMIT_FRAME, LabsEmulator, Scenario

RATE_LIMITED = (
    "Perplexity Labs refused the query for a rate limit (model 'sonar', error_code FREE_TIER_RATE_LIMITED). "
    "Wait before asking again"
)

SDKError = TypeVar("SDKError", bound=openai.APIStatusError)

# These verdicts are Labs' own: the gateway's model speaks Socket.IO.
pytestmark = pytest.mark.usefixtures("over_labs")


def _refused(emulator: LabsEmulator, kind: type[SDKError], *, max_retries: int) -> SDKError:
    """Ask through the gateway with the openai SDK; the error the SDK raises, of ``kind``."""
    with (
        gateway_for(emulator) as running,
        sdk_for(running.root, max_retries=max_retries) as sdk,
        pytest.raises(kind) as caught,
    ):
        ask(sdk)
    return caught.value


@pytest.mark.parametrize("max_retries", [0, 2], ids=["no-retries", "sdk-default-retries"])
def test_a_redirect_to_the_main_site_is_a_502_labs_retired_never_retried(
    emulator: LabsEmulator, max_retries: int
) -> None:
    emulator.redirect_to = MAIN_SITE
    host = emulator.base_url.split("://", 1)[1]
    retired = _refused(emulator, openai.InternalServerError, max_retries=max_retries)
    assert retired.status_code == 502
    assert retired.response.headers["x-should-retry"] == "false"
    assert retired.body == {
        "message": f"Perplexity Labs is retired: ws://{host}/socket.io/?EIO=4&transport=websocket redirects "
        f"(HTTP 301) to {MAIN_SITE}, another host. {HISTORY}. Instead, {INSTEAD}",
        "type": "upstream_error",
        "param": None,
        "code": "labs_retired",
    }
    # One request reached the emulator: neither the package nor the SDK (told x-should-retry) asked again.
    assert dict(emulator.refusals) == {"websocket": 1}


def test_the_main_sites_page_is_a_502_labs_retired(emulator: LabsEmulator) -> None:
    emulator.main_site = True
    retired = _refused(emulator, openai.InternalServerError, max_retries=0)
    assert retired.status_code == 502
    assert retired.body["code"] == "labs_retired"
    # The error's own message (the openai SDK's ``.message`` is shortened in older releases).
    assert (
        "with a page of Perplexity's main site (title 'Perplexity'), not Engine.IO" in retired.body["message"]
    )


@pytest.mark.parametrize("max_retries", [0, 2], ids=["no-retries", "sdk-default-retries"])
def test_a_rate_limit_is_a_429_the_sdk_raises_as_rate_limit_error(
    emulator: LabsEmulator, max_retries: int
) -> None:
    emulator.script(Scenario(failure=RATE_LIMIT_FRAME))
    limited = _refused(emulator, openai.RateLimitError, max_retries=max_retries)
    assert limited.status_code == 429
    assert limited.response.headers["x-should-retry"] == "false"
    assert limited.body == {
        "message": RATE_LIMITED,
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert len(emulator.requests) == 1  # asked once: retrying at once only prolongs a limit


def test_a_silent_labs_stays_a_504_whose_message_says_it_may_be_retired(emulator: LabsEmulator) -> None:
    emulator.script(Scenario(stall_after=0))
    with (
        gateway_for(emulator, model_options={"first_token_timeout": 0.3}) as running,
        sdk_for(running.root, max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as timed_out,
    ):
        ask(sdk)
    assert timed_out.value.status_code == 504
    assert timed_out.value.body["code"] == "labs_first_token_timeout"
    assert timed_out.value.body["type"] == "timeout_error"
    message = timed_out.value.body["message"]
    assert message.startswith("Perplexity Labs first_token timeout fired after 0.3s (attempt 1 of 1, ")
    assert message.endswith(
        "; Perplexity Labs may be retired: the server took the question and sent no frame at all in 0.3s. "
        f"{HISTORY}. If the model is only slow, raise first_token_timeout; otherwise {INSTEAD}"
    )
    assert "x-should-retry" not in timed_out.value.response.headers  # a slow model may answer next time


def test_a_rate_limit_mid_stream_ends_with_the_same_error_event(emulator: LabsEmulator) -> None:
    emulator.script(Scenario(answer=PARIS, chunk_size=10, failure=RATE_LIMIT_FRAME, fail_after=3))
    received: list[str] = []
    with (
        gateway_for(emulator) as running,
        sdk_for(running.root, max_retries=0) as sdk,
        pytest.raises(openai.APIError) as limited,
    ):
        received.extend(chunk.choices[0].delta.content or "" for chunk in ask(sdk, stream=True))
    assert "".join(received) == PARIS[:30]  # what came before the limit, then the error
    assert limited.value.body == {
        "message": RATE_LIMITED,
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }


@pytest.mark.system  # both commands as real processes: their chaining is the subject
def test_pplx_labs_gateway_before_pplx_labs_serve_rate_limited() -> None:
    """The two commands as a user chains them: ``serve --rate-limited``, ``gateway --base-url``, the SDK."""
    with serving("--rate-limited") as (_, first):
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "langchain_pplx_labs.cli",
                "gateway",
                "--port",
                "0",
                "--base-url",
                first.strip(),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert gateway.stdout is not None
        root = gateway.stdout.readline().strip()
        try:
            with (
                sdk_for(root, max_retries=0) as sdk,
                pytest.raises(openai.RateLimitError) as limited,
            ):
                sdk.chat.completions.create(model="sonar", messages=[{"role": "user", "content": QUESTION}])
        finally:
            gateway.terminate()
            _, stderr = gateway.communicate(timeout=15)
    assert limited.value.status_code == 429
    assert limited.value.body["message"] == RATE_LIMITED
    assert gateway.returncode == 0, stderr
    assert "POST /v1/chat/completions -> 429" in stderr
