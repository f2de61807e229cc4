"""What the package loads: the pytest plugin, ``pplx-labs --help``, ``serve`` and ``cassette show`` stay light.

What an import loads shows only in a fresh interpreter: those tests start one and are marked ``system``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from clirun import run_cli

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60
HEAVY = ("langchain_core", "aiohttp", "socketio", "engineio")

# Runs ``pplx-labs ARGS`` in-process, then reports which modules the command loaded.
RUN_CLI = """
import json, sys
from langchain_pplx_labs.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code
print("MODULES=" + json.dumps(sorted(sys.modules)), flush=True)
sys.exit(code)
"""


def loaded_after(code: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def modules_of(stdout: str) -> set[str]:
    line = next(line for line in stdout.splitlines() if line.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


def roots(modules: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in modules}


@pytest.mark.system
def test_plugin_import_loads_only_pytest_and_the_standard_library() -> None:
    # pytest-asyncio is a pytest plugin that pytest loads anyway when it is installed.
    baseline = loaded_after("import pytest, pytest_asyncio")
    modules = loaded_after("import langchain_pplx_labs.pytest_plugin")
    added = modules - baseline
    ours = {name for name in added if name.startswith("langchain_pplx_labs")}
    # _lazy: the package's PEP 562 helper, standard library only.
    assert ours == {
        "langchain_pplx_labs",
        "langchain_pplx_labs._lazy",
        "langchain_pplx_labs._version",
        "langchain_pplx_labs.pytest_plugin",
    }
    assert roots(added - ours) <= set(sys.stdlib_module_names), roots(added - ours)
    assert roots(modules).isdisjoint({*HEAVY, "pydantic", "yaml", "orjson"})


@pytest.mark.system
def test_package_names_load_on_first_use() -> None:
    modules = loaded_after(
        "import langchain_pplx_labs as p\n"
        "assert 'langchain_core' not in __import__('sys').modules\n"
        "from langchain_pplx_labs import ChatPerplexityLabs, PerplexityLabsError\n"
        "from langchain_pplx_labs.chat_models import ChatPerplexityLabs as Defined\n"
        "assert ChatPerplexityLabs is Defined and 'ChatPerplexityLabs' in dir(p)\n"
        "assert set(p.__all__) <= set(dir(p))\n"
        "assert issubclass(p.PerplexityLabsTimeoutError, PerplexityLabsError)\n"
        "assert 'sonar-pro' in p.KNOWN_MODELS"
    )
    assert "langchain_core" in roots(modules)


def test_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    import langchain_pplx_labs
    from langchain_pplx_labs import labs  # a subpackage, through the fallback of __getattr__

    assert labs.__name__ == "langchain_pplx_labs.labs"
    with pytest.raises(AttributeError, match="has no attribute 'ChatPerplexityLab'"):
        _ = langchain_pplx_labs.ChatPerplexityLab


def run_fresh(*args: str) -> subprocess.CompletedProcess[str]:
    """``pplx-labs ARGS`` in a fresh interpreter; its stdout ends with the ``MODULES=`` line."""
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.mark.system
def test_help_loads_no_langchain_aiohttp_or_socketio() -> None:
    result = run_fresh("--help")
    assert result.returncode == 0, result.stderr
    assert "cassette" in result.stdout
    assert "serve" in result.stdout
    assert roots(modules_of(result.stdout)).isdisjoint(HEAVY)


def test_version_is_the_one_in_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"pplx-labs {declared}"
    import langchain_pplx_labs

    assert langchain_pplx_labs.__version__ == declared


@pytest.mark.system
def test_cassette_show_loads_no_langchain_aiohttp_or_socketio() -> None:
    path = ROOT / "cassettes" / "test_cassettes" / "test_failed_status.labs.yaml"
    result = run_fresh("cassette", "show", str(path))
    assert result.returncode == 0, result.stderr
    assert "synthetic" in result.stdout
    assert roots(modules_of(result.stdout)).isdisjoint(HEAVY)


@pytest.mark.system
@pytest.mark.parametrize(
    "extra", [(), ("--cassettes", str(ROOT / "cassettes"))], ids=["scripted", "cassettes"]
)
def test_serve_loads_no_langchain(extra: tuple[str, ...]) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, json.dumps(["serve", "--port", "0", *extra])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            base_url = server.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:"), server.stderr
            # It really serves: the Engine.IO polling handshake answers with an OPEN packet.
            with urllib.request.urlopen(
                f"{base_url}/socket.io/?EIO=4&transport=polling", timeout=10
            ) as reply:
                assert reply.read().startswith(b"0{")
        finally:
            server.send_signal(signal.SIGTERM)
            stdout, stderr = server.communicate(timeout=TIMEOUT)
    assert server.returncode == 0, stderr
    loaded = roots(modules_of(stdout))
    assert "langchain_core" not in loaded
    assert {"aiohttp", "socketio"} <= loaded  # the server itself, so the check above saw a real run
