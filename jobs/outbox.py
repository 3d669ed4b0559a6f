"""The outbox both webhook deliveries and Supabase sync events are: a row per thing to send,
the truth about it, and Celery messages that only say "attempt row X now". This module keeps
the bookkeeping they share; what is sent, and how, is the feature's.
"""

from __future__ import annotations

from django.db import models


class OutboxRecord(models.Model):
    """The delivery bookkeeping of an outbox row (its state field is the feature's)."""

    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    # When the next attempt is due (None once the row has ended).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the message for the next attempt was sent (None: not sent, the drain will).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # An attempt in flight holds the row until then, so a duplicate message waits.
    locked_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
