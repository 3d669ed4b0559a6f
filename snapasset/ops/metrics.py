"""Prometheus metrics: events counted where they happen, state read at scrape time.

Two kinds of figures, two mechanisms, each correct with many processes on many machines:

- Events (jobs submitted / completed / failed / cancelled, job and step durations, provider
  errors) happen in web processes and in worker pool processes. They are prometheus_client
  counters and histograms in multiprocess mode: every process writes its own mmap file under
  PROMETHEUS_MULTIPROC_DIR and a scrape sums the files. One directory serves one machine
  (web and workers share it through a volume in docker-compose); a machine that runs only
  workers exposes its own with WORKER_METRICS_PORT. Prometheus scrapes every target and
  `sum()` adds machines up, the usual way for counters.
- State (jobs per kind and status, broker queue depths, live workers) is the same for the
  whole cluster, so it is read from the database, Redis and the worker heartbeats at scrape
  time by a collector: any web replica answers the same numbers (aggregate with `max()`),
  and nothing is lost when a process restarts.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

JOBS_SUBMITTED = Counter("snapasset_jobs_submitted", "Jobs submitted", ["kind"])
JOBS_COMPLETED = Counter("snapasset_jobs_completed", "Jobs completed", ["kind"])
JOBS_FAILED = Counter("snapasset_jobs_failed", "Jobs failed for good", ["kind"])
JOBS_CANCELLED = Counter("snapasset_jobs_cancelled", "Jobs cancelled", ["kind"])
_FINISHED_COUNTERS = {
    "completed": JOBS_COMPLETED,
    "failed": JOBS_FAILED,
    "cancelled": JOBS_CANCELLED,
}
# From submission to the end, what a user waits: queueing, retries and the work.
JOB_DURATION = Histogram(
    "snapasset_job_duration_seconds",
    "Time from submission to a final state",
    ["kind", "status"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, float("inf")),
)
STEP_DURATION = Histogram(
    "snapasset_job_step_duration_seconds",
    "Time of one pipeline step (generate: the image model; render: resize+encode; store)",
    ["step"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, float("inf")),
)
PROVIDER_ERRORS = Counter(
    "snapasset_provider_errors",
    "Errors of the image provider by class",
    ["provider", "error_class"],
)


# --- Recording (called by services) ----------------------------------------------------------


def _after_commit(callback: Any) -> None:
    # Only what the database kept is counted; outside a transaction this runs at once.
    def safe() -> None:
        try:
            callback()
        except Exception:  # metrics never break a job
            logger.warning("could not record a metric", exc_info=True)

    transaction.on_commit(safe)


def record_job_submitted(*, kind: str) -> None:
    _after_commit(lambda: JOBS_SUBMITTED.labels(kind=kind).inc())


def record_job_finished(*, kind: str, status: str, created_at: Any, finished_at: Any) -> None:
    counter = _FINISHED_COUNTERS.get(str(status))
    if counter is None:
        return

    def record() -> None:
        counter.labels(kind=kind).inc()
        if created_at is not None and finished_at is not None:
            seconds = max(0.0, (finished_at - created_at).total_seconds())
            JOB_DURATION.labels(kind=kind, status=str(status)).observe(seconds)

    _after_commit(record)


@contextmanager
def observe_step(step: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        STEP_DURATION.labels(step=step).observe(time.perf_counter() - started)


def record_provider_error(*, provider: str, error: BaseException) -> None:
    PROVIDER_ERRORS.labels(provider=provider, error_class=error.__class__.__name__).inc()


# --- Scraping -------------------------------------------------------------------------------


class ClusterStateCollector(Collector):
    """Jobs per kind and status, broker queue depths and live workers, read at scrape time."""

    def collect(self) -> Iterable[Metric]:
        from snapasset import health

        up = GaugeMetricFamily(
            "snapasset_dependency_up", "Whether a dependency answered this scrape", labels=["part"]
        )
        try:
            from jobs.selectors import job_stats

            stats = job_stats(user=None)
        except Exception:
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            jobs = GaugeMetricFamily(
                "snapasset_jobs", "Job rows by kind and status", labels=["kind", "status"]
            )
            for queue, counts in stats.items():
                for status, count in counts.items():
                    jobs.add_metric([health.QUEUE_KIND[queue], status], count)
            yield jobs
        try:
            depths = health.broker_queue_depths()
            workers = health.live_workers()
        except Exception:
            up.add_metric(["broker"], 0)
        else:
            up.add_metric(["broker"], 1)
            depth = GaugeMetricFamily(
                "snapasset_queue_depth",
                "Messages waiting in the broker queue (all priorities)",
                labels=["queue"],
            )
            for queue, count in depths.items():
                depth.add_metric([queue], count)
            yield depth
            alive = GaugeMetricFamily(
                "snapasset_workers_alive",
                "Workers with a fresh heartbeat, by queue they consume",
                labels=["queue"],
            )
            for queue in settings.WORKER_QUEUES:
                alive.add_metric([queue], sum(1 for w in workers if queue in w["queues"]))
            yield alive
        yield up


class _ProcessLocalCollector(Collector):
    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def build_registry(*, cluster_state: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessLocalCollector())
    if cluster_state:
        registry.register(ClusterStateCollector())
    return registry


def render_metrics(*, cluster_state: bool = True) -> bytes:
    return generate_latest(build_registry(cluster_state=cluster_state))


def _authorized(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    if header:
        from rest_framework.exceptions import APIException
        from rest_framework.request import Request

        from snapasset.authentication import BearerTokenAuthentication, TokenAuthentication

        drf_request = Request(
            request, authenticators=[TokenAuthentication(), BearerTokenAuthentication()]
        )
        try:
            api_user = drf_request.user
        except APIException:
            return False
        return bool(api_user and api_user.is_authenticated and api_user.is_staff)
    return False


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: staff (session or API token) or `Authorization: Bearer $METRICS_TOKEN`."""
    if not _authorized(request):
        return JsonResponse(
            {"error": "Staff credentials or the metrics token are required"}, status=401
        )
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)
