"""Benchmarks: `python -m bench` runs them all, `python -m bench.<name>` one (see
docs/PERFORMANCE.md). Each measures its baseline in the same run and prints ratios."""
