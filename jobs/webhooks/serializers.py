"""Output serializers of webhooks (the views render them; the schema publishes them)."""

from __future__ import annotations

from rest_framework import serializers

from jobs.serializers import IsoDateTimeField
from jobs.webhooks.models import DeliveryStatus, EventType


class WebhookDeliverySerializer(serializers.Serializer):
    """One event of a job sent to one URL."""

    id = serializers.UUIDField()
    webhookId = serializers.CharField(
        source="webhook_id", help_text="The `webhook-id` header: the same on every attempt."
    )
    url = serializers.CharField()
    endpointId = serializers.IntegerField(
        source="endpoint_id",
        allow_null=True,
        help_text="The registered endpoint; null for the job's own callbackUrl.",
    )
    eventType = serializers.ChoiceField(source="event_type", choices=EventType.choices)
    status = serializers.ChoiceField(choices=DeliveryStatus.choices)
    attempts = serializers.IntegerField(min_value=0)
    lastStatusCode = serializers.IntegerField(
        source="last_status_code", allow_null=True, help_text="HTTP status of the last answer."
    )
    lastError = serializers.CharField(
        source="last_error", allow_blank=True, help_text="Why the last attempt failed."
    )
    nextAttemptAt = IsoDateTimeField(
        source="next_attempt_at", allow_null=True, help_text="Null once the delivery ended."
    )
    succeededAt = IsoDateTimeField(source="succeeded_at", allow_null=True)
    createdAt = IsoDateTimeField(source="created_at")
    updatedAt = IsoDateTimeField(source="updated_at")


class JobDeliveriesSerializer(serializers.Serializer):
    """GET /api/jobs/{jobId}/deliveries."""

    jobId = serializers.UUIDField()
    deliveries = WebhookDeliverySerializer(many=True)


class CallbackSecretSerializer(serializers.Serializer):
    """GET and POST /api/webhooks/secret."""

    secret = serializers.CharField(
        help_text="`whsec_` + base64: signs the deliveries to your jobs' callbackUrl."
    )
    previousSecretExpiresAt = IsoDateTimeField(
        source="previous_secret_expires_at",
        allow_null=True,
        help_text="After a rotation the previous secret also signs until then.",
    )
