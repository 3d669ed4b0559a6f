"""The ledger in the admin (read only, with totals per user and day over the current filter)
and the per-user quota overrides (editable by those who may change them)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from jobs.spend.models import CallOutcome, ProviderCall, UserQuota
from jobs.spend.quotas import quota_status

# Rows of the per-user-and-day summary shown above the list.
SUMMARY_ROWS = 31


def spend_summary(queryset: QuerySet[ProviderCall]) -> dict[str, Any]:
    """Totals of the filtered calls: overall, and per user and day (newest days first)."""
    paid = ~Q(outcome=CallOutcome.REUSED)
    total = queryset.aggregate(
        calls=Count("id", filter=paid),
        reused=Count("id", filter=~paid),
        cost=Sum("estimated_cost_usd"),
    )
    rows = (
        queryset.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values("day", "user__username")
        .annotate(
            calls=Count("id", filter=paid),
            reused=Count("id", filter=~paid),
            cost=Sum("estimated_cost_usd"),
        )
        .order_by("-day", "-cost", "user__username")[:SUMMARY_ROWS]
    )
    return {"total": total, "rows": list(rows), "limit": SUMMARY_ROWS}


@admin.register(ProviderCall)
class ProviderCallAdmin(admin.ModelAdmin):
    list_display = (
        "created_at", "user", "model", "size", "quality", "outcome", "estimated_cost_usd",
        "job_link", "request_id",
    )  # fmt: skip
    list_filter = ("outcome", "model", "provider", ("created_at", admin.DateFieldListFilter))
    search_fields = ("user__username", "request_id")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    list_per_page = 100
    ordering = ("-created_at",)
    readonly_fields = (
        "job", "user", "call_number", "provider", "model", "size", "quality", "outcome",
        "request_id", "error", "estimated_cost_usd", "created_at", "finished_at",
    )  # fmt: skip

    # The ledger is written by the pipeline only: read it, never edit it.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="job", ordering="job")
    def job_link(self, call: ProviderCall) -> str:
        return str(call.job_id)[:8] if call.job_id else "-"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse) and response.context_data is not None:
            changelist = response.context_data.get("cl")
            if changelist is not None:
                response.context_data["spend_summary"] = spend_summary(changelist.queryset)
        return response


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = ("user", "daily_generations", "used_today", "note", "updated_at")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    list_select_related = ("user",)

    @admin.display(description="paid today (+ pending)")
    def used_today(self, quota: UserQuota) -> str:
        status = quota_status(quota.user)
        return f"{status.used_today} (+{status.pending})"
