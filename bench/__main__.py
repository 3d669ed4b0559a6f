"""`python -m bench` (`make bench`): every benchmark, one after the other.

Pass --quick for tiny parameters (a smoke run, figures meaningless)."""

from __future__ import annotations

import sys

from bench import image, submit, worker
from bench._support import machine


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    print(f"# SnapAsset benchmarks on {machine()}", flush=True)
    if quick:
        image.run(rounds=1)
        submit.run(rounds=1, requests=20, seconds=0.5, servers="uvicorn:1")
        worker.run(latency=5, cpu_jobs=3, jobs=4, platforms=1)
    else:
        image.run()
        submit.run()
        worker.run()
    print(f"\n(finished on {machine()})")


if __name__ == "__main__":
    main(sys.argv[1:])
