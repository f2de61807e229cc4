"""``pplx-labs doctor --proxy``: the walk goes through a real pproxy, and a refused proxy is the failing step."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from clirun import run_cli
from test_proxy_tls import _free_port, _tunnels_to, pproxy_server

from langchain_pplx_labs.emulator import LabsEmulator

__all__ = ["pproxy_server"]  # the module-scoped fixture, shared with the proxy tests


def _doctor_json(*args: str) -> tuple[int, dict[str, object]]:
    """``pplx-labs doctor --json`` run in-process: its exit code and its report."""
    result = run_cli("doctor", "--json", "--timeout", "10", *args)
    return result.returncode, json.loads(result.stdout)


@pytest.mark.system  # the proxy is a real pproxy process
@pytest.mark.parametrize("scheme", ["http", "socks5"])
@pytest.mark.parametrize(("transport", "steps_planned"), [("labs", 7), ("web", 6)])
def test_doctor_walks_through_the_proxy(
    scheme: str,
    transport: str,
    steps_planned: int,
    pproxy_server: tuple[int, Path],
    base_url: str,
    emulator: LabsEmulator,
) -> None:
    proxy_port, log = pproxy_server
    emulator.script(
        answer=f"doctored over {transport} via {scheme} [1].", citations=["https://example.org/p"]
    )
    before = _tunnels_to(log, emulator.port)
    code, report = _doctor_json(
        "--transport",
        transport,
        "--base-url",
        base_url,
        "--proxy",
        f"{scheme}://127.0.0.1:{proxy_port}",
    )
    assert code == 0, report
    steps = report["steps"]
    assert isinstance(steps, list)
    assert steps[0]["detail"] == f"TCP through the proxy {scheme}://127.0.0.1:{proxy_port}"
    assert [step["ok"] for step in steps] == [True] * steps_planned
    asked = emulator.web.asks if transport == "web" else len(emulator.requests)
    assert asked == 1
    deadline = time.monotonic() + 5
    while _tunnels_to(log, emulator.port) == before and time.monotonic() < deadline:
        time.sleep(0.05)  # pproxy writes its log line after the tunnel closes
    assert _tunnels_to(log, emulator.port) > before, log.read_text()


def test_a_refused_proxy_fails_the_web_walks_connect_without_its_password(
    base_url: str, emulator: LabsEmulator
) -> None:
    port = _free_port()
    code, report = _doctor_json(
        "--transport",
        "web",
        "--base-url",
        base_url,
        "--proxy",
        f"socks5://user:secret@127.0.0.1:{port}",
    )
    assert code == 1
    assert [(step["name"], step["detail"]) for step in report["steps"]] == [  # type: ignore[union-attr]
        ("connect (TCP, TLS)", f"the proxy socks5://127.0.0.1:{port} refused the connection")
    ]
    assert "secret" not in json.dumps(report)
    assert emulator.web.session_checks == 0


def test_a_refused_proxy_is_the_failing_step_with_advice(base_url: str, emulator: LabsEmulator) -> None:
    port = _free_port()
    code, report = _doctor_json("--base-url", base_url, "--proxy", f"socks5://user:secret@127.0.0.1:{port}")
    assert code == 1
    assert report["steps"] == [
        {
            "name": "connect (TCP, TLS)",
            "ok": False,
            "ms": report["steps"][0]["ms"],  # type: ignore[index]
            "detail": f"the proxy socks5://127.0.0.1:{port} refused the connection",
        }
    ]
    assert str(report["advice"]).startswith(
        f"nothing accepts connections at the proxy socks5://127.0.0.1:{port}: start the proxy, or check --proxy"
    )
    assert f"Couldn't connect to proxy 127.0.0.1:{port}" in str(report["evidence"])
    assert "secret" not in json.dumps(report)  # the proxy's password never reaches a report
    assert emulator.requests == []


def test_doctor_refuses_an_https_proxy_in_one_line() -> None:
    result = run_cli("doctor", "--proxy", "https://127.0.0.1:3128")
    assert result.returncode == 2  # argparse's usage error (run_cli turns its SystemExit into the code)
    assert result.stderr == (
        "pplx-labs: error: argument --proxy: invalid proxy 'https://127.0.0.1:3128': expected http://, "
        "socks4:// or socks5://HOST:PORT (https:// proxies are not supported) (see pplx-labs doctor --help)\n"
    )
