"""What the admin pages of recorded rows share: rows the system makes (outbox events,
webhook deliveries, failed jobs) are read and acted on in the admin, never added or deleted
there, and they link to their job's page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html


def job_admin_link(job_id: Any, text: Any) -> str:
    url = reverse("admin:jobs_job_change", args=[job_id])
    return format_html('<a href="{}">{}</a>', url, text)


class ReadOnlyRecordAdmin(admin.ModelAdmin):
    """No add, no delete; ``job_link`` shows the row's job (a ``job`` foreign key)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="job", ordering="job")
    def job_link(self, obj: Any) -> str:
        return job_admin_link(obj.job_id, str(obj.job_id)[:8])
