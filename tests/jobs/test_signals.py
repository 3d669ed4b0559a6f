"""jobs.signals: what other parts of the project hear about jobs, after the commit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobs.models import JobStatus
from jobs.services.control import job_cancel
from jobs.signals import job_finished
from tests.factories import JobFactory


@pytest.fixture
def heard() -> Iterator[list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        calls.append({"job_id": kwargs["job_id"], "status": kwargs["status"]})

    job_finished.connect(receiver, weak=False)
    yield calls
    job_finished.disconnect(receiver)


@pytest.mark.django_db
def test_job_finished_is_sent_once_the_final_status_commits(
    heard: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    job = JobFactory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job_cancel(job=job)
    assert heard == []  # not before the commit
    for callback in callbacks:
        callback()
    assert heard == [{"job_id": str(job.pk), "status": JobStatus.CANCELLED}]


@pytest.mark.django_db
def test_a_failing_receiver_does_not_undo_the_change(
    heard: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    def broken(**_: Any) -> None:
        raise RuntimeError("receiver down")

    job_finished.connect(broken, weak=False)
    try:
        job = JobFactory()
        with django_capture_on_commit_callbacks(execute=True):
            job_cancel(job=job)
    finally:
        job_finished.disconnect(broken)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert heard == [{"job_id": str(job.pk), "status": JobStatus.CANCELLED}]
