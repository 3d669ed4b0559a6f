"""docs/grafana-dashboard.json queries only metrics that SnapAsset exports (a renamed metric
fails here, not silently on an operator's screen), and covers each kind the docs promise."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import REGISTRY

from snapasset.ops.metrics import ClusterStateCollector
from tests.conftest import ROOT

DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}  # fmt: skip


def exported_series(client: Any) -> set[str]:
    """Every series name /metrics can show: the event metrics registered by the project and
    django-prometheus (made when the middleware first runs), and the scrape-time state."""
    client.get("/health")
    families = [*REGISTRY.collect(), *ClusterStateCollector().collect()]
    return {
        family.name + suffix for family in families for suffix in SUFFIXES.get(family.type, [""])
    }


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression: identifiers that are not functions,
    keywords, label names (in {...} or by (...)) or durations."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr))
    return {n for n in names if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d.*", n)}


def queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_the_dashboard_queries_only_metrics_we_export(client: Any, db: None) -> None:
    exported = exported_series(client)
    used = set().union(*(metric_names(expr) for expr in queries()))
    assert used, "no query found"
    assert not used - exported, (
        f"the dashboard queries what /metrics never shows: {used - exported}"
    )


def test_the_dashboard_shows_http_jobs_durations_queues_and_provider_errors() -> None:
    used = set().union(*(metric_names(expr) for expr in queries()))
    for needed in (
        "django_http_responses_total_by_status_view_method_total",  # rate, errors by route
        "django_http_requests_latency_seconds_by_view_method_bucket",  # latency by route
        "snapasset_jobs_submitted_total", "snapasset_jobs_completed_total",
        "snapasset_jobs_failed_total", "snapasset_job_duration_seconds_bucket",
        "snapasset_job_step_duration_seconds_bucket", "snapasset_queue_depth",
        "snapasset_provider_errors_total", "snapasset_workers_alive",
    ):  # fmt: skip
        assert needed in used, needed


def test_the_name_finder_reads_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, view) (rate(a_bucket{status=~"5.."}[5m]))) / b'
    ) == {"a_bucket", "b"}
