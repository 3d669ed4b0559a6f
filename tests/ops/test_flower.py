"""Flower as deployed: `celery -A snapasset flower` against the test Redis, behind basic auth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, ManagedProcess, child_env, free_port, wait_until

pytestmark = pytest.mark.e2e


def test_flower_serves_only_with_basic_auth(tmp_path: Path, start_worker: Any) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = child_env(FLOWER_BASIC_AUTH="ops:s3cret-pass", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "snapasset",
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
    ]
    flower = ManagedProcess(f"flower-{port}", argv, env, tmp_path)
    base = f"http://127.0.0.1:{port}"

    def answers() -> httpx.Response | None:
        if flower.proc.poll() is not None:
            raise AssertionError(flower.output())
        try:
            return httpx.get(f"{base}/", timeout=3)
        except httpx.HTTPError:
            return None

    try:
        anonymous = wait_until(answers, timeout=60, interval=0.3, what="flower to listen")
        assert anonymous.status_code == 401
        assert httpx.get(f"{base}/", auth=("ops", "wrong"), timeout=10).status_code == 401
        page = httpx.get(f"{base}/", auth=("ops", "s3cret-pass"), timeout=10)
        assert page.status_code == 200
        assert "Flower" in page.text
        workers = httpx.get(f"{base}/api/workers", auth=("ops", "s3cret-pass"), timeout=20)
        assert workers.status_code == 200  # it reached the project's broker
        # Its own Prometheus endpoint (docs/operations.md#flower) answers without credentials,
        # as Flower's /healthcheck does (so the docs say: scrape it on an internal network),
        # from its memory: nothing of Flower's lands in the directory the app's /metrics sums.
        start_worker(concurrency=1)  # its events move Flower's counters

        def counted() -> str | None:
            metrics = httpx.get(f"{base}/metrics", timeout=10)
            assert metrics.status_code == 200
            return metrics.text if "flower_worker_online{" in metrics.text else None

        wait_until(counted, timeout=30, interval=0.5, what="Flower to count a worker's events")
        assert not [p for p in metrics_dir.glob("*.db")], "Flower wrote multiprocess files"
    finally:
        flower.stop()


def test_flower_refuses_to_start_without_credentials() -> None:
    env = child_env()
    env.pop("FLOWER_BASIC_AUTH", None)
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "snapasset", "flower", f"--port={free_port()}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr + result.stdout
