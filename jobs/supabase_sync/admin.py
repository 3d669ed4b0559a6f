"""The Supabase sync in the admin: every outbox event (its job, the status it writes, attempts,
last error, when the next attempt is due) with a retry action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from jobs.record_admin import ReadOnlyRecordAdmin
from jobs.supabase_sync import services
from jobs.supabase_sync.models import SyncEvent


@admin.register(SyncEvent)
class SyncEventAdmin(ReadOnlyRecordAdmin):
    # Events are made by status changes; the admin reads them and retries.
    list_display = (
        "id", "job_link", "status", "state", "attempts", "short_error", "next_attempt_at",
        "synced_at", "created_at",
    )  # fmt: skip
    list_filter = ("state", "status", ("created_at", admin.DateFieldListFilter))
    search_fields = ("job__id", "job__generation_id")
    search_help_text = "the job's id or generationId"
    list_select_related = ("job",)
    date_hierarchy = "created_at"
    ordering = ("-id",)
    actions = ("retry_now",)
    fields = (
        "id", "job", "job_status", "status", "error_message", "version", "state", "attempts",
        "last_error", "next_attempt_at", "enqueued_at", "locked_until", "synced_at",
        "created_at", "updated_at",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="last error")
    def short_error(self, event: SyncEvent) -> str:
        return event.last_error[:120]

    @admin.action(description="Push selected events to Supabase again now", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[SyncEvent]) -> None:
        for event in queryset:
            services.event_retry(event=event)
        self.message_user(request, f"Pushing {queryset.count()} event(s) again.", messages.SUCCESS)
