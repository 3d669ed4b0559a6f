"""The benchmarks still run (figures are not asserted: no timed assertions in the suite)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests.conftest import ROOT

MODULES = [
    "bench",
    "bench.__main__",
    "bench.image",
    "bench.submit",
    "bench.worker",
    "bench.load",
    "bench.urls",
    "bench.tasks",
    "bench.signals",
    "bench.task_results",
    "bench.spend",
    "bench.report",
    "bench.e2e",
    "bench.server",
    "bench.capacity",
    "bench.batch",
    "bench.breakdown",
]


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_the_image_benchmark_renders_the_six_outputs_with_pillow_and_libvips() -> None:
    from bench import image

    data = image.sources(noise=10)["local provider"]
    assert image.pillow_job(data, "jpeg", 2) > 0
    if image.vips_available():
        assert image.vips_job(data, "jpeg") > 0


def _run_bench(*argv: str) -> str:
    env = dict(os.environ)
    # This run's own Redis server and db number, never another run's.
    env["BENCH_REDIS_URL"], env["BENCH_REDIS_DB"] = settings.REDIS_URL.rsplit("/", 1)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.e2e
@pytest.mark.slow
def test_the_submit_benchmark_runs_against_a_real_server_and_cleans_up() -> None:
    out = _run_bench(
        "bench.submit",
        "--rounds",
        "1",
        "--requests",
        "5",
        "--seconds",
        "0.2",
        "--servers",
        "uvicorn:1",
    )
    assert "ratio ours / bare" in out


@pytest.mark.e2e
@pytest.mark.slow
def test_the_batch_benchmark_queues_the_same_jobs_each_way_against_a_real_server() -> None:
    out = _run_bench("bench.batch", "--rounds", "1", "--jobs", "8")
    assert "1 x POST /api/jobs/generate/batch of 8" in out and "SQL statements per job" in out


@pytest.mark.e2e
@pytest.mark.slow
def test_the_worker_benchmark_runs_against_a_real_worker_and_cleans_up() -> None:
    out = _run_bench(
        "bench.worker", "--latency", "2", "--cpu-jobs", "2", "--jobs", "2", "--platforms", "1"
    )
    assert "enqueue -> task start" in out and "jobs/s" in out


@pytest.mark.slow
def test_the_result_backend_benchmark_compares_the_stock_backend_with_ours() -> None:
    out = _run_bench("bench.task_results", "--tasks", "10", "--rounds", "1", "--retry")
    assert "stock, extended (before)" in out and "ours (after)" in out


def test_the_breakdown_times_the_sql_events_and_file_saves_of_real_jobs() -> None:
    out = _run_bench("bench.breakdown", "--jobs", "2", "--rounds", "1")
    assert "| SQL statements (Django's cursor + psycopg) |" in out
    assert "| file saves (storage._save) |" in out and "(7.0 calls)" in out


def test_the_spend_benchmark_runs_the_limiter_in_several_processes() -> None:
    out = _run_bench("bench.spend", "--limit", "60", "--period", "2", "--jobs", "12",
                     "--processes", "2")  # fmt: skip
    assert "| 12 | 60/2 s |" in out and "Grant order by priority" in out


@pytest.mark.e2e
@pytest.mark.slow
def test_make_bench_prints_one_table_with_every_round_two_target() -> None:
    out = _run_bench("bench.report", "--quick")
    for figure in (
        "worker CPU per 6-platform job outside the image work",
        "POST /api/jobs/generate p50, 1 client, vs the bare DRF view",
        "submit throughput, 8 clients, vs the bare view",
        "POST -> final live event, p50 of 5, local provider",
        "same, p99 of 5, OpenAI fake's 1024x1024 picture",
        "sustained jobs/s",
        "images-worker pool process RSS",
    ):
        assert figure in out, figure
    assert "failed:" not in out and "targets met." in out


@pytest.mark.e2e
@pytest.mark.slow
def test_one_group_of_rows_runs_alone() -> None:
    out = _run_bench("bench.report", "--quick", "--only", "e2e")
    assert "POST -> final live event" in out and "sustained jobs/s" not in out


@pytest.mark.e2e
@pytest.mark.slow
def test_the_capacity_benchmark_counts_every_service_per_job() -> None:
    out = _run_bench("bench.capacity", "--jobs", "3", "--platforms", "2", "--curve", "1",
                     "--curve-jobs", "3")  # fmt: skip
    for figure in ("Postgres transactions committed", "Redis commands", "storage requests",
                   "CPU ms: web / worker", "jobs/s by worker pool processes"):  # fmt: skip
        assert figure in out, figure


@pytest.mark.e2e
@pytest.mark.slow
def test_the_web_server_benchmark_compares_uvicorn_and_gunicorn() -> None:
    out = _run_bench("bench.server", "--candidates", "uvicorn:1,gunicorn:1", "--rounds", "1",
                     "--requests", "5", "--seconds", "0.3", "--streams", "5",
                     "--subscribers", "3", "--events", "2")  # fmt: skip
    assert "| uvicorn:1 |" in out and "| gunicorn:1 |" in out and "0 missing" in out


@pytest.mark.e2e
@pytest.mark.slow
def test_the_spend_benchmark_runs_a_burst_through_real_workers_and_the_limited_fake() -> None:
    out = _run_bench("bench.spend", "--workers", "2", "--limit", "6", "--period", "10",
                     "--jobs", "8")  # fmt: skip
    assert "| 8 | 8 | 6/10 s |" in out and "Attempts per job: [1]" in out
