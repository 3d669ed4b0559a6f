"""Flower as deployed: `celery -A snapasset flower` against the test Redis, behind basic auth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, ManagedProcess, child_env, free_port, wait_until

pytestmark = pytest.mark.e2e


def test_flower_serves_only_with_basic_auth(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(FLOWER_BASIC_AUTH="ops:s3cret-pass")
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
