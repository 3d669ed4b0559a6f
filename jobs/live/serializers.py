"""The body of POST /api/sse/tickets and its answer."""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework import serializers

from snapasset.core.serializers import NoUnknownFieldsMixin, StrictChoiceField

STREAM_JOB, STREAM_STATS = "job", "stats"


class StrictUUIDField(serializers.UUIDField):
    """A UUID given as a string (DRF's own also takes integers)."""

    def to_internal_value(self, data: Any) -> uuid.UUID:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class StreamTicketInputSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    """`{jobId}` (or `{stream: "job", jobId}`) for a job's stream, `{stream: "stats"}` for
    the stats stream; unknown fields are an error."""

    stream = StrictChoiceField(
        choices=[STREAM_JOB, STREAM_STATS],
        required=False,
        default=STREAM_JOB,
        help_text="Which stream the ticket opens: a job's (default) or the stats stream.",
    )
    jobId = StrictUUIDField(
        required=False, help_text="The job whose stream the ticket opens (stream `job`)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs["stream"] == STREAM_JOB and "jobId" not in attrs:
            raise serializers.ValidationError({"jobId": ["Required for a job's stream."]})
        if attrs["stream"] == STREAM_STATS and "jobId" in attrs:
            raise serializers.ValidationError({"jobId": ["Not allowed for the stats stream."]})
        return attrs


class StreamTicketSerializer(serializers.Serializer):
    ticket = serializers.CharField(
        help_text="Present it once as `?ticket=` on the stream's URL; it is spent then."
    )
    expiresIn = serializers.IntegerField(help_text="Seconds left to present the ticket.")
    stream = serializers.ChoiceField(choices=[STREAM_JOB, STREAM_STATS])
    jobId = serializers.UUIDField(required=False, help_text="Present for a job's stream.")
    url = serializers.URLField(
        help_text="The stream's absolute URL with the ticket: `new EventSource(url)`."
    )
