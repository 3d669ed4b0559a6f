"""The ledger of calls to the image model, and the per-user quota overrides."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class CallOutcome(models.TextChoices):
    # The model answered with an image.
    SUCCEEDED = "succeeded", "Succeeded"
    # The model answered with an error (4xx, 5xx, 429): not billed.
    FAILED = "failed", "Failed"
    # No answer: a timeout, a broken connection, or a worker that died during the call. The
    # model may have made (and billed) the image, so it is priced as if it had.
    CUT_SHORT = "cut_short", "Cut short"
    # No call: the original of an identical earlier generation was reused.
    REUSED = "reused", "Reused"


# Outcomes that cost (or may have cost) money: what the daily quota counts.
PAID_OUTCOMES = frozenset({CallOutcome.SUCCEEDED, CallOutcome.CUT_SHORT})


class ProviderCall(models.Model):
    """One call to the image model (or one reuse instead of a call), recorded once.

    Written when the call starts, as ``cut_short`` with its full price, so a worker killed
    during the call still leaves the call on the books; the outcome is settled when the
    call returns (``finished_at``). ``call_number`` is the job's count of calls
    (``Job.generation_calls``) for this one, 0 for a reuse: (job, call_number) is unique.
    The job and the user are kept as references that survive the cleanup of old jobs.
    """

    job = models.ForeignKey(
        "jobs.Job",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="provider_calls",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="provider_calls",
    )
    call_number = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=64)
    size = models.CharField(max_length=16)
    quality = models.CharField(max_length=16, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=CallOutcome.choices)
    request_id = models.CharField(
        max_length=128, blank=True, default="", help_text="The provider's x-request-id."
    )
    error = models.CharField(max_length=200, blank=True, default="")
    estimated_cost_usd = models.DecimalField(max_digits=10, decimal_places=4, default=0)
    created_at = models.DateTimeField(db_index=True, help_text="When the call started.")
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "provider call"
        indexes = [models.Index(fields=("user", "-created_at"), name="call_user_created_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=("job", "call_number"),
                condition=Q(job__isnull=False),
                name="call_unique_per_job_and_number",
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.size} {self.outcome} ({self.created_at:%Y-%m-%d %H:%M})"


class UserQuota(models.Model):
    """A user's own daily quota of paid generations, instead of DAILY_GENERATION_QUOTA.

    ``daily_generations`` empty means unlimited; 0 means no paid generation at all. A staff
    user is exempt from the default but held to an override.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_quota"
    )
    daily_generations = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Paid generations per day; empty: unlimited, 0: none.",
    )
    note = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "user quota"

    def __str__(self) -> str:
        limit = "unlimited" if self.daily_generations is None else self.daily_generations
        return f"{self.user} : {limit} a day"
