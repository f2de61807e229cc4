"""Run every benchmark and print the tables: ``python -m benchmarks [--quick] [--rtt-ms 50]``."""

from __future__ import annotations

import argparse
import os
import platform
import sys

from benchmarks import abandoned, concurrency, cpu, gateway, overhead, peer, ttft, web, web_cpu, web_growth
from benchmarks.latency_proxy import DEFAULT_RTT


def _machine() -> str:
    cpu_model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu_model = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} CPUs ({cpu_model}), Python {platform.python_version()}, {platform.system()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few samples, for CI (< 60 s)")
    parser.add_argument("--rtt-ms", type=float, default=DEFAULT_RTT * 1000, help="injected round trip")
    parser.add_argument(
        "--only",
        choices=[
            "ttft",
            "abandoned",
            "cpu",
            "peer",
            "overhead",
            "concurrency",
            "gateway",
            "web",
            "web_growth",
            "web_cpu",
        ],
        action="append",
    )
    args = parser.parse_args(argv)
    rtt = args.rtt_ms / 1000
    print(f"# langchain-pplx-labs benchmarks{' (quick)' if args.quick else ''}\n\nmachine: {_machine()}")
    modules = {
        "ttft": ttft,
        "abandoned": abandoned,
        "cpu": cpu,
        "peer": peer,
        "overhead": overhead,
        "concurrency": concurrency,
        "gateway": gateway,
        "web": web,
        "web_growth": web_growth,
        "web_cpu": web_cpu,
    }
    for name in args.only or list(modules):
        modules[name].run(args.quick, rtt)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
