"""`python -m bench` (`make bench`): the targets of performance round two in one table, all
measured in one run (bench/report.py; a few minutes). Options pass through to it:
``--only e2e`` (one group of rows: cpu, submit, e2e, throughput), ``--quick`` (tiny
parameters, a smoke run, figures meaningless), ``--server gunicorn:2``.

``python -m bench --all`` (`make bench-all`) then runs every detailed benchmark too, each
in a process of its own (its own settings, database and children): the image step, submit,
worker, SSE, result backend, spend, the web server candidates, the capacity model and
where the worker's CPU per job goes."""

from __future__ import annotations

import subprocess
import sys

from bench._support import ROOT, machine

DETAILED = [
    ["bench.image"], ["bench.submit"], ["bench.worker"], ["bench.sse"], ["bench.task_results"],
    ["bench.spend"], ["bench.spend", "--workers", "2", "--limit", "20"], ["bench.batch"],
    ["bench.server"], ["bench.capacity"], ["bench.breakdown"],
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
    ["bench.server", "--candidates", "uvicorn:1,gunicorn:1", "--rounds", "1", "--requests",
     "10", "--seconds", "0.5", "--streams", "20", "--subscribers", "10", "--events", "3"],
    ["bench.capacity", "--jobs", "3", "--platforms", "2", "--curve", "1", "--curve-jobs", "4"],
    ["bench.breakdown", "--jobs", "3", "--rounds", "1"],
]  # fmt: skip


def main(argv: list[str]) -> int:
    print(f"# SnapAsset benchmarks on {machine()}", flush=True)
    every = "--all" in argv
    report = [a for a in argv if a != "--all"]
    failed = subprocess.run([sys.executable, "-m", "bench.report", *report], cwd=ROOT).returncode
    if every:
        for command in QUICK if "--quick" in argv else DETAILED:
            failed |= subprocess.run([sys.executable, "-m", *command], cwd=ROOT).returncode
    print(f"\n(finished on {machine()})")
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
