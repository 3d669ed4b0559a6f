"""`python -m bench` (`make bench`): every benchmark, one after the other, each in a process
of its own (its own settings, database and children).

Pass --quick for tiny parameters (a smoke run, figures meaningless)."""

from __future__ import annotations

import subprocess
import sys

from bench._support import ROOT, machine

FULL = [
    ["bench.image"], ["bench.submit"], ["bench.worker"], ["bench.sse"], ["bench.task_results"],
    ["bench.spend"], ["bench.spend", "--workers", "2", "--limit", "20"], ["bench.batch"],
]  # fmt: skip
QUICK = [
    ["bench.image", "--rounds", "1"],
    [
        "bench.submit",
        "--rounds",
        "1",
        "--requests",
        "20",
        "--seconds",
        "0.5",
        "--servers",
        "uvicorn:1",
    ],
    ["bench.worker", "--latency", "5", "--cpu-jobs", "3", "--jobs", "4", "--platforms", "1"],
    ["bench.sse", "--streams", "20", "--subscribers", "10", "--events", "5"],
    ["bench.task_results", "--tasks", "20", "--rounds", "1"],
    ["bench.spend", "--limit", "60", "--period", "2", "--jobs", "12"],
    ["bench.batch", "--rounds", "1", "--jobs", "8"],
]


def main(argv: list[str]) -> int:
    print(f"# SnapAsset benchmarks on {machine()}", flush=True)
    failed = 0
    for command in QUICK if "--quick" in argv else FULL:
        failed |= subprocess.run([sys.executable, "-m", *command], cwd=ROOT).returncode
    print(f"\n(finished on {machine()})")
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
