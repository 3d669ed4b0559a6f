"""Input serializers (validation) and output representations (the camelCase JSON of API.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.files.storage import default_storage
from rest_framework import serializers

from jobs.models import GeneratedImage, ImageFormat, ImageType, Job, JobKind, JobStatus
from jobs.platforms import PLATFORM_IDS, PLATFORMS

PROMPT_MAX_LENGTH = 4000
PRIORITY_MIN, PRIORITY_MAX = 0, 9
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 10, 100
LIST_OFFSET_MAX = 1_000_000_000


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers, booleans and objects instead of str()-ing them."""

    default_error_messages = {
        "invalid": "Not a valid string.",
        "surrogates": "Not valid Unicode (lone surrogate characters).",
    }

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            # JSON may escape lone surrogates ("\ud800"); the database cannot store them.
            self.fail("surrogates")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An IntegerField that refuses booleans, floats and numeric strings."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class NoUnknownFieldsMixin:
    """Unknown fields are an error, so a typo (`platfroms`) is not silently ignored."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        known = set(self.fields)  # type: ignore[attr-defined]
        initial = getattr(self, "initial_data", {})
        unknown = sorted(set(initial) - known) if isinstance(initial, dict) else []
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return attrs


class JobGenerateInputSerializer(NoUnknownFieldsMixin, serializers.Serializer):
    prompt = StrictCharField(max_length=PROMPT_MAX_LENGTH, trim_whitespace=True)
    platforms = serializers.ListField(
        child=StrictChoiceField(choices=PLATFORM_IDS), required=False, allow_empty=False
    )
    imageType = StrictChoiceField(choices=ImageType.values, required=False)
    format = StrictChoiceField(choices=ImageFormat.values, required=False)
    priority = StrictIntegerField(min_value=PRIORITY_MIN, max_value=PRIORITY_MAX, required=False)
    userId = StrictCharField(max_length=150, required=False)

    def validate_platforms(self, value: list[str]) -> list[str]:
        duplicates = sorted({p for p in value if value.count(p) > 1})
        if duplicates:
            raise serializers.ValidationError(f"Duplicate platforms: {', '.join(duplicates)}.")
        return value


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


# --- Output ------------------------------------------------------------------------------


def epoch_ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def job_data_representation(job: Job) -> dict[str, Any]:
    user_id = job.owner.get_username() if job.owner else None
    if job.kind == JobKind.FILE_CLEANUP:
        return {"userId": user_id, **job.params}
    return {
        "userId": user_id,
        "generationId": str(job.generation_id),
        "prompt": job.prompt,
        "platforms": list(job.platforms),
        "imageType": job.image_type,
        "format": job.output_format,
        "priority": job.priority,
    }


def job_detail_representation(job: Job) -> dict[str, Any]:
    return {
        "jobId": str(job.id),
        "queue": job.queue_name,
        "status": job.status,
        "progress": job.progress,
        "data": job_data_representation(job),
        "attemptsMade": job.attempts_made,
        "timestamp": epoch_ms(job.created_at),
        "processedOn": epoch_ms(job.processed_at),
        "finishedOn": epoch_ms(job.finished_at),
        "failedReason": job.failed_reason or None,
        "createdAt": job.created_at.isoformat() if job.created_at else None,
    }


def job_summary_representation(job: Job) -> dict[str, Any]:
    return {
        "jobId": str(job.id),
        "queue": job.queue_name,
        "status": job.status,
        "data": job_data_representation(job),
        "progress": job.progress,
        "timestamp": epoch_ms(job.created_at),
        "failedReason": job.failed_reason or None,
    }


def image_url(image: GeneratedImage) -> str:
    return image.url or default_storage.url(image.storage_path)


def image_representation(image: GeneratedImage) -> dict[str, Any]:
    platform = PLATFORMS.get(image.platform_id)
    return {
        "platformId": image.platform_id,
        "platformName": platform.name if platform else image.platform_id,
        "width": image.width,
        "height": image.height,
        "fileSize": image.file_size,
        "storagePath": image.storage_path,
        "url": image_url(image),
        "format": image.format,
    }


def job_result_representation(job: Job) -> dict[str, Any]:
    if job.kind == JobKind.FILE_CLEANUP:
        return {"success": True, **job.result}
    order = {platform_id: i for i, platform_id in enumerate(job.platforms)}
    images = sorted(job.images.all(), key=lambda image: order.get(image.platform_id, 99))
    return {
        "success": True,
        "generationId": str(job.generation_id),
        "images": [image_representation(image) for image in images],
        "totalImages": len(images),
    }


def job_final_payload(job: Job) -> dict[str, Any]:
    """What a `final` live event adds: the result, the failure reason or the cancellation."""
    if job.status == JobStatus.COMPLETED:
        return {"result": job_result_representation(job)}
    if job.status == JobStatus.FAILED:
        return {"failedReason": job.failed_reason}
    return {"cancelled": True}
