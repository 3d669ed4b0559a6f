"""The production web server: uvicorn alone (its own `--workers` supervisor) against gunicorn
with uvicorn workers (the `uvicorn-worker` package), at several processes per core, on
the same app, database and Redis, candidates alternating within each round.

For each candidate:
- the JSON API with a token: POST /api/jobs/generate (validation, one INSERT, one Celery
  send; no worker runs, messages queue in the bench's Redis db) and GET /api/jobs/{id} (a
  read), p50 at 1 client and req/s at 8 clients (the load generator's 8 processes share
  the machine's cores with the server);
- held SSE streams: N idle job streams spread over the processes by the kernel, the RSS
  of every process of the server (master included) before and with them; then M
  subscribers on one job and K events stored + published by another process (as a worker
  does), publish -> frame received p50 / p99 over every (subscriber, event).

    python -m bench.server [--candidates uvicorn:1,uvicorn:2,gunicorn:1,gunicorn:2,gunicorn:4]
        [--rounds 2] [--requests 200] [--seconds 3] [--streams 1000] [--subscribers 200]
        [--events 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time

from bench._support import (
    ROOT,
    BenchEnv,
    Child,
    bench_env,
    children,
    cpu_seconds,
    machine,
    median,
    percentile,
    rss_mib,
    table,
)
from bench.load import run_load
from bench.sse import close_all, open_streams

CANDIDATES = "uvicorn:1,uvicorn:2,gunicorn:1,gunicorn:2,gunicorn:4"


def tree(child: Child) -> list[int]:
    """The server's processes: the master (or uvicorn's supervisor) and its workers."""
    pids = [child.pid]
    for pid in children(child.pid):
        pids += [pid, *children(pid)]
    return pids


def tree_rss(child: Child) -> float:
    return sum(rss_mib(pid) for pid in tree(child))


def tree_cpu(child: Child) -> float:
    return sum(cpu_seconds(pid) for pid in tree(child))


def json_api(
    port: int, tokens: list[str], job_path: str, *, requests: int, seconds: float
) -> dict[str, float]:
    figures = {}
    for name, path, method, users in (
        ("post", "/api/jobs/generate", "POST", tokens[1:]),
        ("get", job_path, "GET", tokens[:1]),
    ):
        one = run_load(port, path, users, clients=1, requests=requests, method=method)
        eight = run_load(port, path, users, clients=8, seconds=seconds, method=method)
        if one.errors or eight.errors:
            raise RuntimeError(f"{method} {path}: {one.errors + eight.errors} failed requests")
        figures[f"{name}_p50"] = percentile(one.latencies, 50) * 1000
        figures[f"{name}_rps"] = eight.rps
        figures[f"{name}_p99_8"] = percentile(eight.latencies, 99) * 1000
    return figures


async def streams(
    env: BenchEnv, web: Child, port: int, token: str, idle_jobs: list[str], fanout_job: str,
    subscribers: int, events: int,
) -> dict[str, float]:  # fmt: skip
    base = tree_rss(web)
    idle = await open_streams(port, token, [f"/api/sse/jobs/{j}" for j in idle_jobs], record=False)
    await asyncio.sleep(2)
    held = tree_rss(web)
    close_all(idle)
    await asyncio.sleep(1)
    subs = await open_streams(
        port, token, [f"/api/sse/jobs/{fanout_job}"] * subscribers, record=True
    )
    cpu_before = tree_cpu(web)
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.sse", "--publish-job", fanout_job, "--events", str(events),
        "--interval", "0.1", cwd=ROOT, env=env.child_env(), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await publisher.communicate()
    await asyncio.sleep(1)
    cpu = tree_cpu(web) - cpu_before
    sent = {int(k): v for k, v in json.loads(out.splitlines()[-1]).items()}
    latencies, missing = [], 0
    for client in subs:
        assert client.arrivals is not None
        for event_id, (_, published) in sent.items():
            arrived = client.arrivals.get(event_id)
            if arrived is None:
                missing += 1
            else:
                latencies.append((arrived - published) * 1000)
    close_all(subs)
    if len(latencies) < 2:
        raise RuntimeError(f"no deliveries: sent {sent}, a client saw {subs[0].arrivals}")
    q = statistics.quantiles(latencies, n=100)
    return {
        "rss_base": base, "rss_held": held, "kib_per_stream": (held - base) * 1024 / len(idle),
        "fan_p50": q[49], "fan_p99": q[98], "missing": missing,
        "cpu_per_event": cpu * 1000 / len(sent),
    }  # fmt: skip


def run(args: argparse.Namespace) -> list[list[str]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * (args.streams + args.subscribers) + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, need)), hard))
    candidates = args.candidates.split(",")
    api: dict[str, list[dict[str, float]]] = {c: [] for c in candidates}
    sse: dict[str, list[dict[str, float]]] = {c: [] for c in candidates}
    idle_rss: dict[str, float] = {}
    with bench_env() as env:
        users = env.users_with_tokens(16)
        tokens = [t for _, t in users]
        from django.contrib.auth import get_user_model

        from jobs.models import PENDING_STATUSES, Job, JobKind, JobStatus

        owner = get_user_model().objects.get(pk=users[0][0])
        jobs = Job.objects.bulk_create(
            [Job(owner=owner, kind=JobKind.IMAGE_GENERATION, prompt="bench", platforms=[],
                 status=JobStatus.ACTIVE) for _ in range(args.streams + 1)]
        )  # fmt: skip
        job_ids = [str(j.id) for j in jobs]
        for round_ in range(args.rounds):
            for spec in candidates:
                server, workers = spec.split(":")
                web, base = env.start_web(workers=int(workers), server=server)
                port = int(base.rsplit(":", 1)[1])
                run_load(port, "/api/jobs/generate", tokens[1:], clients=4, requests=25)  # warm-up
                run_load(port, f"/api/jobs/{job_ids[0]}", tokens[:1], clients=4, requests=25,
                         method="GET")  # fmt: skip
                time.sleep(0.5)
                idle_rss.setdefault(spec, tree_rss(web))
                # The submitted jobs (not the streams' jobs, of users[0]) stay few.
                Job.objects.filter(status__in=PENDING_STATUSES).exclude(owner=owner).update(
                    status=JobStatus.COMPLETED
                )
                api[spec].append(
                    json_api(port, tokens, f"/api/jobs/{job_ids[0]}",
                             requests=args.requests, seconds=args.seconds)
                )  # fmt: skip
                if round_ == 0 and args.streams:
                    sse[spec].append(asyncio.run(streams(
                        env, web, port, tokens[0], job_ids[: args.streams], job_ids[-1],
                        args.subscribers, args.events,
                    )))  # fmt: skip
                env.stop(web)
                env.redis().flushdb()
    rows = []
    base = candidates[0]
    base_api = {k: median([r[k] for r in api[base]]) for k in api[base][0]}
    for spec in candidates:
        a = {k: median([r[k] for r in api[spec]]) for k in api[spec][0]}
        s = sse[spec][0] if sse[spec] else {}
        rows.append([
            spec, f"{idle_rss[spec]:.0f}",
            f"{a['post_p50']:.1f} ({a['post_p50'] / base_api['post_p50']:.2f}x)",
            f"{a['post_rps']:.0f} ({a['post_rps'] / base_api['post_rps']:.2f}x)",
            f"{a['get_p50']:.1f} ({a['get_p50'] / base_api['get_p50']:.2f}x)",
            f"{a['get_rps']:.0f} ({a['get_rps'] / base_api['get_rps']:.2f}x)",
            f"{s['rss_held']:.0f} ({s['kib_per_stream']:.0f} KiB/stream)" if s else "-",
            f"{s['fan_p50']:.1f} / {s['fan_p99']:.1f} ({s['missing']} missing)" if s else "-",
            f"{s['cpu_per_event']:.1f}" if s else "-",
        ])  # fmt: skip
    table(
        f"Web server candidates, medians of {args.rounds} rounds, ratios to {base} "
        f"({machine()}); SSE: {args.streams} idle streams, then {args.subscribers} subscribers "
        f"x {args.events} events",
        ["server:processes", "idle RSS MiB (all processes)", "POST p50 ms, 1 client",
         "POST req/s, 8 clients", "GET p50 ms, 1 client", "GET req/s, 8 clients",
         "RSS MiB with streams", "event fan-out p50 / p99 ms", "server CPU ms per event"],
        rows,
    )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", default=CANDIDATES)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--events", type=int, default=20)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
