"""/metrics: Prometheus text from prometheus_client, protected, counters moving after real jobs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.services import generation
from snapasset.core.exceptions import TransientError
from snapasset.ops.metrics import render_metrics
from tests.conftest import api_key_for, free_port, make_user, wait_until
from tests.factories import JobFactory

METRICS_TOKEN = "metrics-token-for-tests-1234"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(all_samples: dict[Any, float], name: str, **labels: str) -> float:
    return all_samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_staff_or_the_metrics_token(
    client: Any, alice_client: Any, staff_client: Any, settings: Any
) -> None:
    settings.METRICS_TOKEN = METRICS_TOKEN
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert alice_client.get("/metrics").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert staff_client.get("/metrics").status_code == 200


def test_metrics_show_jobs_by_kind_and_status_and_queue_depths(
    staff_client: Any, alice: Any
) -> None:
    JobFactory(owner=alice, status="failed")
    text = staff_client.get("/metrics").content.decode()
    found = samples(text)
    assert value(found, "snapasset_jobs", kind="image-generation", status="failed") == 1
    assert ("snapasset_queue_depth", (("queue", "images"),)) in found
    assert value(found, "snapasset_dependency_up", part="database") == 1
    assert value(found, "snapasset_dependency_up", part="broker") == 1


class FailingProvider:
    name = "flaky"

    def generate_image(self, *, prompt: str, image_type: str) -> bytes:
        raise TransientError("upstream 503")


def test_provider_errors_are_counted_by_class(alice: Any, monkeypatch: Any) -> None:
    before = value(
        samples(render_metrics(cluster_state=False).decode()),
        "snapasset_provider_errors_total",
        provider="flaky",
        error_class="TransientError",
    )
    job = JobFactory(owner=alice)
    monkeypatch.setattr(generation, "get_provider", lambda: FailingProvider())
    assert generation.job_run_generation(job_id=str(job.id)) is not None  # a retry is scheduled
    after = value(
        samples(render_metrics(cluster_state=False).decode()),
        "snapasset_provider_errors_total",
        provider="flaky",
        error_class="TransientError",
    )
    assert after == before + 1


@pytest.mark.e2e
def test_job_counters_and_durations_move_after_a_job_runs_on_a_worker(
    start_worker: Any, start_web: Any
) -> None:
    token = api_key_for(make_user("alice"))
    start_worker(concurrency=1)
    base = start_web(env={"METRICS_TOKEN": METRICS_TOKEN})
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    kind = "image-generation"

    def scrape() -> dict[Any, float]:
        response = httpx.get(f"{base}/metrics", headers=auth, timeout=20)
        assert response.status_code == 200
        return samples(response.text)

    before = scrape()
    response = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "Counting foxes", "platforms": ["twitter-post", "instagram-post"]},
        headers={"Authorization": f"Token {token}"}, timeout=10,
    )  # fmt: skip
    assert response.status_code == 202
    completed = "snapasset_jobs_completed_total"

    def scrape_once_completed() -> dict[Any, float] | None:
        s = scrape()
        return s if value(s, completed, kind=kind) > value(before, completed, kind=kind) else None

    after = wait_until(
        scrape_once_completed, timeout=90, interval=0.5, what="the completed counter"
    )
    assert (
        value(after, "snapasset_jobs_submitted_total", kind=kind)
        == value(before, "snapasset_jobs_submitted_total", kind=kind) + 1
    )
    assert (
        value(after, "snapasset_jobs_completed_total", kind=kind)
        == value(before, "snapasset_jobs_completed_total", kind=kind) + 1
    )
    assert (
        value(after, "snapasset_job_duration_seconds_count", kind=kind, status="completed")
        == value(before, "snapasset_job_duration_seconds_count", kind=kind, status="completed") + 1
    )
    assert (
        value(after, "snapasset_job_step_duration_seconds_count", step="generate")
        == value(before, "snapasset_job_step_duration_seconds_count", step="generate") + 1
    )
    assert (
        value(after, "snapasset_job_step_duration_seconds_count", step="render")
        == value(before, "snapasset_job_step_duration_seconds_count", step="render") + 2
    )
    assert value(after, "snapasset_jobs", kind=kind, status="completed") == 1
    assert value(after, "snapasset_workers_alive", queue="images") == 1

    # A cancel in the web process reaches the same counters.
    other = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "never mind"},
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    ).json()["jobId"]
    cancelled = httpx.delete(
        f"{base}/api/jobs/{other}", headers={"Authorization": f"Token {token}"}, timeout=10
    )
    if cancelled.status_code == 200:  # the worker may have finished it first
        assert (
            value(scrape(), "snapasset_jobs_cancelled_total", kind=kind)
            == value(before, "snapasset_jobs_cancelled_total", kind=kind) + 1
        )


@pytest.mark.e2e
def test_a_worker_serves_its_machines_metrics_on_an_internal_port(start_worker: Any) -> None:
    port = free_port()
    start_worker(concurrency=1, env={"WORKER_METRICS_PORT": str(port)})
    response = wait_until(
        lambda: _get_or_none(f"http://127.0.0.1:{port}/metrics"), timeout=30, what="worker metrics"
    )
    assert response.status_code == 200
    found = samples(response.text)
    assert value(found, "snapasset_workers_alive", queue="images") >= 1
    assert value(found, "snapasset_dependency_up", part="database") == 1


def _get_or_none(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


@pytest.mark.e2e
def test_the_workers_counters_reach_metrics_with_make_runs_default_directory(
    start_worker: Any, start_web: Any, tmp_path: Any
) -> None:
    """As under `make run`: nobody sets PROMETHEUS_MULTIPROC_DIR, each process derives it from
    SNAPASSET_VAR_DIR. The worker's counters (celery imports prometheus_client before our
    code runs) must still land in the files the web process sums."""
    var_dir = tmp_path / "var"
    env = {"SNAPASSET_VAR_DIR": str(var_dir), "PROMETHEUS_MULTIPROC_DIR": None}
    token = api_key_for(make_user("alice"))
    start_worker(concurrency=1, env=env)
    base = start_web(env={**env, "METRICS_TOKEN": METRICS_TOKEN})
    response = httpx.post(
        f"{base}/api/jobs/generate",
        json={"prompt": "A fox counted once", "platforms": ["twitter-post"]},
        headers={"Authorization": f"Token {token}"}, timeout=10,
    )  # fmt: skip
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    wait_until(
        lambda: (
            httpx.get(
                f"{base}/api/jobs/{job_id}", headers={"Authorization": f"Token {token}"}, timeout=10
            ).json()["status"]
            == "completed"
        ),
        timeout=90,
        interval=0.3,
        what="the job to complete",
    )
    kind = "image-generation"

    def completed_once() -> dict[Any, float] | None:
        found = samples(
            httpx.get(
                f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=20
            ).text
        )
        return found if value(found, "snapasset_jobs_completed_total", kind=kind) else None

    # The count is recorded after the worker's commit, a moment after the API says completed.
    found = wait_until(completed_once, timeout=20, interval=0.3, what="the completed counter")
    assert value(found, "snapasset_jobs_completed_total", kind=kind) == 1
    assert value(found, "snapasset_jobs_submitted_total", kind=kind) == 1
    assert value(found, "snapasset_job_duration_seconds_count", kind=kind, status="completed") == 1
    assert value(found, "snapasset_job_step_duration_seconds_count", step="generate") == 1
    # The worker wrote its own file there (not only the web process).
    assert len(list((var_dir / "metrics").glob("*.db"))) >= 2


@pytest.mark.e2e
def test_http_requests_are_counted_by_route_and_status_across_web_processes(
    start_web: Any, tmp_path: Any
) -> None:
    """django-prometheus's middleware, in multiprocess mode: two uvicorns of one machine share
    the directory, and either one's /metrics sums both."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "METRICS_TOKEN": METRICS_TOKEN}
    first, second = start_web(env=env), start_web(env=env)
    token = api_key_for(make_user("alice"))
    for base in (first, second):
        for _ in range(3):
            response = httpx.get(
                f"{base}/api/jobs", headers={"Authorization": f"Token {token}"}, timeout=10
            )
            assert response.status_code == 200
        assert httpx.get(f"{base}/api/jobs", timeout=10).status_code == 401
        missing = httpx.get(
            f"{base}/api/jobs/{'0' * 8}-0000-4000-8000-{'0' * 12}",
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        assert missing.status_code == 404
    found = samples(
        httpx.get(f"{first}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    )
    by_status = "django_http_responses_total_by_status_view_method_total"
    assert value(found, by_status, method="GET", status="200", view="job-list") == 6
    assert value(found, by_status, method="GET", status="401", view="job-list") == 2
    # By the route's name, never the raw path (one series for every job id).
    assert value(found, by_status, method="GET", status="404", view="job-detail") == 2
    latency = "django_http_requests_latency_seconds_by_view_method_count"
    assert value(found, latency, method="GET", view="job-list") == 8
    assert not [key for key in found if "0000-4000-8000" in str(key)]
