"""GET /health: real checks of the parts SnapAsset needs; 503 when the database or broker is down."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from jobs.openapi import HealthSerializer
from snapasset.celery import app as celery_app

STARTED_AT = time.monotonic()
BROKER_TIMEOUT_SECONDS = 2


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
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
            conn.default_channel.client.ping()
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


def queue_counts() -> dict[str, dict[str, int]]:
    from jobs.selectors import job_stats

    stats = job_stats(user=None)
    return {
        name: {"waiting": counts["waiting"] + counts["delayed"], "active": counts["active"]}
        for name, counts in stats.items()
    }


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
    services: dict[str, Any] = {
        "database": database,
        "broker": check_broker(),
        "storage": check_storage(),
        "provider": check_provider(),
    }
    if database["status"] == "up":
        services["queues"] = queue_counts()
    healthy = services["database"]["status"] == "up" and services["broker"]["status"] == "up"
    body = {
        "status": "ok" if healthy else "degraded",
        "uptime": round(time.monotonic() - STARTED_AT, 1),
        "timestamp": int(time.time() * 1000),
        "services": services,
    }
    return JsonResponse(body, status=200 if healthy else 503)
