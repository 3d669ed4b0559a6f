"""Webhooks in the admin: endpoints (with their secret, rotation, enable/disable), the
callbackUrl secrets, and every delivery with a redeliver action.

Secrets are credentials: like API tokens, a staff user sees and manages the endpoints and
callback secret of their own user only; superusers see everyone's. Deliveries hold no
secret: whoever may view them sees all, and those who may change them redeliver.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from jobs.record_admin import ReadOnlyRecordAdmin
from jobs.webhooks import services, ssrf
from jobs.webhooks.models import CallbackSecret, EventType, WebhookDelivery, WebhookEndpoint
from snapasset.core.exceptions import ApplicationError


class OwnSecretsAdmin(admin.ModelAdmin):
    """Non-superusers see (and add) only their own."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = super().get_queryset(request).select_related("owner")
        if request.user.is_superuser:
            return rows
        return rows.filter(owner=request.user)

    @admin.display(description="secret")
    def secret_shown(self, obj: Any) -> str:
        if obj is None or not obj.pk:
            return "generated when saved"
        previous = ""
        if obj.previous_secret and obj.previous_secret_expires_at:
            previous = format_html(
                "<br>previous, still signing until {}: <code>{}</code>",
                obj.previous_secret_expires_at,
                obj.previous_secret,
            )
        return format_html("<code>{}</code>{}", obj.secret, previous)

    @admin.action(description="Rotate the secret (the old one signs too for 24 h)")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for holder in queryset:
            services.secret_rotate(holder)
        self.message_user(request, f"Rotated {queryset.count()} secret(s).", messages.SUCCESS)


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2048, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        choices=EventType.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None checked: every event.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("owner", "url", "description", "enabled", "event_types")

    def clean_url(self) -> str:
        url = str(self.cleaned_data["url"])
        try:
            ssrf.check_url(url)
        except ssrf.TargetError as exc:
            raise forms.ValidationError(str(exc)) from None
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(OwnSecretsAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "owner", "enabled", "events", "disabled_reason", "created_at")
    list_filter = ("enabled",)
    search_fields = ("url", "owner__username", "description")
    raw_id_fields = ("owner",)
    readonly_fields = ("secret_shown", "disabled_reason", "created_at", "updated_at")
    actions = ("rotate_secret", "enable_endpoints", "disable_endpoints")

    def get_fields(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> Any:
        fields = ["url", "description", "enabled", "event_types"]
        if request.user.is_superuser:
            fields.insert(0, "owner")
        return fields + list(self.readonly_fields)

    def save_model(
        self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool
    ) -> None:
        if not request.user.is_superuser:
            obj.owner = cast(Any, request.user)  # an admin page's user is signed in
        if obj.enabled:
            obj.disabled_reason = ""
        super().save_model(request, obj, form, change)

    @admin.display(description="events")
    def events(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.event_types) or "all"

    @admin.action(description="Enable selected endpoints", permissions=["change"])
    def enable_endpoints(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            services.endpoint_enable(endpoint=endpoint)
        self.message_user(request, f"Enabled {queryset.count()} endpoint(s).", messages.SUCCESS)

    @admin.action(description="Disable selected endpoints", permissions=["change"])
    def disable_endpoints(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        count = queryset.update(enabled=False)
        self.message_user(request, f"Disabled {count} endpoint(s).", messages.SUCCESS)


@admin.register(CallbackSecret)
class CallbackSecretAdmin(OwnSecretsAdmin):
    list_display = ("owner", "created_at", "updated_at")
    search_fields = ("owner__username",)
    fields = ("owner", "secret_shown", "created_at", "updated_at")
    readonly_fields = fields
    actions = ("rotate_secret",)

    # Made on first use (GET /api/webhooks/secret, or the first callbackUrl delivery).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyRecordAdmin):
    # Deliveries are made by events; the admin reads them and redelivers.
    list_display = (
        "webhook_id", "event_type", "status", "attempts", "last_status_code", "url",
        "job_link", "next_attempt_at", "created_at",
    )  # fmt: skip
    list_filter = ("status", "event_type", ("created_at", admin.DateFieldListFilter))
    search_fields = ("webhook_id", "url", "job__id")
    search_help_text = "webhook-id, URL or the job's id"
    list_select_related = ("job",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    actions = ("redeliver",)
    fields = (
        "id", "webhook_id", "job", "endpoint", "url", "event_type", "status", "attempts",
        "last_status_code", "last_error", "next_attempt_at", "enqueued_at", "locked_until",
        "succeeded_at", "created_at", "updated_at", "payload",
    )  # fmt: skip
    readonly_fields = fields

    @admin.action(description="Redeliver selected deliveries", permissions=["change"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        done = 0
        for delivery in queryset:
            try:
                services.delivery_redeliver(delivery=delivery)
            except ApplicationError as exc:
                self.message_user(request, f"{delivery.webhook_id}: {exc.message}", messages.ERROR)
            else:
                done += 1
        if done:
            self.message_user(request, f"Redelivering {done} deliveries.", messages.SUCCESS)
