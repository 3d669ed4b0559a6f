"""The OpenAPI description of the jobs API (drf-spectacular): response shapes and errors.

The views build their JSON with the representation functions of jobs/serializers.py (the
camelCase contract of API.md); the serializers here only describe those bodies for the
schema at /api/schema/, which schemathesis checks real responses against (tests).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from jobs.models import ImageFormat, ImageType, JobKind, JobStatus
from jobs.platforms import PLATFORM_IDS

# --- Errors -----------------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="What was wrong, for a person to read.")
    details = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="Validation errors by field name (400).",
    )
    status = serializers.ChoiceField(
        choices=JobStatus.choices, required=False, help_text="The job's status (400 wrong state)."
    )
    retryAfter = serializers.IntegerField(
        required=False, help_text="Seconds to wait before trying again (429)."
    )


ERROR_DESCRIPTIONS = {
    400: "Invalid request: `details` names each wrong field; or the job is in the wrong state.",
    401: "No credentials, or invalid ones (token, JWT).",
    403: "Authenticated but not allowed (staff only; or a session request without CSRF token).",
    404: "No such job, or another user's job (never a 403, so existence does not leak).",
    410: "The job's files are no longer in storage (removed by cleanup).",
    413: "Request body over 1 MiB.",
    415: "Request body is not JSON.",
    429: "Too many submissions (rate limit) or too many pending jobs (cap): see Retry-After.",
    503: "A service the request needs (database, JWKS) is unavailable; try again.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Error responses for `extend_schema(responses=...)`; every API operation may answer
    401 (credentials) and 503 (database or JWKS down)."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in sorted({401, 503, *codes})
    }


RETRY_AFTER_HEADER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[429],
    required=True,
    description="Seconds to wait before submitting again.",
)
JOB_ID_PARAMETER = OpenApiParameter(
    "job_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The job's id; an id that is not a UUID is a 404.",
)
IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="The same key from the same user within 24 h returns the first job (200) "
    "instead of creating another. At most 255 characters.",
)

# --- Bodies -----------------------------------------------------------------------------------


class JobSubmittedSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()
    generationId = serializers.UUIDField()
    status = serializers.CharField(help_text='Always "queued".')
    message = serializers.CharField()
    estimatedTime = serializers.CharField()


class JobDataSerializer(serializers.Serializer):
    """The job's input: an image job's fields, or a cleanup job's `type` and `olderThanDays`."""

    userId = serializers.CharField(allow_null=True, help_text="Null for system jobs.")
    generationId = serializers.UUIDField(required=False)
    prompt = serializers.CharField(required=False)
    platforms = serializers.ListField(child=serializers.CharField(), required=False)
    imageType = serializers.ChoiceField(choices=ImageType.values, required=False)
    format = serializers.ChoiceField(choices=ImageFormat.values, required=False)
    priority = serializers.IntegerField(required=False)
    type = serializers.CharField(required=False)
    olderThanDays = serializers.IntegerField(required=False, allow_null=True)


class JobSummarySerializer(serializers.Serializer):
    jobId = serializers.UUIDField()
    queue = serializers.ChoiceField(choices=JobKind.choices)
    status = serializers.ChoiceField(choices=JobStatus.choices)
    data = JobDataSerializer()
    progress = serializers.IntegerField(min_value=0, max_value=100)
    timestamp = serializers.IntegerField(help_text="Created, ms since the epoch.")
    failedReason = serializers.CharField(allow_null=True)


class JobDetailSerializer(JobSummarySerializer):
    attemptsMade = serializers.IntegerField(min_value=0)
    processedOn = serializers.IntegerField(allow_null=True, help_text="ms since the epoch.")
    finishedOn = serializers.IntegerField(allow_null=True, help_text="ms since the epoch.")
    createdAt = serializers.DateTimeField(allow_null=True)


class JobCancelledSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()
    status = serializers.CharField(help_text='Always "cancelled".')
    message = serializers.CharField()


class JobRetryingSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()
    status = serializers.CharField(help_text='Always "retrying".')
    message = serializers.CharField()


class ImageSerializer(serializers.Serializer):
    platformId = serializers.CharField()
    platformName = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    fileSize = serializers.IntegerField()
    storagePath = serializers.CharField()
    url = serializers.CharField()
    format = serializers.CharField()


class JobResultBodySerializer(serializers.Serializer):
    """An image job's images; a cleanup job's counts (deletedFiles, deletedJobs...)."""

    success = serializers.BooleanField()
    generationId = serializers.UUIDField(required=False)
    images = ImageSerializer(many=True, required=False)
    totalImages = serializers.IntegerField(required=False)


class JobResultSerializer(serializers.Serializer):
    jobId = serializers.UUIDField()
    status = serializers.CharField(help_text='Always "completed".')
    result = JobResultBodySerializer()


class JobListSerializer(serializers.Serializer):
    jobs = JobSummarySerializer(many=True)
    total = serializers.IntegerField(min_value=0)
    statuses = serializers.ListField(child=serializers.ChoiceField(choices=JobStatus.choices))
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()


class StatusCountsSerializer(serializers.Serializer):
    waiting = serializers.IntegerField()
    active = serializers.IntegerField()
    delayed = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class JobStatsSerializer(serializers.Serializer):
    imageGeneration = StatusCountsSerializer()
    fileCleanup = StatusCountsSerializer()
    timestamp = serializers.IntegerField(help_text="ms since the epoch.")


class PlatformSerializer(serializers.Serializer):
    id = serializers.ChoiceField(choices=PLATFORM_IDS)
    name = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()


class PlatformListSerializer(serializers.Serializer):
    platforms = PlatformSerializer(many=True)
