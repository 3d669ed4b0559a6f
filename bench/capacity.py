"""Capacity: what one job costs each shared service, measured on the real processes, and the
curve of jobs/s with 1, 2 and 4 worker processes that the model is checked against
(docs/CAPACITY.md).

Jobs go in through the real entry points as a client sends them: POST /api/jobs/generate
(token auth), then the job's live stream until its `final` event; a real web server, Celery
worker (2 pool processes), Postgres, and a redis-server of the bench's own (so its
counters are this bench's alone). The provider is OpenAI's client pointed at the loopback
fake (a 1024x1024 PNG), storage is Supabase's client pointed at the loopback fake: the fakes
count the storage requests and bytes. Per job, as deltas over the batch:

- Postgres: transactions committed and rolled back, rows inserted / updated / deleted
  (pg_stat_database and pg_stat_user_tables of the bench's own database), and the CPU of
  the backends serving it (/proc);
- Redis: commands by name (INFO commandstats), bytes in and out, memory kept, its CPU;
- storage: requests by method and bytes uploaded; the image model: calls;
- CPU seconds of the web process and of the worker (parent + pool processes).

    python -m bench.capacity [--jobs 40] [--platforms 2,6] [--curve 1,2,4] [--curve-jobs 100]
"""

from __future__ import annotations

import argparse
import http.client
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench._support import (
    BenchEnv,
    Child,
    bench_env,
    children,
    cpu_seconds,
    machine,
    own_redis,
    table,
)
from bench.e2e import follow_to_final, post_job

# --- counters -----------------------------------------------------------------------------


@dataclass
class Snapshot:
    pg: dict[str, int]
    tables: dict[str, tuple[int, int, int]]
    pg_cpu: dict[int, float]
    redis_calls: dict[str, int]
    redis: dict[str, float]
    cpu: dict[str, float]
    storage: dict[str, int] = field(default_factory=dict)
    model_calls: int = 0


def _pg(env: BenchEnv) -> tuple[dict[str, int], dict[str, tuple[int, int, int]], dict[int, float]]:
    import psycopg

    with psycopg.connect(env.database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
            "tup_returned, tup_fetched FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        names = ["commits", "rollbacks", "inserted", "updated", "deleted", "returned", "fetched"]
        tables = {
            name: (ins, upd, dele)
            for name, ins, upd, dele in conn.execute(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
            ).fetchall()
        }
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            ).fetchall()
        ]
    backend_cpu = {}
    for pid in pids:
        try:
            backend_cpu[pid] = cpu_seconds(pid)
        except OSError:
            pass
    return dict(zip(names, (int(x) for x in row), strict=True)), tables, backend_cpu


def _redis(env: BenchEnv) -> tuple[dict[str, int], dict[str, float]]:
    client = env.redis()
    calls = {}
    for key, value in client.info("commandstats").items():
        calls[key.removeprefix("cmdstat_")] = int(value["calls"])
    stats = client.info("stats")
    memory = client.info("memory")
    cpu = client.info("cpu")
    return calls, {
        "net_in": float(stats["total_net_input_bytes"]),
        "net_out": float(stats["total_net_output_bytes"]),
        "memory": float(memory["used_memory"]),
        "cpu": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    }


def _tree_cpu(child: Child) -> float:
    total = 0.0
    for pid in [child.pid, *children(child.pid)]:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def snapshot(env: BenchEnv, processes: dict[str, Child], fakes: dict[str, Any]) -> Snapshot:
    time.sleep(11.0)  # idle backends flush their statistics within 10 s (Postgres 15+)
    pg, tables, pg_cpu = _pg(env)
    calls, redis = _redis(env)
    storage = fakes["storage"]
    with storage.lock:
        uploads = [r for r in storage.requests if r.method in ("POST", "PUT")]
        storage_counts = {
            "requests": len(storage.requests),
            "uploads": len(uploads),
            "bytes_up": sum(len(r.body) for r in uploads),
        }
    return Snapshot(
        pg=pg, tables=tables, pg_cpu=pg_cpu, redis_calls=calls, redis=redis,
        cpu={name: _tree_cpu(child) for name, child in processes.items()},
        storage=storage_counts, model_calls=len(fakes["model"].generation_calls),
    )  # fmt: skip


@dataclass
class PerJob:
    platforms: int
    jobs: int
    pg: dict[str, float]
    tables: dict[str, tuple[float, float, float]]
    redis_calls: dict[str, float]
    redis: dict[str, float]
    cpu: dict[str, float]
    storage: dict[str, float]
    model_calls: float
    wall: float


