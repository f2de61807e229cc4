"""Import cost of the package's entry points, from ``python -X importtime``: ``python -m benchmarks.importtime``."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

_CASSETTE = (
    Path(__file__).resolve().parents[1] / "cassettes" / "test_cassettes" / "test_failed_status.labs.yaml"
)

# (code, baseline): pytest imports the plugin after itself, so the plugin's cost is what it adds to
# ``import pytest``; the CLI and the package are measured against a bare interpreter.
CASES = {
    "pytest plugin (added to `import pytest`)": (
        "import pytest; import langchain_pplx_labs.pytest_plugin",
        "import pytest",
    ),
    "`pplx-labs --help`": (
        "from langchain_pplx_labs.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass",
        "pass",
    ),
    "`pplx-labs cassette show`": (
        f"from langchain_pplx_labs.cli import main; main(['cassette', 'show', {str(_CASSETTE)!r}])",
        "pass",
    ),
    "`import langchain_pplx_labs`": ("import langchain_pplx_labs", "pass"),
    "`from langchain_pplx_labs import ChatPerplexityLabs`": (
        "from langchain_pplx_labs import ChatPerplexityLabs",
        "pass",
    ),
}


def _imports_us(code: str) -> tuple[float, float]:
    """(time in µs of every top-level import the run made, process wall time in ms) for one fresh process."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    wall_ms = (time.perf_counter() - start) * 1000
    total = 0.0
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # top level: its cumulative time covers everything nested under it
            total += float(cumulative)
    return total, wall_ms


def measure(code: str, runs: int) -> tuple[float, float]:
    """Medians over ``runs`` fresh processes: (import time in ms, process wall time in ms)."""
    samples = [_imports_us(code) for _ in range(runs)]
    return (
        statistics.median(sample[0] for sample in samples) / 1000,
        statistics.median(sample[1] for sample in samples),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.importtime", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per case (median reported)")
    args = parser.parse_args(argv)
    baselines = {code: measure(code, args.runs) for code in {base for _, base in CASES.values()}}
    print(
        f"Python {sys.version.split()[0]}, median of {args.runs} fresh processes per row, minus the baseline's median\n"
    )
    print("| entry point | imports (`-X importtime`) | process wall time |")
    print("|---|---:|---:|")
    for label, (code, base) in CASES.items():
        imports, wall = measure(code, args.runs)
        print(f"| {label} | {imports - baselines[base][0]:.0f} ms | {wall - baselines[base][1]:.0f} ms |")


if __name__ == "__main__":
    main()
