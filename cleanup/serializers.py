"""The cleanup endpoint's input (validation) and output (its answer, and the schema's)."""

from __future__ import annotations

from rest_framework import serializers

from cleanup.services import CLEANUP_TYPES
from snapasset.core.serializers import (
    NoUnknownFieldsMixin,
    StrictChoiceField,
    StrictIntegerField,
)


class CleanupInputSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    type = StrictChoiceField(choices=CLEANUP_TYPES, required=False, default="all")
    olderThanDays = StrictIntegerField(min_value=0, max_value=3650, required=False)


class CleanupQueuedSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()
    type = serializers.ChoiceField(choices=CLEANUP_TYPES)
    olderThanDays = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["queued"], help_text='Always "queued".')
    message = serializers.CharField()
