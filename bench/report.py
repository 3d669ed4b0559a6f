"""`make bench`: every target of performance round two (issue 18) measured in one run, on one
bench database and a redis-server of the bench's own, printed as one table with each
row's baseline (the issue's "now" figures from `make bench` on main, 30 Nov; the old Bull
server's where it has one), the measured value, their ratio, the target, and met/missed.
Ratios against a baseline *in this run* (a no-op task, the bare DRF view) are the figures
to trust on a shared machine; absolute times are context.

    python -m bench.report [--only cpu,submit,e2e,throughput] [--quick] [--server uvicorn:1]

Groups: ``cpu`` (worker CPU per job over a no-op), ``submit`` (POST p50 and 8-client
throughput vs the bare view), ``e2e`` (POST -> final live event, local provider and the
OpenAI fake), ``throughput`` (sustained jobs/s and the pool processes' RSS after them).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench._support import BenchEnv, bench_env, machine, median, own_redis, percentile, table

GROUPS = ("cpu", "submit", "e2e", "throughput")
# The image step (6 platforms, PNG level 1, 2 threads) on the local provider's picture on
# a quiet machine (docs/PERFORMANCE.md, 2 Dec, load 1.0): the yardstick of how busy the
# machine is. It was 0.158 s with Pillow's PNG encoder, before encode_png.
QUIET_IMAGE_STEP_S = 0.101


@dataclass
class Row:
    figure: str
    baseline: str
    measured: str
    ratio: str  # measured / baseline
    target: str
    met: bool | None  # None: context, no target

    def cells(self) -> list[str]:
        verdict = "" if self.met is None else ("met" if self.met else "**missed**")
        return [self.figure, self.baseline, self.measured, self.ratio, self.target, verdict]


def image_step_seconds(rounds: int = 5) -> float:
    """The image step's wall time now: other people's load on the shared cores shows here."""
    from bench.image import pillow_job, sources, timed

    data = sources(noise=24)["local provider"]
    return timed(lambda: pillow_job(data, "png", 2, png_compress_level=1), rounds)[0]


def calibration_row(before: float, after: float) -> Row:
    slower = (before + after) / 2 / QUIET_IMAGE_STEP_S
    return Row(
        "context: the machine's speed, the image step (6 platforms, PNG) at start / end",
        f"{QUIET_IMAGE_STEP_S:.3f} s on a quiet machine",
        f"{before:.3f} / {after:.3f} s",
        f"{slower:.2f}x",
        "absolute figures below are this much slower",
        None,
    )


def cpu_rows(env: BenchEnv, owner: Any, quick: bool) -> list[Row]:
    from bench.worker import measure_cpu

    cpu = measure_cpu(env, owner, 5 if quick else 50)
    over = (cpu["ours"] - cpu["noop"]) * 1000
    return [
        Row(
            "worker CPU per 6-platform job outside the image work, over a no-op task",
            "+22.2 ms",
            f"+{over:.1f} ms (job {cpu['ours'] * 1000:.1f}, no-op {cpu['noop'] * 1000:.1f})",
            f"{over / 22.2:.2f}x",
            "<= +5 ms",
            over <= 5.0,
        )
    ]


def submit_rows(env: BenchEnv, tokens: list[str], server: str, quick: bool) -> list[Row]:
    from bench.load import run_load
    from bench.submit import BARE, OURS, profile_queries

    counts = profile_queries(env, tokens[0])
    kind, workers = server.split(":")
    web, base = env.start_web(workers=int(workers), server=kind)
    port = int(base.rsplit(":", 1)[1])
    rounds, requests, seconds = (1, 20, 0.5) if quick else (3, 300, 4.0)
    for path in (BARE, OURS):
        run_load(port, path, tokens, clients=2, requests=10 if quick else 100)  # warm-up
    figures: dict[str, dict[str, list[float]]] = {p: {"p50": [], "rps": []} for p in (BARE, OURS)}
    for _ in range(rounds):  # alternating, so both see the same machine
        for path in (BARE, OURS):
            env.finish_pending_jobs()
            one = run_load(port, path, tokens, clients=1, requests=requests)
            eight = run_load(port, path, tokens, clients=8, seconds=seconds)
            if one.errors or eight.errors:
                raise RuntimeError(f"{path}: {one.errors + eight.errors} failed requests")
            figures[path]["p50"].append(percentile(one.latencies, 50) * 1000)
            figures[path]["rps"].append(eight.rps)
    env.stop(web)
    ours = {k: median(v) for k, v in figures[OURS].items()}
    bare = {k: median(v) for k, v in figures[BARE].items()}
    p50, rps = ours["p50"] / bare["p50"], ours["rps"] / bare["rps"]
    return [
        Row(
            f"POST /api/jobs/generate p50, 1 client, vs the bare DRF view ({server})",
            "1.82x",
            f"{p50:.2f}x ({ours['p50']:.1f} vs {bare['p50']:.1f} ms; SQL {counts[OURS]} vs "
            f"{counts[BARE]})",
            f"{p50 / 1.82:.2f}x",
            "<= 1.10x",
            p50 <= 1.10,
        ),
        Row(
            f"submit throughput, 8 clients, vs the bare view ({server})",
            "0.58x",
            f"{rps:.2f}x ({ours['rps']:.0f} vs {bare['rps']:.0f} req/s)",
            f"{rps / 0.58:.2f}x",
            ">= 0.95x",
            rps >= 0.95,
        ),
    ]


def e2e_rows(env: BenchEnv, token: str, server: str, quick: bool) -> list[Row]:
    from bench.e2e import OLD_SERVER_MS, TARGET_P50_MS, TARGET_P99_MS, measure

    jobs = 5 if quick else 50
    results = measure(
        env, token, jobs=jobs, providers=["local", "openai"], warmup=1 if quick else 3,
        server=server,
    )  # fmt: skip
    rows = []
    for provider, ms in results.items():
        label = "local provider" if provider == "local" else "OpenAI fake's 1024x1024 picture"
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        rows += [
            Row(
                f"one job, 6 platforms, POST -> final live event, p50 of {jobs}, {label}",
                f"329 ms (p50, polling); old server {OLD_SERVER_MS:.0f} ms",
                f"{p50:.0f} ms ({p50 / OLD_SERVER_MS:.2f}x the old server)",
                f"{p50 / 329:.2f}x",
                f"<= {TARGET_P50_MS:.0f} ms",
                p50 <= TARGET_P50_MS,
            ),
            Row(
                f"same, p99 of {jobs}, {label}",
                "413 ms (p90, polling)",
                f"{p99:.0f} ms (p90 {percentile(ms, 90):.0f})",
                f"{p99 / 413:.2f}x",
                f"<= {TARGET_P99_MS:.0f} ms",
                p99 <= TARGET_P99_MS,
            ),
        ]
    return rows


def throughput_rows(env: BenchEnv, owner: Any, quick: bool) -> list[Row]:
    from bench.worker import measure_throughput

    jobs = 10 if quick else 100
    r = measure_throughput(env, owner, jobs, 2, 2)
    pool = max(r["loaded"]["pool"])
    return [
        Row(
            f"sustained jobs/s, {jobs} jobs x 2 platforms, 1 worker of 2 pool processes",
            "7.90; old server 5.23",
            f"{r['jobs_per_s']:.2f} ({r['jobs_per_s'] / 5.23:.2f}x the old server)",
            f"{r['jobs_per_s'] / 7.90:.2f}x",
            ">= 10.5",
            r["jobs_per_s"] >= 10.5,
        ),
        Row(
            f"images-worker pool process RSS after {jobs} jobs (largest of 2)",
            "142-146 MiB",
            f"{pool:.0f} MiB ("
            + " / ".join(f"{x:.0f}" for x in r["loaded"]["pool"])
            + f"; idle {max(r['idle']['pool']):.0f}; parent {r['loaded']['parent']:.0f})",
            f"{pool / 146:.2f}x",
            "<= 100 MiB",
            pool <= 100,
        ),
    ]


def run(only: list[str], *, quick: bool = False, server: str = "uvicorn:1") -> list[Row]:
    rows: list[Row] = []
    with own_redis() as redis_base, bench_env(redis_base) as env:
        before = image_step_seconds()
        users = env.users_with_tokens(64)
        tokens = [token for _, token in users]
        from django.contrib.auth import get_user_model

        owner = get_user_model().objects.get(pk=users[0][0])
        steps: dict[str, Callable[[], list[Row]]] = {
            "cpu": lambda: cpu_rows(env, owner, quick),
            "submit": lambda: submit_rows(env, tokens, server, quick),
            "e2e": lambda: e2e_rows(env, tokens[0], server, quick),
            "throughput": lambda: throughput_rows(env, owner, quick),
        }
        for group in GROUPS:
            if group in only:
                print(f"measuring {group} ...", flush=True)
                started = len(env.children)
                try:
                    rows += steps[group]()
                except Exception as exc:  # the other rows still count
                    traceback.print_exc()
                    for child in env.children[started:]:  # its servers and workers
                        env.stop(child)
                    rows.append(Row(group, "", f"failed: {exc!r}"[:300], "", "", False))
        rows.insert(0, calibration_row(before, image_step_seconds()))
    table(
        f"Performance round two (issue 18), one run ({machine()})",
        ["figure", "baseline (now, 30 Nov)", "measured", "measured / baseline", "target",
         "met?"],
        [row.cells() for row in rows],
    )  # fmt: skip
    met = [r for r in rows if r.met is not None]
    print(f"\n{sum(r.met for r in met)} of {len(met)} targets met.")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(GROUPS), help="comma-separated groups")
    parser.add_argument("--quick", action="store_true", help="tiny parameters (a smoke run)")
    parser.add_argument(
        "--server",
        default="uvicorn:1",
        help="web server (kind:processes) of the submit and e2e rows",
    )
    args = parser.parse_args(argv)
    only = [g for g in args.only.split(",") if g]
    unknown = set(only) - set(GROUPS)
    if unknown:
        parser.error(f"unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    run(only, quick=args.quick, server=args.server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
