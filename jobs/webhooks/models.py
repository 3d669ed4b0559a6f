"""Where webhooks go (endpoints, a job's callbackUrl), what signs them, and every delivery.

A delivery row is the truth about one event sent to one URL, as the Job row is about a job:
Celery messages only say "attempt delivery X now", and the dispatcher (beat) sends again the
ones a lost message left behind.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from jobs.models import Job
from jobs.outbox import OutboxRecord
from jobs.webhooks.signing import new_secret


class EventType(models.TextChoices):
    JOB_COMPLETED = "job.completed", "Job completed"
    JOB_FAILED = "job.failed", "Job failed"
    JOB_CANCELLED = "job.cancelled", "Job cancelled"


class SigningSecret(models.Model):
    """A Standard Webhooks secret (`whsec_` + base64). After a rotation the previous one
    keeps signing beside the new one until ``previous_secret_expires_at``, so a receiver
    can switch without missing a delivery."""

    secret = models.CharField(max_length=128, default=new_secret)
    previous_secret = models.CharField(max_length=128, blank=True, default="")
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class WebhookEndpoint(SigningSecret):
    """An endpoint a user registered (in the admin): every job of its owner that ends with
    one of its event types (all when none is chosen) is delivered here."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2048)
    description = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)
    # Empty: every event type.
    event_types = models.JSONField(default=list, blank=True)
    # Why it was switched off by SnapAsset (a 410 Gone answer), shown in the admin.
    disabled_reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ("owner", "url")
        indexes = [models.Index(fields=("owner", "enabled"), name="webhook_endpoint_owner_idx")]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class CallbackSecret(SigningSecret):
    """The secret that signs deliveries to the ``callbackUrl`` of a user's jobs: one per user
    (a callbackUrl changes from job to job), read with GET /api/webhooks/secret."""

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_callback_secret"
    )

    def __str__(self) -> str:
        return f"callback secret of {self.owner}"


class JobCallback(models.Model):
    """A job's ``callbackUrl``, stored at submission."""

    job = models.OneToOneField(
        Job, on_delete=models.CASCADE, primary_key=True, related_name="webhook_callback"
    )
    url = models.URLField(max_length=2048)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.url} for {self.job_id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class WebhookDelivery(OutboxRecord):
    """One event of one job sent to one URL, with every attempt's outcome (its attempts,
    last error and due time are the outbox's: jobs.outbox.OutboxRecord)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The `webhook-id` header: the same on every attempt of this event, so a receiver can
    # drop a delivery it has already processed.
    webhook_id = models.CharField(max_length=64, db_index=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="webhook_deliveries")
    # None: the job's own callbackUrl (signed with the owner's CallbackSecret). Deleting an
    # endpoint deletes its deliveries: without its secret they could not be signed.
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="deliveries",
    )
    url = models.URLField(max_length=2048)
    event_type = models.CharField(max_length=32, choices=EventType.choices)
    # The exact body, written once when the event happens, so every attempt sends (and
    # signs) the same bytes.
    payload = models.TextField()
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(
                fields=("next_attempt_at",),
                condition=Q(status="pending"),
                name="webhook_delivery_due_idx",
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=("webhook_id", "url"), name="webhook_delivery_once"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} of {self.job_id} to {self.url} ({self.status})"
