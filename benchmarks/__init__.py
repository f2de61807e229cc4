"""Benchmarks against the Labs emulator behind a latency-injecting proxy (run: ``python -m benchmarks``)."""