def per_job(before: Snapshot, after: Snapshot, jobs: int, platforms: int, wall: float) -> PerJob:
    pg = {k: (after.pg[k] - before.pg[k]) / jobs for k in after.pg}
    # The snapshots' own autocommitted statements: the first one's five (flushed when it
    # disconnects) and the second one's two before it reads.
    pg["commits"] -= 7 / jobs
    tables = {
        name: tuple(
            (a - b) / jobs for a, b in zip(row, before.tables.get(name, (0, 0, 0)), strict=True)
        )
        for name, row in after.tables.items()
    }
    tables = {k: v for k, v in tables.items() if any(v)}
    pg_cpu = sum(cpu - before.pg_cpu.get(pid, 0.0) for pid, cpu in after.pg_cpu.items())
    calls = {
        name: (count - before.redis_calls.get(name, 0)) / jobs
        for name, count in after.redis_calls.items()
    }
    calls = {k: v for k, v in calls.items() if v and not k.startswith("info")}
    redis = {k: (after.redis[k] - before.redis[k]) / jobs for k in after.redis}
    cpu = {k: (after.cpu[k] - before.cpu[k]) / jobs for k in after.cpu}
    cpu["postgres"] = pg_cpu / jobs
    cpu["redis"] = redis.pop("cpu")
    storage = {k: (after.storage[k] - before.storage[k]) / jobs for k in after.storage}
    return PerJob(
        platforms=platforms, jobs=jobs, pg=pg, tables=tables,  # type: ignore[arg-type]
        redis_calls=calls, redis=redis, cpu=cpu, storage=storage,
        model_calls=(after.model_calls - before.model_calls) / jobs, wall=wall,
    )  # fmt: skip


# --- the runs -----------------------------------------------------------------------------


@contextmanager
def fakes() -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    from tests.fakes.openai_server import API_KEY, FakeOpenAI
    from tests.fakes.supabase_server import SERVICE_KEY, FakeSupabase

    model = FakeOpenAI().start()
    storage = FakeSupabase(buckets={"generated-images": True}).start()
    try:
        yield {"model": model, "storage": storage}, {
            "IMAGE_PROVIDER": "openai", "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": model.api_base, "SUPABASE_URL": storage.url,
            "SUPABASE_SERVICE_KEY": SERVICE_KEY, "SUPABASE_BUCKET": "generated-images",
        }  # fmt: skip
    finally:
        model.stop()
        storage.stop()


def client_batch(port: int, token: str, jobs: int, platforms: list[str]) -> float:
    """POST every job, then follow each one's stream to its final event; wall seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    ids = [post_job(conn, token, platforms) for _ in range(jobs)]
    conn.close()
    for job_id in ids:
        final = follow_to_final(port, token, job_id, timeout=300)
        if final.get("status") != "completed":
            raise RuntimeError(f"job {job_id} ended {final}")
    return time.perf_counter() - started


def measure_costs(
    env: BenchEnv, token: str, extra: dict[str, str], fake: dict[str, Any], jobs: int,
    platform_counts: list[int],
) -> list[PerJob]:  # fmt: skip
    from jobs.platforms import PLATFORM_IDS

    web, base = env.start_web(**extra)
    port = int(base.rsplit(":", 1)[1])
    worker = env.start_worker(
        concurrency=2, queues="images,bench", BENCH_RECORD_STARTS="0", **extra
    )
    processes = {"web": web, "worker": worker}
    client_batch(port, token, 3, list(PLATFORM_IDS[:2]))  # warm-up: connections, code
    results = []
    for count in platform_counts:
        before = snapshot(env, processes, fake)
        wall = client_batch(port, token, jobs, list(PLATFORM_IDS[:count]))
        after = snapshot(env, processes, fake)
        results.append(per_job(before, after, jobs, count, wall))
    env.stop(worker)
    env.stop(web)
    return results


def measure_curve(
    env: BenchEnv, owner: Any, extra: dict[str, str], processes: list[int], jobs: int,
    platforms: int,
) -> dict[int, dict[str, float]]:  # fmt: skip
    """jobs/s of one worker with N pool processes, a burst of ``jobs`` queued at once."""
    from bench.worker import _new_jobs, _wait_finished
    from jobs.models import Job
    from jobs.platforms import PLATFORM_IDS
    from jobs.services.delivery import job_send_message

    curve = {}
    for count in processes:
        worker = env.start_worker(concurrency=count, queues="images,bench", **extra)
        cpu_before, idle_before, own_before = _tree_cpu(worker), _idle_seconds(), _own_cpu()
        batch = _new_jobs(owner, jobs, list(PLATFORM_IDS[:platforms]))
        start = time.time()
        for job in batch:
            job_send_message(job_id=str(job.id), kind=job.kind, priority=job.priority)
        _wait_finished([job.id for job in batch], timeout=900)
        last = max(
            j.finished_at.timestamp() for j in Job.objects.filter(pk__in=[j.id for j in batch])
        )
        wall = time.time() - start
        cpu = _tree_cpu(worker) - cpu_before
        idle, own = _idle_seconds() - idle_before, _own_cpu() - own_before
        env.stop(worker)
        curve[count] = {
            "jobs_per_s": jobs / (last - start), "worker_cpu": cpu / jobs,
            "idle_cores": idle / wall, "fakes_cpu": own / jobs,
        }  # fmt: skip
    return curve


def _idle_seconds() -> float:
    """Seconds the machine's cores have been idle (all cores, /proc/stat)."""
    import os

    fields = open("/proc/stat").readline().split()[1:]  # noqa: SIM115
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    """CPU of this process: the loopback fakes' threads and the bench's own polling."""
    import os

    times = os.times()
    return times.user + times.system


