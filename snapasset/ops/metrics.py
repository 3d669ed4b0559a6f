"""Prometheus metrics: events counted where they happen, state read at scrape time.

Two kinds of figures, two mechanisms, each correct with many processes on many machines:

- Events (jobs submitted / completed / failed / cancelled, job and step durations, provider
  errors) happen in web processes and in worker pool processes: jobs/metrics.py holds those
  prometheus_client counters and histograms, in multiprocess mode. Every process writes its
  own mmap file under PROMETHEUS_MULTIPROC_DIR and a scrape here sums the files. One
  directory serves one machine (web and workers share it through a volume in
  docker-compose); a machine that runs only workers exposes its own with
  WORKER_METRICS_PORT. Prometheus scrapes every target and `sum()` adds machines up, the
  usual way for counters.
- State (jobs per kind and status, broker queue depths, live workers) is the same for the
  whole cluster, so it is read from the database, Redis and the worker heartbeats at scrape
  time by a collector: any web replica answers the same numbers (aggregate with `max()`),
  and nothing is lost when a process restarts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from django.conf import settings
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# --- Scraping -------------------------------------------------------------------------------


class ClusterStateCollector(Collector):
    """Jobs per kind and status, broker queue depths and live workers, read at scrape time."""

    def collect(self) -> Iterable[Metric]:
        from snapasset.ops import probes

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
                    jobs.add_metric([probes.QUEUE_KIND[queue], status], count)
            yield jobs
        try:
            depths = probes.broker_queue_depths()
            workers = probes.live_workers()
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
        if settings.SUPABASE_SYNC_TABLES:
            yield from supabase_sync_backlog()
        yield up


def supabase_sync_backlog() -> Iterable[Metric]:
    """The Supabase tables sync's events not yet in Supabase (docs/operations.md)."""
    from jobs.supabase_sync.selectors import sync_backlog

    try:
        backlog = sync_backlog()
    except Exception:
        return
    events = GaugeMetricFamily(
        "snapasset_supabase_sync_events",
        "Supabase sync events not in Supabase: pending (being retried) or failed (retries used up)",
        labels=["state"],
    )
    for state in ("pending", "failed"):
        events.add_metric([state], backlog[state])
    yield events
    yield GaugeMetricFamily(
        "snapasset_supabase_sync_oldest_pending_seconds",
        "Age of the oldest pending Supabase sync event (0: none)",
        value=backlog["oldest_pending_seconds"],
    )


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
