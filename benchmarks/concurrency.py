"""Many concurrent streams through one model instance: errors, TTFT spread and peak RSS."""

from __future__ import annotations

import asyncio
import resource
import time

from benchmarks._common import Row, emulator_behind_proxy, memory_kib, percentile, print_table, reset_peak_rss
from langchain_pplx_labs import ChatPerplexityLabs


async def _one(chat: ChatPerplexityLabs, n: int) -> float:
    started = time.perf_counter()
    ttft = 0.0
    async for chunk in chat.astream(f"concurrent question {n}"):
        if chunk.content and not ttft:
            ttft = time.perf_counter() - started
    return ttft


async def _measure(base_url: str, streams: int) -> tuple[list[float], int]:
    async with ChatPerplexityLabs(
        transport="labs", base_url=base_url, model="sonar", max_connections=streams
    ) as chat:
        results = await asyncio.gather(*(_one(chat, n) for n in range(streams)), return_exceptions=True)
    ttfts = [r for r in results if isinstance(r, float)]
    return ttfts, len(results) - len(ttfts)


def run(quick: bool, rtt: float) -> None:
    streams = 50 if quick else 200
    with emulator_behind_proxy(rtt) as (_, url):
        # The peak must be this benchmark's, not that of whatever ran before it in the process.
        before_kib, fresh_peak = memory_kib(), reset_peak_rss()
        ttfts, errors = asyncio.run(_measure(url, streams))
        peak_kib = memory_kib("VmHWM") if fresh_peak else None
    print_table(
        f"{streams} concurrent streams through one model, cold pool, {rtt * 1000:.0f} ms RTT",
        [Row("TTFT", ttfts)] if ttfts else [],
    )
    p50 = percentile(ttfts, 50) if ttfts else 0.0
    p99 = percentile(ttfts, 99) if ttfts else 0.0
    ratio = p99 / p50 if p50 else float("nan")
    print(
        f"\nerrors: {errors}/{streams}; TTFT p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
        f"(p99/p50 {ratio:.2f}, target < 3); {_memory(before_kib, peak_kib, streams)}"
    )


def _memory(before_kib: int | None, peak_kib: int | None, streams: int) -> str:
    if before_kib is None or peak_kib is None:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return f"peak RSS of the process since it started (emulator and proxy included) {peak_mb:.0f} MB"
    growth = peak_kib - before_kib
    return (
        f"RSS {before_kib / 1024:.0f} MB before, peak {peak_kib / 1024:.0f} MB during the streams "
        f"(emulator and proxy included): {growth / 1024:+.1f} MB, {growth / streams:+.0f} KiB per stream"
    )