# --- the report -----------------------------------------------------------------------------


def report(costs: list[PerJob], curve: dict[int, dict[str, float]], curve_platforms: int) -> None:
    rows = []
    for c in costs:
        rows += [
            [c.platforms, "Postgres transactions committed / rolled back",
             f"{c.pg['commits']:.1f} / {c.pg['rollbacks']:.1f}"],
            [c.platforms, "Postgres rows inserted / updated / deleted",
             f"{c.pg['inserted']:.1f} / {c.pg['updated']:.1f} / {c.pg['deleted']:.1f}"],
            [c.platforms, "Postgres rows by table (ins / upd / del)", "; ".join(
                f"{name} {i:.1f}/{u:.1f}/{d:.1f}" for name, (i, u, d) in sorted(c.tables.items())
            )],
            [c.platforms, "Redis commands", f"{sum(c.redis_calls.values()):.1f}: " + ", ".join(
                f"{name} {n:.1f}" for name, n in sorted(c.redis_calls.items(), key=lambda x: -x[1])
            )],
            [c.platforms, "Redis bytes in / out / kept (memory)",
             f"{c.redis['net_in'] / 1024:.1f} / {c.redis['net_out'] / 1024:.1f} / "
             f"{c.redis['memory'] / 1024:.1f} KiB"],
            [c.platforms, "storage requests (uploads) / bytes up",
             f"{c.storage['requests']:.1f} ({c.storage['uploads']:.1f}) / "
             f"{c.storage['bytes_up'] / 1e6:.2f} MB"],
            [c.platforms, "image model calls", f"{c.model_calls:.2f}"],
            [c.platforms, "CPU ms: web / worker (parent + pool) / Postgres backends / Redis",
             f"{c.cpu['web'] * 1000:.1f} / {c.cpu['worker'] * 1000:.1f} / "
             f"{c.cpu['postgres'] * 1000:.1f} / {c.cpu['redis'] * 1000:.1f}"],
            [c.platforms, "batch wall time per job (2 pool processes)",
             f"{c.wall / c.jobs * 1000:.0f} ms ({c.jobs / c.wall:.2f} jobs/s)"],
        ]  # fmt: skip
    table(
        f"Per job, {costs[0].jobs} jobs per batch ({machine()})",
        ["platforms", "figure", "per job"],
        rows,
    )
    cost = next((c for c in costs if c.platforms == curve_platforms), costs[0])
    curve_rows = []
    for processes, figures in curve.items():
        # Everything runs on this machine's 2 cores: the worker, Postgres, Redis and the
        # fakes (the web is idle here: jobs are queued directly).
        busy = figures["worker_cpu"] + cost.cpu["postgres"] + cost.cpu["redis"]
        busy += figures["fakes_cpu"]
        predicted = min(processes, 2) / busy
        used = figures["jobs_per_s"] * busy
        curve_rows.append([
            processes, f"{figures['jobs_per_s']:.2f}", f"{figures['worker_cpu'] * 1000:.0f}",
            f"{figures['fakes_cpu'] * 1000:.0f}", f"{predicted:.2f}",
            f"{figures['jobs_per_s'] / predicted:.2f}", f"{used:.2f}",
            f"{figures['idle_cores']:.2f}",
        ])  # fmt: skip
    table(
        f"jobs/s by worker pool processes, {curve_platforms}-platform jobs ({machine()}); "
        f"model: min(processes, 2 cores) / (worker CPU + fakes CPU + Postgres "
        f"{cost.cpu['postgres'] * 1000:.0f} + Redis {cost.cpu['redis'] * 1000:.0f} ms)",
        ["pool processes", "jobs/s measured", "worker CPU ms per job", "fakes + bench CPU ms",
         "model jobs/s", "measured / model", "cores our processes used", "cores left idle"],
        curve_rows,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--platforms", default="2,6")
    parser.add_argument("--curve", default="1,2,4")
    parser.add_argument("--curve-jobs", type=int, default=100)
    parser.add_argument("--curve-platforms", type=int, default=2)
    args = parser.parse_args(argv)
    with own_redis() as redis_base, bench_env(redis_base) as env, fakes() as (fake, extra):
        ((user_id, token),) = env.users_with_tokens(1)
        from django.contrib.auth import get_user_model

        owner = get_user_model().objects.get(pk=user_id)
        costs = measure_costs(
            env, token, extra, fake, args.jobs, [int(x) for x in args.platforms.split(",")]
        )
        curve = (
            measure_curve(
                env,
                owner,
                extra,
                [int(x) for x in args.curve.split(",")],
                args.curve_jobs,
                args.curve_platforms,
            )  # fmt: skip
            if args.curve
            else {}
        )
    report(costs, curve, args.curve_platforms)


if __name__ == "__main__":
    main()
