"""The Job row is the source of truth for every job; Celery messages only wake workers up."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class JobKind(models.TextChoices):
    IMAGE_GENERATION = "image-generation", "Image generation"
    FILE_CLEANUP = "file-cleanup", "File cleanup"


# The Celery task that runs each kind of job; its one argument is the job id. Named here,
# once: cleanup/tasks.py declares its task under this name, and jobs sends it by name (jobs
# never imports cleanup).
TASK_FOR_KIND = {
    JobKind.IMAGE_GENERATION: "jobs.generate_images",
    JobKind.FILE_CLEANUP: "cleanup.run_cleanup",
}


class JobStatus(models.TextChoices):
    WAITING = "waiting", "Waiting"
    ACTIVE = "active", "Active"
    DELAYED = "delayed", "Delayed"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
PENDING_STATUSES = frozenset({JobStatus.WAITING, JobStatus.ACTIVE, JobStatus.DELAYED})


class DelayReason(models.TextChoices):
    RETRY = "retry", "Retry after an error"
    PROVIDER_SLOT = "provider-slot", "Waiting for a provider slot"


class ImageType(models.TextChoices):
    VIVID = "vivid", "Vivid"
    NATURAL = "natural", "Natural"


class ImageFormat(models.TextChoices):
    PNG = "png", "PNG"
    WEBP = "webp", "WebP"
    JPEG = "jpeg", "JPEG"


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # None for jobs the system starts itself (the scheduled cleanup).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="jobs",
        null=True,
        blank=True,
    )
    kind = models.CharField(max_length=32, choices=JobKind.choices)
    status = models.CharField(
        max_length=16, choices=JobStatus.choices, default=JobStatus.WAITING, db_index=True
    )
    priority = models.SmallIntegerField(default=0)
    progress = models.PositiveSmallIntegerField(default=0)
    attempts_made = models.PositiveSmallIntegerField(default=0)
    failed_reason = models.TextField(blank=True, default="")

    # Image generation input.
    generation_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    prompt = models.TextField(blank=True, default="")
    platforms = models.JSONField(default=list, blank=True)
    image_type = models.CharField(max_length=16, choices=ImageType.choices, default=ImageType.VIVID)
    output_format = models.CharField(
        max_length=8, choices=ImageFormat.choices, default=ImageFormat.PNG
    )
    # The generated original, kept in storage as a checkpoint so that a retry or a
    # redelivery after generation never pays the image model twice.
    source_path = models.CharField(max_length=512, blank=True, default="")
    # The image model's answer when it came as a link whose download has not succeeded yet:
    # the next attempt downloads it instead of paying again (cleared once the original is
    # kept, or when the link no longer gives the image).
    source_url = models.URLField(max_length=2048, blank=True, default="")
    # Calls made to the image model for this job (each one may be paid): 1 for a job that
    # completed, whatever its redeliveries, retries and stalls. Operators compare it with
    # the provider's bill; the fault tests assert it.
    generation_calls = models.PositiveSmallIntegerField(default=0)

    # Cleanup input ({type, olderThanDays}) and outcome ({deletedFiles, deletedJobs...}).
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)

    cancel_requested = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)

    # Delivery bookkeeping: when the message was last sent (the sweeper re-sends overdue
    # ones), which attempt holds the job (fencing token) and when it last showed life.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    stalled_count = models.PositiveSmallIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    # Why a delayed job waits until retry_at: a retry after a transient error, or its turn
    # at the image model's shared rate limit (no attempt spent; jobs/spend/limiter.py).
    delay_reason = models.CharField(
        max_length=16, choices=DelayReason.choices, blank=True, default=""
    )
    # Asked to reuse the original of an identical earlier generation (jobs/spend/reuse.py).
    reuse = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=("owner", "-created_at"), name="job_owner_created_idx"),
            models.Index(fields=("kind", "status"), name="job_kind_status_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=("owner", "idempotency_key"),
                condition=Q(idempotency_key__isnull=False),
                name="job_unique_idempotency_key_per_owner",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100), name="job_progress_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def queue_name(self) -> str:
        return str(self.kind)


class GeneratedImage(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="images")
    platform_id = models.CharField(max_length=64)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    file_size = models.PositiveIntegerField()
    storage_path = models.CharField(max_length=512)
    url = models.CharField(max_length=2048, blank=True, default="")
    format = models.CharField(max_length=8, choices=ImageFormat.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("job", "id")
        constraints = [
            models.UniqueConstraint(fields=("job", "platform_id"), name="image_unique_per_platform")
        ]

    def __str__(self) -> str:
        return f"{self.platform_id} {self.width}x{self.height} of {self.job_id}"
