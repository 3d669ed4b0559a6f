"""Input serializers (validation) and output serializers (the camelCase JSON of docs/API.md).

The output serializers are the one description of each response body: the views render
them and drf-spectacular publishes them as the schema at /api/schema/, which the tests check
real responses against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import prefetch_related_objects
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from jobs.models import (
    DelayReason,
    GeneratedImage,
    ImageFormat,
    ImageType,
    Job,
    JobKind,
    JobStatus,
)
from jobs.platforms import PLATFORM_IDS
from jobs.results import image_job_result, image_url
from jobs.spend.serializers import SpendOverviewSerializer
from snapasset.core.openapi import ErrorSerializer
from snapasset.core.serializers import (
    NoUnknownFieldsMixin,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictIntegerField,
)

PROMPT_MAX_LENGTH = 4000
PRIORITY_MIN, PRIORITY_MAX = 0, 9
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 10, 100
LIST_OFFSET_MAX = 1_000_000_000


class JobGenerateInputSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    prompt = StrictCharField(max_length=PROMPT_MAX_LENGTH, trim_whitespace=True)
    platforms = serializers.ListField(
        child=StrictChoiceField(choices=PLATFORM_IDS), required=False, allow_empty=False
    )
    imageType = StrictChoiceField(choices=ImageType.values, required=False)
    format = StrictChoiceField(choices=ImageFormat.values, required=False)
    priority = StrictIntegerField(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX, required=False)
    userId = StrictCharField(max_length=150, required=False)
    callbackUrl = StrictCharField(
        max_length=2048, required=False, help_text="Where to POST the job's final state."
    )
    reuse = StrictBooleanField(
        required=False,
        help_text="Reuse the original of your identical generation (same prompt, style, "
        "model and size) made within REUSE_WINDOW_HOURS instead of paying for a new one. "
        "Default: GENERATION_REUSE_DEFAULT.",
    )

    def validate_platforms(self, value: list[str]) -> list[str]:
        duplicates = sorted({p for p in value if value.count(p) > 1})
        if duplicates:
            raise serializers.ValidationError(f"Duplicate platforms: {', '.join(duplicates)}.")
        return value

    @staticmethod
    def plainly_valid(data: Any) -> dict[str, Any] | None:
        """The validated data of a body that is plainly valid, else None: then validate it
        with the serializer, which says what is wrong (the same error JSON as ever).

        Building the serializer costs more than a submit's SQL (DRF deep-copies its fields
        per instance): a body of the expected types within the bounds is checked here, and
        gives exactly what ``validated_data`` would. Anything else (a missing, extra, null or
        wrong-typed field, a blank or too long text, a bad choice...) returns None."""
        if type(data) is not dict or not data.keys() <= _GENERATE_FIELDS:
            return None
        validated: dict[str, Any] = {}
        for name, value in data.items():
            if name in _GENERATE_TEXT_MAX_LENGTH:
                if type(value) is not str or "\x00" in value:
                    return None
                value = value.strip()
                if not value or len(value) > _GENERATE_TEXT_MAX_LENGTH[name]:
                    return None
                if not value.isascii():
                    try:
                        value.encode("utf-8")  # lone surrogates ("\ud800") cannot be stored
                    except UnicodeEncodeError:
                        return None
            elif name in _GENERATE_CHOICES:
                if type(value) is not str or value not in _GENERATE_CHOICES[name]:
                    return None
            elif name == "platforms":
                if (
                    type(value) is not list
                    or not value
                    or not all(type(p) is str and p in _PLATFORM_ID_SET for p in value)
                    or len(set(value)) != len(value)
                ):
                    return None
                value = list(value)
            elif name == "priority":
                if type(value) is not int or not PRIORITY_MIN <= value <= PRIORITY_MAX:
                    return None
            elif type(value) is not bool:  # reuse
                return None
            validated[name] = value
        return validated if "prompt" in validated else None


_GENERATE_FIELDS = frozenset(JobGenerateInputSerializer._declared_fields)
_GENERATE_TEXT_MAX_LENGTH = {"prompt": PROMPT_MAX_LENGTH, "userId": 150, "callbackUrl": 2048}
_GENERATE_CHOICES = {
    "imageType": frozenset(ImageType.values),
    "format": frozenset(ImageFormat.values),
}
_PLATFORM_ID_SET = frozenset(PLATFORM_IDS)


class JobListQuerySerializer(serializers.Serializer):
    """GET /api/jobs's query. Unknown parameters are ignored, as on any read: clients add
    cache-busters (`_=1733000000`) and tracking parameters that must not break them."""

    status = serializers.CharField(required=False)
    limit = serializers.IntegerField(min_value=1, required=False, default=LIST_LIMIT_DEFAULT)
    # Bounded so a huge offset is a 400, not a database integer overflow.
    offset = serializers.IntegerField(
        min_value=0, max_value=LIST_OFFSET_MAX, required=False, default=0
    )
    kind = serializers.ChoiceField(choices=JobKind.values, required=False)

    def validate_status(self, value: str) -> list[str]:
        statuses = [s.strip() for s in value.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in JobStatus.values]
        if unknown or not statuses:
            raise serializers.ValidationError(
                f"Unknown status {', '.join(unknown) or value!r}; "
                f"use any of {', '.join(JobStatus.values)}."
            )
        return statuses

    def validate_limit(self, value: int) -> int:
        return min(value, LIST_LIMIT_MAX)


# --- Output: the camelCase JSON of docs/API.md, rendered by the views and described by the schema


@extend_schema_field(OpenApiTypes.INT)
class EpochMillisecondsField(serializers.Field):
    """A datetime as milliseconds since the epoch, as the old server sent its timestamps."""

    def to_representation(self, value: datetime) -> int:
        return int(value.timestamp() * 1000)


class IsoDateTimeField(serializers.DateTimeField):
    """A datetime in ISO 8601 as Python writes it (`+00:00`, not DRF's `Z`)."""

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


@extend_schema_field(OpenApiTypes.STR)
class BlankAsNullCharField(serializers.Field):
    """A text column that is "" when unset, answered as null."""

    def to_representation(self, value: str) -> str | None:
        return str(value) or None


class ImageJobDataSerializer(serializers.Serializer):
    """An image job's input."""

    userId = serializers.CharField(
        source="owner.get_username", allow_null=True, help_text="Null for system jobs."
    )
    generationId = serializers.UUIDField(source="generation_id")
    prompt = serializers.CharField()
    platforms = serializers.ListField(child=serializers.ChoiceField(choices=PLATFORM_IDS))
    imageType = serializers.ChoiceField(source="image_type", choices=ImageType.values)
    format = serializers.ChoiceField(source="output_format", choices=ImageFormat.values)
    priority = serializers.IntegerField()
    reuse = serializers.BooleanField(
        help_text="Asked to reuse an identical earlier original (no paid call)."
    )


# The cleanup types are cleanup's (cleanup.services.CLEANUP_TYPES, named CleanupTypeEnum in
# SPECTACULAR_SETTINGS); jobs does not import cleanup, so its fields refer to that enum.
@extend_schema_field({"$ref": "#/components/schemas/CleanupTypeEnum"})
class CleanupTypeField(serializers.CharField):
    pass


def constant_field(value: str) -> serializers.ChoiceField:
    """A field that is always ``value``: a one-value enum in the schema, so a generated
    client types it (``JobSubmittedStatus.QUEUED``) instead of a free string."""
    return serializers.ChoiceField(choices=[value], help_text=f'Always "{value}".')


class CleanupJobDataSerializer(serializers.Serializer):
    """A cleanup job's input."""

    userId = serializers.CharField(
        source="owner.get_username", allow_null=True, help_text="Null for system jobs."
    )
    type = CleanupTypeField(source="params.type")
    olderThanDays = serializers.IntegerField(source="params.olderThanDays", allow_null=True)


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="JobData",
        serializers=[ImageJobDataSerializer, CleanupJobDataSerializer],
        resource_type_field_name=None,
    )
)
class JobDataField(serializers.Field):
    """The job's input, by kind: an image job's request, or a cleanup job's type and age."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", read_only=True, **kwargs)
        self.image = ImageJobDataSerializer()
        self.cleanup = CleanupJobDataSerializer()

    def to_representation(self, job: Job) -> dict[str, Any]:
        if job.kind == JobKind.FILE_CLEANUP:
            return self.cleanup.to_representation(job)
        return self.image.to_representation(job)


@extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
class NextRunAtField(serializers.Field):
    """When a delayed job runs next (ISO 8601); null unless it is delayed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", read_only=True, allow_null=True, **kwargs)

    def to_representation(self, job: Job) -> str | None:
        if job.status != JobStatus.DELAYED or job.retry_at is None:
            return None
        return str(job.retry_at.isoformat())


