"""GET /health: real checks of the parts SnapAsset needs; 503 when the database or broker is down.

Workers are reported (from the heartbeats they write, see snapasset/ops/heartbeat.py) but their
absence does not make the answer 503: /health is what a load balancer asks about the web
process, and taking the API down because no worker runs would only hide the jobs' state.
``down`` lists every part that is not up, workers included, for monitors.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from jobs import broker
from snapasset.ops.heartbeat import read_live_workers

STARTED_AT = time.monotonic()


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


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    uptime = serializers.FloatField(help_text="Seconds since the web process started.")
    timestamp = serializers.IntegerField(help_text="ms since the epoch.")
    services = serializers.DictField(
        child=serializers.JSONField(),
        help_text="database, broker, storage, provider, queues... each with its `status`.",
    )
    down = serializers.ListField(
        child=serializers.CharField(), help_text="The services that are not up, workers included."
    )


@extend_schema(
    operation_id="health",
    summary="Liveness and dependencies (public)",
    responses={200: HealthSerializer, 503: HealthSerializer},
)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def health(request: HttpRequest) -> JsonResponse:
    database = check_database()
    broker = check_broker()
    services: dict[str, Any] = {
        "database": database,
        "broker": broker,
        "storage": check_storage(),
        "provider": check_provider(),
        "workers": check_workers() if broker["status"] == "up" else {"status": "unknown"},
    }
    depths = None
    if broker["status"] == "up":
        try:
            depths = broker_queue_depths()
        except Exception as exc:
            broker["status"], broker["error"] = "down", exc.__class__.__name__
    if database["status"] == "up":
        services["queues"] = queue_counts(depths)
    healthy = services["database"]["status"] == "up" and services["broker"]["status"] == "up"
    body = {
        "status": "ok" if healthy else "degraded",
        "uptime": round(time.monotonic() - STARTED_AT, 1),
        "timestamp": int(time.time() * 1000),
        "services": services,
        "down": [
            name
            for name, part in services.items()
            if name != "queues" and part.get("status") != "up"
        ],
    }
    return JsonResponse(HealthSerializer(body).data, status=200 if healthy else 503)
