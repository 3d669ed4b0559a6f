"""The operators' admin: jobs with their images and their Celery tasks, retry/cancel through
the API's services. Staff see and do what their model permissions allow (view jobs and
images; change jobs to run the retry/cancel actions); Celery task results keep
django-celery-results' admin too, and failed jobs have their list (snapasset/ops/admin.py)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from jobs import task_results
from jobs.models import GeneratedImage, Job
from jobs.services.control import job_cancel, job_retry
from snapasset.core.exceptions import ApplicationError

THUMBNAIL_HEIGHT = 72
SHORT_ID = re.compile(r"[0-9a-f]{8}")


def job_tasks_table(job: Job) -> str:
    """The job's Celery tasks as django-celery-results recorded them (the states Flower shows
    too): task id, state, retries, worker, times, runtime, error and traceback."""
    rows = list(task_results.job_task_results(job.pk)[:50])
    if not rows:
        return "No task recorded (yet, or its record expired: CELERY_RESULT_EXPIRES_SECONDS)."

    def cells(task: Any) -> tuple[Any, ...]:
        error = task_results.task_error(task)
        runtime = task_results.task_runtime(task)
        traceback = (
            format_html(
                "<details><summary>traceback</summary><pre>{}</pre></details>", task.traceback
            )
            if task.traceback
            else ""
        )
        return (
            reverse("admin:django_celery_results_taskresult_change", args=[task.pk]),
            task.task_id,
            task.status,
            task_results.task_retries(task),
            task.worker or "-",
            task.date_started or "-",
            task.date_done,
            f"{runtime.total_seconds():.2f} s" if runtime is not None else "-",
            f"{error.exc_type}: {error.message}" if error else "",
            traceback,
        )

    body = format_html_join(
        "",
        '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (cells(task) for task in rows),
    )
    return format_html(
        "<table><thead><tr><th>task</th><th>state</th><th>retries</th><th>worker</th>"
        "<th>started</th><th>done</th><th>runtime</th><th>error</th><th></th></tr></thead>"
        "<tbody>{}</tbody></table>",
        body,
    )


def run_job_action(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    verb: str,
    service: Any,
) -> None:
    """An admin action that calls a job service (retry, cancel) for each selected job and
    reports each job it could not act on, then how many it did."""
    done = 0
    for job in queryset:
        try:
            service(job=job)
        except ApplicationError as exc:
            model_admin.message_user(request, f"Job {job.pk}: {exc.message}", messages.ERROR)
        else:
            done += 1
    if done:
        model_admin.message_user(
            request, f"{verb} {done} job{'s' if done != 1 else ''}.", messages.SUCCESS
        )


class GeneratedImageInline(admin.TabularInline):
    model = GeneratedImage
    extra = 0
    can_delete = False
    fields = ("thumbnail", "platform_id", "size", "file_size", "format", "link")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="image")
    def thumbnail(self, image: GeneratedImage) -> str:
        if not image.url:
            return "-"
        return format_html(
            '<a href="{0}" target="_blank" rel="noopener"><img src="{0}" alt="{1}" '
            'style="height:{2}px;max-width:180px;object-fit:contain;background:#eee"></a>',
            image.url,
            image.platform_id,
            THUMBNAIL_HEIGHT,
        )

    @admin.display(description="size")
    def size(self, image: GeneratedImage) -> str:
        return f"{image.width} x {image.height}"

    @admin.display(description="file")
    def link(self, image: GeneratedImage) -> str:
        if not image.url:
            return image.storage_path
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">{}</a>', image.url, image.storage_path
        )


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "short_id", "status", "owner", "kind", "platform_list", "progress_bar",
        "attempts_made", "age", "created_at",
    )  # fmt: skip
    list_filter = ("status", "kind", ("created_at", admin.DateFieldListFilter))
    search_fields = ("prompt", "owner__username")
    search_help_text = "Job id, generation id (exact), words of the prompt or an owner's username"
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    list_per_page = 50
    ordering = ("-created_at",)
    actions = ("retry_jobs", "cancel_jobs")
    inlines = (GeneratedImageInline,)
    readonly_fields = (
        "id", "kind", "owner", "status", "progress", "attempts_made", "failed_reason",
        "generation_id", "prompt", "platforms", "image_type", "output_format", "priority",
        "source_path", "params", "result", "cancel_requested", "idempotency_key",
        "enqueued_at", "claim_token", "heartbeat_at", "stalled_count", "retry_at",
        "delay_reason", "reuse", "created_at", "updated_at", "processed_at", "finished_at",
        "tasks",
    )  # fmt: skip
    fieldsets = (
        (None, {
            "fields": (
                "id", "kind", "owner", "status", "progress", "attempts_made", "failed_reason",
            ),
        }),
        ("Request", {
            "fields": (
                "generation_id", "prompt", "platforms", "image_type", "output_format", "priority",
                "reuse",
            ),
        }),
        ("Outcome", {"fields": ("result", "params", "source_path")}),
        ("Delivery", {
            "classes": ("collapse",),
            "fields": (
                "cancel_requested", "idempotency_key", "enqueued_at", "claim_token",
                "heartbeat_at", "stalled_count", "retry_at", "delay_reason",
            ),
        }),
        ("Times", {"fields": ("created_at", "updated_at", "processed_at", "finished_at")}),
        ("Celery tasks", {"fields": ("tasks",)}),
    )  # fmt: skip

    # Jobs are created through the API and deleted by the cleanup; the admin reads them
    # and runs the two actions (for those who may change jobs), nothing else. Its Save
    # writes only the fields the form changed (none: every field is read-only), never the
    # whole row, which would revert a worker's concurrent write.
    def save_model(self, request: HttpRequest, obj: Job, form: Any, change: bool) -> None:
        if change and form.changed_data:
            obj.save(update_fields=form.changed_data)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        term = search_term.strip().lower()
        try:
            as_uuid = uuid.UUID(term)
        except ValueError:
            pass
        else:
            # An id: the job itself or its generation, by index, not a text scan.
            return queryset.filter(pk=as_uuid) | queryset.filter(generation_id=as_uuid), False
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if SHORT_ID.fullmatch(term):
            # The 8-character id the list shows: a prefix of the job id.
            by_prefix = queryset.annotate(id_text=Cast("id", CharField())).filter(
                id_text__startswith=term
            )
            results = results | queryset.filter(pk__in=by_prefix.values("pk"))
        return results, may_have_duplicates

    @admin.display(description="tasks")
    def tasks(self, job: Job) -> str:
        return job_tasks_table(job)

    @admin.display(description="id", ordering="id")
    def short_id(self, job: Job) -> str:
        return str(job.id)[:8]

    @admin.display(description="platforms")
    def platform_list(self, job: Job) -> str:
        return ", ".join(job.platforms) if job.platforms else "-"

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, job: Job) -> str:
        return format_html(
            '<progress value="{}" max="100" style="width:80px"></progress> {}%',
            job.progress,
            job.progress,
        )

    @admin.display(description="age", ordering="created_at")
    def age(self, job: Job) -> str:
        return timesince(job.created_at, timezone.now(), depth=1)

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["change"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        run_job_action(self, request, queryset, verb="Retried", service=job_retry)

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        run_job_action(self, request, queryset, verb="Cancelled", service=job_cancel)
