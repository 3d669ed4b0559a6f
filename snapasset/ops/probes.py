"""The checks of the parts SnapAsset needs (database, broker, storage, provider, workers) and
the queues' depths and counts: what /health answers (snapasset/ops/health.py) and what a
metrics scrape reads (snapasset/ops/metrics.py, served by the web and, with
WORKER_METRICS_PORT, by a worker). No part of the web stack: a worker imports this too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection

from jobs import broker
from snapasset.ops.heartbeat import read_live_workers


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}
    return {"status": "up", "vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    try:
        broker.probe_client().ping()
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}
    return {"status": "up", "embedded": settings.EMBEDDED_REDIS}


def check_storage() -> dict[str, Any]:
    from django.core.files.storage import default_storage

    try:
        default_storage.exists("health-check")
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}
    return {"status": "up", "backend": default_storage.__class__.__name__}


def check_provider() -> dict[str, Any]:
    if settings.IMAGE_PROVIDER == "openai" and not settings.OPENAI_API_KEY:
        return {"status": "misconfigured", "name": "openai", "error": "OPENAI_API_KEY is not set"}
    return {"status": "up", "name": settings.IMAGE_PROVIDER}


# API names of the queues -> job kinds and Celery queue names.
QUEUE_KIND = {"imageGeneration": "image-generation", "fileCleanup": "file-cleanup"}
QUEUE_BROKER_NAME = {"imageGeneration": "images", "fileCleanup": "cleanup"}


def broker_queue_depths() -> dict[str, int]:
    """Messages waiting in each Celery queue this deployment's workers consume."""
    return broker.queue_depths(list(settings.WORKER_QUEUES))


def live_workers() -> list[dict[str, Any]]:
    return read_live_workers(broker.probe_client())


def check_workers() -> dict[str, Any]:
    try:
        workers = live_workers()
    except Exception as exc:
        return {"status": "unknown", "error": exc.__class__.__name__}
    per_queue = {
        queue: sum(1 for worker in workers if queue in worker["queues"])
        for queue in settings.WORKER_QUEUES
    }
    missing = [queue for queue, count in per_queue.items() if count == 0]
    body: dict[str, Any] = {
        "status": "down" if not workers else ("partial" if missing else "up"),
        "count": len(workers),
        "queues": per_queue,
        "alive": workers,
    }
    if missing:
        body["error"] = f"no live worker consumes: {', '.join(missing)}"
    return body


def queue_counts(depths: dict[str, int] | None) -> dict[str, dict[str, int]]:
    from jobs.models import JobStatus
    from jobs.selectors import job_stats

    stats = job_stats(user=None)
    counts: dict[str, dict[str, int]] = {}
    for name, row in stats.items():
        counts[name] = {
            "waiting": row[JobStatus.WAITING] + row[JobStatus.DELAYED],
            "active": row[JobStatus.ACTIVE],
        }
        if depths is not None:
            counts[name]["brokerDepth"] = depths.get(QUEUE_BROKER_NAME[name], 0)
    return counts
