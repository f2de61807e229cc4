"""Shared benchmark plumbing: the emulator behind the proxy, percentiles and the printed table."""

from __future__ import annotations

import contextlib
import math
import statistics
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from benchmarks.latency_proxy import DEFAULT_RTT, ProxyThread
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator


@dataclass
class Row:
    name: str
    samples: list[float]
    unit: str = "ms"
    scale: float = 1000.0
    baseline: float | None = None  # the baseline median this row is compared with

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return percentile(self.samples, 95)


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def print_table(title: str, rows: Sequence[Row]) -> None:
    print(f"\n## {title}\n")
    print("| measurement | n | median | p95 | ratio vs baseline |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        ratio = f"{row.median / row.baseline:.2f}x" if row.baseline else "-"
        print(
            f"| {row.name} | {len(row.samples)} | {row.median * row.scale:.2f} {row.unit} "
            f"| {row.p95 * row.scale:.2f} {row.unit} | {ratio} |"
        )


def stop_child(child: subprocess.Popen[str]) -> None:
    """Close a benchmark child's stdin (its cue to stop), wait for it (kill after 10 s), close its stdout."""
    if child.stdin is not None:
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    if child.stdout is not None:
        child.stdout.close()


@contextlib.contextmanager
def emulator_behind_proxy(rtt: float = DEFAULT_RTT) -> Iterator[tuple[LabsEmulator, str]]:
    """The Labs emulator on a real port, reached through the latency proxy: (emulator, proxied URL)."""
    with EmulatorThread() as thread, ProxyThread(thread.base_url, rtt) as proxy:
        yield thread.emulator, proxy.base_url


def memory_kib(field: str = "VmRSS") -> int | None:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``, ``VmHWM``: its peak), in KiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Start ``VmHWM`` afresh (Linux: ``5`` to ``clear_refs``), so a peak belongs to what runs next."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True