@extend_schema_field({"type": "string", "enum": [*DelayReason.values, None], "nullable": True})
class DelayReasonField(serializers.Field):
    """Why a delayed job waits; null unless it is delayed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", read_only=True, allow_null=True, **kwargs)

    def to_representation(self, job: Job) -> str | None:
        if job.status != JobStatus.DELAYED:
            return None
        return str(job.delay_reason or DelayReason.RETRY)


NEXT_RUN_AT_HELP = "When a delayed job runs again (ISO 8601); null unless delayed."
DELAY_REASON_HELP = (
    "Why a delayed job waits: `retry` (after a transient error, an attempt spent) or "
    "`provider-slot` (its turn at the image model's shared rate limit, no attempt spent); "
    "null unless delayed."
)


class JobSummarySerializer(serializers.Serializer):
    """A job in a list."""

    jobId = serializers.UUIDField(source="id")
    queue = serializers.ChoiceField(source="queue_name", choices=JobKind.choices)
    status = serializers.ChoiceField(choices=JobStatus.choices)
    # DRF takes declared fields off the class, so `Serializer.data` stays the property.
    data = JobDataField()  # type: ignore[assignment]
    progress = serializers.IntegerField(min_value=0, max_value=100)
    timestamp = EpochMillisecondsField(
        source="created_at", help_text="Created, ms since the epoch."
    )
    failedReason = BlankAsNullCharField(source="failed_reason", allow_null=True)
    nextRunAt = NextRunAtField(help_text=NEXT_RUN_AT_HELP)
    delayReason = DelayReasonField(help_text=DELAY_REASON_HELP)


class JobDetailSerializer(serializers.Serializer):
    """GET /api/jobs/{jobId}."""

    jobId = serializers.UUIDField(source="id")
    queue = serializers.ChoiceField(source="queue_name", choices=JobKind.choices)
    status = serializers.ChoiceField(choices=JobStatus.choices)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    # DRF takes declared fields off the class, so `Serializer.data` stays the property.
    data = JobDataField()  # type: ignore[assignment]
    attemptsMade = serializers.IntegerField(source="attempts_made", min_value=0)
    timestamp = EpochMillisecondsField(
        source="created_at", help_text="Created, ms since the epoch."
    )
    processedOn = EpochMillisecondsField(
        source="processed_at", allow_null=True, help_text="ms since the epoch."
    )
    finishedOn = EpochMillisecondsField(
        source="finished_at", allow_null=True, help_text="ms since the epoch."
    )
    failedReason = BlankAsNullCharField(source="failed_reason", allow_null=True)
    createdAt = IsoDateTimeField(source="created_at", allow_null=True)
    nextRunAt = NextRunAtField(help_text=NEXT_RUN_AT_HELP)
    delayReason = DelayReasonField(help_text=DELAY_REASON_HELP)


class ImageSerializer(serializers.Serializer):
    """One platform's image in a result."""

    # The schema of jobs.results' items (which ImageJobResultSerializer renders with).

    platformId = serializers.ChoiceField(source="platform_id", choices=PLATFORM_IDS)
    platformName = serializers.CharField(read_only=True)
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    fileSize = serializers.IntegerField(source="file_size")
    storagePath = serializers.CharField(source="storage_path")
    url = serializers.CharField(
        read_only=True,
        help_text="Absolute in a response; as stored (may be a path) in a live event.",
    )
    format = serializers.ChoiceField(choices=ImageFormat.values)


