"""The dead-letter list: jobs that failed for good, with the error and traceback their tasks
recorded, and the retry action (the API's retry service). Visible to staff with the "view
failed job" permission; retrying needs "change failed job"."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs import task_results
from jobs.admin import job_tasks_table, run_job_action
from jobs.record_admin import ReadOnlyRecordAdmin, job_admin_link
from jobs.services.control import job_retry
from snapasset.ops.models import FailedJob


def _last_error(job: FailedJob) -> tuple[Any, str]:
    """The newest task row that recorded an exception, and that exception's last line."""
    for task in task_results.job_task_results(job.pk)[:10]:
        error = task_results.task_error(task)
        if error is not None or task.traceback:
            text = f"{error.exc_type}: {error.message}" if error else ""
            return task, text
    return None, ""


@admin.register(FailedJob)
class FailedJobAdmin(ReadOnlyRecordAdmin):
    list_display = (
        "job", "owner", "kind", "failed_reason", "attempts_made", "task_error", "finished_at",
    )  # fmt: skip
    list_filter = ("kind", ("finished_at", admin.DateFieldListFilter))
    search_fields = ("failed_reason", "owner__username")
    list_select_related = ("owner",)
    list_per_page = 50
    ordering = ("-finished_at",)
    actions = ("retry_jobs",)
    fields = (
        "job", "owner", "kind", "failed_reason", "attempts_made", "stalled_count", "created_at",
        "finished_at", "tasks",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="job", ordering="id")
    def job(self, job: FailedJob) -> str:
        return job_admin_link(job.pk, job.pk)

    @admin.display(description="task error (traceback on the job's page)")
    def task_error(self, job: FailedJob) -> str:
        return _last_error(job)[1] or "-"

    @admin.display(description="tasks")
    def tasks(self, job: FailedJob) -> str:
        return job_tasks_table(job)

    @admin.action(description="Retry selected jobs", permissions=["change"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[FailedJob]) -> None:
        run_job_action(self, request, queryset, verb="Retried", service=job_retry)
