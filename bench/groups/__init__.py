"""Benchmark groups: one module per group, each ``run(ctx) -> list[Row]`` (see bench.registry)."""
