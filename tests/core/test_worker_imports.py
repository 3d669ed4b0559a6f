"""A worker imports only what it runs: not the URL conf, the views, or the parts of the web
stack that only they use (DRF's views, request and authentication, knox's authentication,
drf-spectacular's schema generation, Django's test tools). Every module a worker's main
process imports is copied into each of its pool processes and counts in their memory
(issue 18: 103 -> 95 MiB per idle images pool process).

What the worker imports is found as `celery -A snapasset worker` finds it, in a process of
its own: the Celery app, then the worker (Django set up by Celery's fixup, its system checks
as the worker runs them, every task module, the worker_init receivers), not started.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

WORKER_IMPORTS = """
import json, sys
from snapasset.celery import app
app.Worker(
    hostname="imports@test", queues=["images"], concurrency=2, loglevel="WARNING",
    without_mingle=True, without_gossip=True, without_heartbeat=True,
)
print(json.dumps(sorted(sys.modules)))
"""

# What the web serves with and a worker never runs.
WEB_ONLY = [
    "snapasset.urls",
    "snapasset.core.authentication",
    "snapasset.core.exception_handler",
    "jobs.api",
    "jobs.live.views",
    "rest_framework.views",
    "rest_framework.request",
    "rest_framework.authentication",
    "rest_framework.schemas",
    "rest_framework.test",
    "knox.auth",
    "drf_spectacular.extensions",
    "drf_spectacular.openapi",
    "django.test",
]


def worker_modules(**env: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", WORKER_IMPORTS],
        cwd=ROOT,
        env={**_environ(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _environ() -> dict[str, str]:
    """This run's environment, with the worker's default for its system checks."""
    return {k: v for k, v in os.environ.items() if k != "CELERY_SKIP_CHECKS"}


def test_a_worker_imports_its_tasks_and_none_of_the_web_stack() -> None:
    modules = worker_modules()
    assert {"jobs.tasks", "jobs.pipeline", "cleanup.tasks", "jobs.webhooks.tasks"} <= modules
    assert sorted(set(WEB_ONLY) & modules) == []


def test_the_errors_module_imports_no_part_of_drf() -> None:
    """The worker raises and catches the project's errors; only the handler that answers
    them as JSON is DRF's (snapasset.core.exception_handler)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, snapasset.core.exceptions; "
            "print(sorted(m for m in sys.modules if m.startswith('rest_framework')))",
        ],
        cwd=ROOT,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