class ImageJobResultSerializer(serializers.Serializer):
    """A completed image job's images, in the order of its platforms."""

    # The schema of jobs.results.image_job_result, which renders it (the final live event too).

    success = serializers.BooleanField(read_only=True)
    generationId = serializers.UUIDField(source="generation_id")
    images = ImageSerializer(many=True, read_only=True)
    totalImages = serializers.IntegerField(read_only=True)

    def to_representation(self, job: Job) -> dict[str, Any]:
        prefetch_related_objects([job], "images")
        return image_job_result(job, job.images.all(), url=self._url)

    def _url(self, image: GeneratedImage) -> str:
        url = image_url(image)
        request = self.context.get("request")
        # Local disk storage gives paths (/media/...): a response makes them absolute.
        if request is not None and url.startswith("/"):
            return str(request.build_absolute_uri(url))
        return url


class CleanupJobResultSerializer(serializers.Serializer):
    """A completed cleanup job's counts (``cleanup_run`` writes them as it goes)."""

    success = serializers.SerializerMethodField()
    type = CleanupTypeField(source="result.type", required=False)
    olderThanDays = serializers.IntegerField(
        source="result.olderThanDays", required=False, allow_null=True
    )
    deletedFiles = serializers.IntegerField(source="result.deletedFiles")
    deletedJobs = serializers.IntegerField(source="result.deletedJobs", required=False)
    clearedCheckpoints = serializers.IntegerField(
        source="result.clearedCheckpoints", required=False
    )
    deletedTaskResults = serializers.IntegerField(
        source="result.deletedTaskResults", required=False
    )
    batches = serializers.IntegerField(source="result.batches", required=False)

    def get_success(self, job: Job) -> bool:
        return True


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="JobResultBody",
        serializers=[ImageJobResultSerializer, CleanupJobResultSerializer],
        resource_type_field_name=None,
    )
)
class JobResultBodyField(serializers.Field):
    """A completed job's result, by kind."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, job: Job) -> dict[str, Any]:
        serializer_class: type[serializers.Serializer] = (
            CleanupJobResultSerializer
            if job.kind == JobKind.FILE_CLEANUP
            else ImageJobResultSerializer
        )
        return dict(serializer_class(job, context=self.context).data)


class JobResultSerializer(serializers.Serializer):
    """GET /api/jobs/{jobId}/result: a completed job's result (URLs made absolute with the
    request in the context)."""

    jobId = serializers.UUIDField(source="id")
    status = constant_field(JobStatus.COMPLETED)
    result = JobResultBodyField()


class JobListSerializer(serializers.Serializer):
    """GET /api/jobs: a page of jobs, newest first."""

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
    """GET /api/jobs/stats/overview: counts per kind and status (staff: and the spend)."""

    imageGeneration = StatusCountsSerializer()
    fileCleanup = StatusCountsSerializer()
    timestamp = serializers.IntegerField(help_text="ms since the epoch.")
    spend = SpendOverviewSerializer(
        required=False, help_text="Staff only: calls to the image model and their cost."
    )


class JobSubmittedSerializer(serializers.Serializer):
    """POST /api/jobs/generate."""

    jobId = serializers.UUIDField()
    generationId = serializers.UUIDField()
    status = constant_field("queued")
    message = serializers.CharField()
    estimatedTime = serializers.CharField()


class JobBatchItemResultSerializer(serializers.Serializer):
    """One item of a batch: what POST /api/jobs/generate would have answered for its body."""

    index = serializers.IntegerField(min_value=0, help_text="The item's place in the batch.")
    status = serializers.IntegerField(
        help_text="202 when queued, else the status of its error (400, 403)."
    )
    job = JobSubmittedSerializer(required=False, help_text="The queued job (status 202).")
    error = ErrorSerializer(required=False, help_text="Why this item was refused.")


class JobBatchSubmittedSerializer(serializers.Serializer):
    """POST /api/jobs/generate/batch."""

    results = JobBatchItemResultSerializer(many=True, help_text="One per item, in order.")
    accepted = serializers.IntegerField(min_value=0, help_text="Items queued.")
    rejected = serializers.IntegerField(min_value=0, help_text="Items refused.")


class JobCancelledSerializer(serializers.Serializer):
    """DELETE /api/jobs/{jobId}."""

    jobId = serializers.UUIDField()
    status = constant_field(JobStatus.CANCELLED)
    message = serializers.CharField()


class JobRetryingSerializer(serializers.Serializer):
    """POST /api/jobs/{jobId}/retry."""

    jobId = serializers.UUIDField()
    status = constant_field("retrying")
    message = serializers.CharField()


class PlatformSerializer(serializers.Serializer):
    id = serializers.ChoiceField(choices=PLATFORM_IDS)
    name = serializers.CharField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()


class PlatformListSerializer(serializers.Serializer):
    """GET /api/platforms."""

    platforms = PlatformSerializer(many=True)
