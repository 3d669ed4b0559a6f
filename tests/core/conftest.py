"""A temporary checkout of the project: its code copied to a folder of its own, with a `.env`
of the test's making, and the real commands (manage.py, uvicorn, celery, make) run there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, ManagedProcess

# What a checkout needs to run; tests, bench and docs stay behind.
CODE = [
    "manage.py", "flowerconfig.py", "pyproject.toml", "Makefile", "Procfile", "Procfile.dev",
    "requirements.txt", "requirements-run.txt", "requirements-dev.txt", ".env.example",
    "snapasset", "jobs", "cleanup", "templates",
]  # fmt: skip
# The variables of `make test`'s own environment that a checkout must get from its `.env`
# (make's, and `make coverage`'s, which would measure the checkout's copy of the code).
MAKE_TEST_VARIABLES = {"DEBUG", "DATABASE_URL", "REDIS_URL", "IMAGE_PROVIDER", "SNAPASSET_VAR_DIR",
                       "MEDIA_ROOT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "COVERAGE_PROCESS_CONFIG",
                       "COVERAGE_PROCESS_START"}  # fmt: skip


class Checkout:
    def __init__(self, path: Path, log_dir: Path) -> None:
        self.path = path
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def write_env(self, text: str) -> None:
        (self.path / ".env").write_text(text)

    def env(self, **overrides: str) -> dict[str, str]:
        """This run's environment without what `make test` sets, so the `.env` decides."""
        env = {k: v for k, v in os.environ.items() if k not in MAKE_TEST_VARIABLES}
        env.update(PYTHONUNBUFFERED="1", **overrides)
        return env

    def run(
        self, *argv: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=self.path, env=env or self.env(), capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def python(self, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, *args, env=self.env(**overrides))

    def start(self, name: str, argv: list[str], **overrides: str) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.env(**overrides), self.log_dir, cwd=self.path)
        self.processes.append(proc)
        return proc


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Checkout]:
    path = tmp_path / "checkout"
    path.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CODE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=ignore)
        else:
            shutil.copy2(source, path / name)
    logs = tmp_path / "process-logs"
    logs.mkdir()
    tree = Checkout(path, logs)
    yield tree
    for proc in tree.processes:
        proc.stop(timeout=30)
