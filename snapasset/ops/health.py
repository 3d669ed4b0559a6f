"""GET /health: real checks of the parts SnapAsset needs; 503 when the database or broker is down.

Anyone may ask, so the public answer is cheap and says little: the database and the broker,
up or down (``SELECT 1`` and a ping), computed at most once per PUBLIC_CACHE_SECONDS per
process however often it is asked, so a flood of probes costs no more than one. Staff
(session, API key or JWT) get the detailed answer, computed on every request: each check
with its error, storage, the provider, live workers, job counts and broker queue depths.

Workers are reported (from the heartbeats they write, see snapasset/ops/heartbeat.py) but their
absence does not make the answer 503: /health is what a load balancer asks about the web
process, and taking the API down because no worker runs would only hide the jobs' state.
``down`` lists every part that is not up (in the public answer: of the two it shows).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request

from snapasset.ops.probes import (
    broker_queue_depths,
    check_broker,
    check_database,
    check_provider,
    check_storage,
    check_workers,
    queue_counts,
)

STARTED_AT = time.monotonic()
# The public answer is reused this long: with the database or broker gone, /health turns 503
# within this plus one check (the broker probe's timeout at worst).
PUBLIC_CACHE_SECONDS = 1.0


# --- The answer's shape: rendered by these serializers, published by the schema -------------

SERVICE_STATUSES = ["up", "down", "partial", "misconfigured", "unknown"]


class ServiceSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=SERVICE_STATUSES)
    error = serializers.CharField(required=False, help_text="Why it is not up (staff).")


class DatabaseServiceSerializer(ServiceSerializer):
    vendor = serializers.CharField(required=False, help_text="postgresql or sqlite (staff).")


class BrokerServiceSerializer(ServiceSerializer):
    embedded = serializers.BooleanField(
        required=False, help_text="The embedded Redis of `make run` (staff)."
    )


class StorageServiceSerializer(ServiceSerializer):
    backend = serializers.CharField(required=False)


class ProviderServiceSerializer(ServiceSerializer):
    name = serializers.ChoiceField(choices=["local", "openai"], required=False)


class LiveWorkerSerializer(serializers.Serializer):
    name = serializers.CharField(allow_null=True, help_text="The worker's node name.")
    queues = serializers.ListField(child=serializers.CharField())
    lastSeen = serializers.FloatField(allow_null=True, help_text="Its last heartbeat (epoch s).")


class WorkersServiceSerializer(ServiceSerializer):
    count = serializers.IntegerField(required=False)
    queues = serializers.DictField(
        child=serializers.IntegerField(), required=False, help_text="Live workers per queue."
    )
    alive = LiveWorkerSerializer(many=True, required=False)


class QueueCountsSerializer(serializers.Serializer):
    waiting = serializers.IntegerField(help_text="Waiting and delayed jobs.")
    active = serializers.IntegerField()
    brokerDepth = serializers.IntegerField(
        required=False, help_text="Messages in the broker at every priority."
    )


class QueuesSerializer(serializers.Serializer):
    imageGeneration = QueueCountsSerializer()
    fileCleanup = QueueCountsSerializer()


class HealthServicesSerializer(serializers.Serializer):
    """Public: database and broker, `status` only. Staff: every part, with its details."""

    database = DatabaseServiceSerializer()
    broker = BrokerServiceSerializer()
    storage = StorageServiceSerializer(required=False)
    provider = ProviderServiceSerializer(required=False)
    workers = WorkersServiceSerializer(required=False)
    queues = QueuesSerializer(required=False)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    uptime = serializers.FloatField(help_text="Seconds since the web process started.")
    timestamp = serializers.IntegerField(help_text="ms since the epoch.")
    services = HealthServicesSerializer()
    down = serializers.ListField(
        child=serializers.ChoiceField(
            choices=["database", "broker", "storage", "provider", "workers"]
        ),
        help_text="The parts (of those shown) that are not up.",
    )


def _answer(services: dict[str, Any]) -> tuple[int, dict[str, Any]]:
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
    return (200 if healthy else 503), dict(HealthSerializer(body).data)


def detailed_health() -> tuple[int, dict[str, Any]]:
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
    return _answer(services)


class PublicHealth:
    """The public answer, computed by one request at a time and reused for a second."""

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._answer: tuple[int, dict[str, Any]] | None = None
        self._expires = 0.0

    def get(self) -> tuple[int, dict[str, Any]]:
        with self._lock:  # requests arriving meanwhile wait for this check, not run their own
            if self._answer is None or time.monotonic() >= self._expires:
                services = {
                    "database": {"status": check_database()["status"]},
                    "broker": {"status": check_broker()["status"]},
                }
                self._answer = _answer(services)
                self._expires = time.monotonic() + self.max_age
            return self._answer

    def clear(self) -> None:
        with self._lock:
            self._answer = None


public_health = PublicHealth(PUBLIC_CACHE_SECONDS)


@extend_schema(
    operation_id="health",
    summary="Liveness and dependencies (public; details for staff)",
    description="Anyone: `{status, uptime, timestamp, services: {database, broker}, down}` "
    "with each service's `status` only, reused for up to a second. Staff credentials: every "
    "check (storage, provider, workers, queues) with its details, computed per request.",
    responses={200: HealthSerializer, 503: HealthSerializer},
)
@api_view(["GET"])
@permission_classes([AllowAny])
def health(request: Request) -> JsonResponse:
    user = request.user
    status, body = detailed_health() if user.is_active and user.is_staff else public_health.get()
    return JsonResponse(body, status=status)
