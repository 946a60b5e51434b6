"""Benchmarks: fan-out, votes, soak and the engine path (``fablecast bench ...``).

Every bench runs on loopback only, in bounded steps, and prints one JSON object.
The server under test runs in its own process, the load generator in others, so
each side's CPU and memory are measured apart. See docs/benchmarks.md.
"""
