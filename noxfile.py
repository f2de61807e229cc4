"""The test matrix: the suite on every Python the package claims and on its lowest dependencies, lint, the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import nox

PYTHONS = ["3.11", "3.12", "3.13"]
# Four workers on two cores: the suite mostly waits on sockets and timers (Makefile's WORKERS says the same).
PYTEST = (
    "python",
    "-m",
    "pytest",
    "--record-mode=none",
    "-p",
    "no:cacheprovider",
    "-n",
    "4",
    "--dist",
    "loadfile",
)
UNIT_TIERS = ("-m", "not system and not bench")
"""The unit and emulator tiers: what CI runs on the other Pythons and the lowest dependencies (``-- --tiers``)."""
# Transitive versions that the lowest direct ones admit but do not work with, in test tools only (the
# package's own floors live in pyproject.toml): langgraph 1.0.0 allows langgraph-prebuilt 1.0.9+, which
# imports names (langgraph.runtime.ExecutionInfo) that only langgraph 1.1.3+ has.
LOWEST_CONSTRAINTS = ["langgraph-prebuilt<1.0.9"]

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lowest", "lint", "build"]
# Interpreters come from this machine (found below); downloading one needs hosts beyond the package index.
nox.options.download_python = "never"


def _version_of(executable: str) -> str | None:
    """``X.Y`` of an interpreter, or ``None`` when it does not run (a pyenv shim for a version not selected)."""
    try:
        out = subprocess.run(
            [executable, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def _output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _candidates(version: str) -> Iterator[str]:
    """Where ``pythonX.Y`` may be: on PATH, installed by pyenv (also when not selected), known to uv."""
    on_path = shutil.which(f"python{version}")
    if on_path:
        yield on_path
    pyenv = shutil.which("pyenv")
    if pyenv:
        latest = _output(pyenv, "latest", version)
        prefix = _output(pyenv, "prefix", latest) if latest else ""
        if prefix:
            yield str(Path(prefix, "bin", f"python{version}"))
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv:
        found = _output(uv, "python", "find", "--system", version)
        if found:
            yield found


def find_python(version: str) -> str | None:
    """The first interpreter of ``version`` that really runs."""
    return next((path for path in _candidates(version) if _version_of(path) == version), None)


def _expose_pythons() -> None:
    """Put each found interpreter's folder first on PATH, so nox's lookup of ``pythonX.Y`` finds a working one."""
    folders = [str(Path(found).parent) for found in map(find_python, PYTHONS) if found]
    os.environ["PATH"] = os.pathsep.join([*dict.fromkeys(folders), os.environ.get("PATH", "")])


_expose_pythons()


def _pytest_args(posargs: list[str]) -> list[str]:
    """``--tiers`` stands for the unit and emulator tiers; everything else goes to pytest as it is."""
    return [arg for given in posargs for arg in (UNIT_TIERS if given == "--tiers" else (given,))]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite (``-- --tiers``: without the system tier), offline, against the installed package."""
    session.install(".[test,test-perplexity]")
    session.run(*PYTEST, *_pytest_args(session.posargs))


@nox.session(python=PYTHONS[0], venv_backend="uv")
def lowest(session: nox.Session) -> None:
    """The suite (``-- --tiers``: without the system tier) on the lowest direct dependencies pyproject.toml allows."""
    constraints = Path(session.create_tmp()).resolve() / "lowest-constraints.txt"
    constraints.write_text("\n".join(LOWEST_CONSTRAINTS) + "\n")
    session.install("--resolution", "lowest-direct", "--constraint", str(constraints), ".[test]")
    session.run("uv", "pip", "list", silent=False)
    session.run(*PYTEST, *_pytest_args(session.posargs))


@nox.session(python=PYTHONS[0])
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy --strict on the package and the benchmarks."""
    # mypy reads pytest's types in the plugin, and mcp's in gateway/mcp.
    session.install("-e", ".[test,test-perplexity,lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "--strict", "langchain_pplx_labs", "benchmarks")


@nox.session(python=PYTHONS[0])
def build(session: nox.Session) -> None:
    """sdist + wheel, ``twine check``, and the wheel alone in a clean venv: import and ``pplx-labs --version``."""
    session.install("build", "twine", "uv")
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--installer", "uv", "--outdir", str(dist))
    artifacts = sorted(str(path) for path in dist.iterdir())
    session.run("twine", "check", "--strict", *artifacts)
    wheel = next(dist.glob("*.whl"))
    _check_wheel_contents(session, wheel)

    clean = tmp / "clean-venv"
    shutil.rmtree(clean, ignore_errors=True)
    python = _venv_python(session, clean)
    session.run("uv", "pip", "install", "--python", python, str(wheel))
    # Outside the source tree, so only the installed wheel can be imported.
    session.chdir(str(tmp))
    session.run(
        python,
        "-c",
        "import langchain_pplx_labs as p; from langchain_pplx_labs import ChatPerplexityLabs; "
        "print('import ok', p.__version__, ChatPerplexityLabs.__name__)",
        external=True,
    )
    version = session.run(str(Path(python).with_name("pplx-labs")), "--version", external=True, silent=True)
    session.log(f"pplx-labs --version: {str(version).strip()}")
    if not str(version).startswith("pplx-labs ") or "unknown" in str(version):
        session.error(f"pplx-labs --version printed {version!r}")


def _check_wheel_contents(session: nox.Session, wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    wanted = ["langchain_pplx_labs/py.typed", "licenses/LICENSE"]
    missing = [want for want in wanted if not any(name.endswith(want) for name in names)]
    if missing:
        session.error(f"{wheel.name} lacks {', '.join(missing)}")
    session.log(f"{wheel.name}: py.typed and LICENSE present, {len(names)} files")


def _venv_python(session: nox.Session, location: Path) -> str:
    """A new empty venv on the session's own interpreter; returns its python."""
    base = session.run("python", "-c", "import sys; print(sys._base_executable)", silent=True)
    session.run("uv", "venv", "--quiet", "--python", str(base).strip(), str(location))
    return str(location / "bin" / "python")
