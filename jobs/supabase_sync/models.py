"""The outbox of the Supabase sync: one row per status a job took, until Supabase has it.

The row is the truth about what must reach Supabase, as a webhook delivery's row is: Celery
messages only say "push event X now", and the drain (beat) sends again the ones a lost
message or a long backoff left behind.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from jobs.models import Job
from jobs.outbox import OutboxRecord


class SyncState(models.TextChoices):
    PENDING = "pending", "Pending"
    SYNCED = "synced", "Synced"
    # Not sent: a newer status of the same job was recorded (it carries everything).
    SUPERSEDED = "superseded", "Superseded"
    FAILED = "failed", "Failed (retries used up)"


class SyncEvent(OutboxRecord):
    """A job's status as the old server's ``generations`` table spells it, to be written
    there (with the job's images once it completed or failed). Its attempts, last error and
    due time are the outbox's (jobs.outbox.OutboxRecord)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="supabase_sync_events")
    # The job's own status (waiting, active, ...) and the old server's word for it.
    job_status = models.CharField(max_length=16)
    status = models.CharField(max_length=16)
    error_message = models.TextField(blank=True, default="")
    # The job's updated_at at this change: ``generations.updated_at``, and the version that
    # keeps an older status from overwriting a newer one.
    version = models.DateTimeField()
    state = models.CharField(max_length=16, choices=SyncState.choices, default=SyncState.PENDING)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        verbose_name = "Supabase sync event"
        indexes = [
            models.Index(
                fields=("next_attempt_at",),
                condition=Q(state="pending"),
                name="supabase_sync_due_idx",
            ),
            # The backlog on /metrics: few rows (the pending and failed ones).
            models.Index(
                fields=("state", "created_at"),
                condition=Q(state__in=("pending", "failed")),
                name="supabase_sync_backlog_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.status} of {self.job_id} ({self.state})"
