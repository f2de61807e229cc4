"""Import cost of the package's entry points, from ``python -X importtime``: ``python -m benchmarks.importtime``."""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

_CASSETTE = (
    Path(__file__).resolve().parents[1] / "cassettes" / "test_cassettes" / "test_failed_status.labs.yaml"
)

# (code, baseline): pytest imports the plugin after itself and its other plugins (pytest-asyncio is
# installed with the test extra), so the plugin's cost is what it adds to them; the CLI and the package
# are measured against a bare interpreter (``pass``).
CASES = {
    "pytest plugin (added to `import pytest, pytest_asyncio`)": (
        "import pytest, pytest_asyncio; import langchain_pplx_labs.pytest_plugin",
        "import pytest, pytest_asyncio",
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


def _one_run(code: str) -> tuple[float, float]:
    """(ms spent in top-level imports per ``-X importtime``, CPU ms of the process) for one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ms = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    total_us = 0.0
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # top level: its cumulative time covers everything nested under it
            total_us += float(cumulative)
    return total_us / 1000, cpu_ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.importtime", description=__doc__)
    parser.add_argument("--runs", type=int, default=9, help="fresh processes per case (median reported)")
    args = parser.parse_args(argv)
    codes = list(dict.fromkeys(code for pair in CASES.values() for code in pair))
    samples: dict[str, list[tuple[float, float]]] = {code: [] for code in codes}
    for _ in range(args.runs):  # interleaved, so a busy moment of the machine hits every case alike
        for code in codes:
            samples[code].append(_one_run(code))

    def median(code: str, index: int) -> float:
        return statistics.median(sample[index] for sample in samples[code])

    print(
        f"Python {sys.version.split()[0]}, median of {args.runs} fresh processes per row, minus the baseline's median\n"
    )
    print("| entry point | imports (`-X importtime`) | process CPU time |")
    print("|---|---:|---:|")
    for label, (code, base) in CASES.items():
        imports = median(code, 0) - median(base, 0)
        cpu = median(code, 1) - median(base, 1)
        print(f"| {label} | {imports:.0f} ms | {cpu:.0f} ms |")


if __name__ == "__main__":
    main()
