"""The job's state machine: one function moves a job's status, by the table docs/guarantees.md
shows, writing only what changes and telling the listeners after the commit."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from jobs.models import Job, JobStatus
from jobs.services.transitions import (
    LEGAL_MOVES,
    IllegalTransition,
    StaleTransition,
    job_transition,
)
from jobs.signals import job_finished, job_status_changed
from snapasset.core.exceptions import JobCancelled, LeaseLost
from tests.conftest import ROOT
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


def documented_moves() -> set[tuple[str, str]]:
    """The rows of the state machine's table in docs/guarantees.md."""
    text = (ROOT / "docs" / "guarantees.md").read_text()
    section = text.split("## The state machine", 1)[1].split("\n## ", 1)[0]
    return {
        (m.group(1), m.group(2))
        for m in re.finditer(r"^\| `(\w+)` \| `(\w+)` \|", section, flags=re.MULTILINE)
    }


def test_the_documented_state_machine_is_the_one_in_the_code() -> None:
    assert documented_moves() == {(str(a), str(b)) for a, b in LEGAL_MOVES}


def test_no_code_but_the_transition_function_writes_a_jobs_status() -> None:
    """Assignments of ``.status``, ``status=`` in an update(), and full-row saves of a Job."""
    offenders = []
    for folder in ("jobs", "cleanup", "snapasset"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "transitions.py" or "migrations" in path.parts:
                continue
            source = path.read_text()
            for pattern in (
                r"\bjob\.status\s*=[^=]",
                r"\.update\([^)]*\bstatus=",
                r"\bjob\.save\(\s*\)",
            ):
                for match in re.finditer(pattern, source):
                    line = source[: match.start()].count("\n") + 1
                    offenders.append(f"{Path(path).relative_to(ROOT)}:{line}")
    assert not offenders, f"status written outside jobs/services/transitions.py: {offenders}"


def test_a_move_the_table_does_not_have_is_refused(alice: Any) -> None:
    job = JobFactory(owner=alice, status=JobStatus.COMPLETED)
    with pytest.raises(IllegalTransition):
        job_transition(job, JobStatus.ACTIVE, claim_token=uuid.uuid4())
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED


def test_a_move_writes_only_the_fields_it_changes(alice: Any) -> None:
    job = JobFactory(owner=alice, status=JobStatus.WAITING, progress=0)
    with CaptureQueriesContext(connection) as queries:
        job_transition(job, JobStatus.CANCELLED, cancel_requested=True)
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assignments = updates[0].split(" WHERE ")[0]
    assert set(re.findall(r'"(\w+)" =', assignments)) == {
        "status", "updated_at", "finished_at", "cancel_requested",
    }  # fmt: skip


def test_a_move_applies_only_while_the_row_has_the_status_it_was_read_with(alice: Any) -> None:
    job = JobFactory(owner=alice, status=JobStatus.WAITING)
    stale_copy = Job.objects.get(pk=job.pk)
    job_transition(job, JobStatus.CANCELLED, cancel_requested=True)
    # A failed move aborts its transaction (here the savepoint the test opens).
    with pytest.raises(StaleTransition), transaction.atomic():
        job_transition(stale_copy, JobStatus.ACTIVE, claim_token=uuid.uuid4())
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_a_fenced_move_of_an_attempt_that_lost_the_job_raises(alice: Any) -> None:
    token = uuid.uuid4()
    job = JobFactory(owner=alice, status=JobStatus.ACTIVE, claim_token=token)
    Job.objects.filter(pk=job.pk).update(claim_token=uuid.uuid4())  # another attempt took over
    with pytest.raises(LeaseLost), transaction.atomic():
        job_transition(job, JobStatus.COMPLETED, token=token, progress=100)
    cancelled = JobFactory(owner=alice, status=JobStatus.ACTIVE, claim_token=token)
    Job.objects.filter(pk=cancelled.pk).update(cancel_requested=True, status=JobStatus.CANCELLED)
    with pytest.raises(JobCancelled), transaction.atomic():
        job_transition(cancelled, JobStatus.COMPLETED, token=token, progress=100)


def test_every_move_is_told_after_the_commit_with_the_previous_status(
    alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    changed: list[dict[str, Any]] = []
    finished: list[dict[str, Any]] = []

    def on_changed(**kwargs: Any) -> None:
        changed.append(kwargs)

    def on_finished(**kwargs: Any) -> None:
        finished.append(kwargs)

    job_status_changed.connect(on_changed)
    job_finished.connect(on_finished)
    try:
        job = JobFactory(owner=alice, status=JobStatus.WAITING)
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            job_transition(job, JobStatus.CANCELLED, cancel_requested=True)
        assert not changed and not finished  # nothing before the commit
        for callback in callbacks:
            callback()
    finally:
        job_status_changed.disconnect(on_changed)
        job_finished.disconnect(on_finished)
    assert [(c["status"], c["previous_status"]) for c in changed] == [("cancelled", "waiting")]
    assert [c["status"] for c in finished] == ["cancelled"]
