"""HTTP API of jobs: one view per operation; each validates, calls a service, serializes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import archive, openapi, selectors, serializers
from jobs.models import Job, JobStatus
from jobs.platforms import PLATFORMS
from jobs.services.control import job_cancel, job_retry
from jobs.services.submission import (
    BATCH_MAX_JOBS,
    JobRequest,
    job_create_generation,
    job_create_generation_batch,
)
from jobs.spend import selectors as spend_selectors
from snapasset.core.exception_handler import api_exception_handler
from snapasset.core.exceptions import ApplicationError, InvalidStateError
from snapasset.core.openapi import RETRY_AFTER_HEADER, errors
from snapasset.core.throttling import SubmitRateThrottle

IDEMPOTENCY_KEY_MAX_LENGTH = 255


def _now_ms() -> int:
    return int(timezone.now().timestamp() * 1000)


def _estimated_time() -> str:
    return "5-15 seconds" if settings.IMAGE_PROVIDER == "local" else "30-90 seconds"


def _job_request(data: dict[str, Any]) -> JobRequest:
    """The validated body of a submission (JobGenerateInputSerializer), for the service."""
    return JobRequest(
        prompt=data["prompt"],
        platforms=data.get("platforms"),
        image_type=data.get("imageType", "vivid"),
        output_format=data.get("format", "png"),
        priority=data.get("priority", 0),
        user_id=data.get("userId"),
        callback_url=data.get("callbackUrl"),
        reuse=data.get("reuse"),
    )


def _submitted(job: Job, *, created: bool = True) -> dict[str, Any]:
    """The 202 (or idempotent 200) body of a submission: JobSubmittedSerializer's fields,
    written out (the serializer describes it in the schema; building one per request cost
    more than the submit's INSERT)."""
    return {
        "jobId": str(job.id),
        "generationId": str(job.generation_id),
        "status": "queued",
        "message": "Image generation job queued"
        if created
        else "Job already submitted with this Idempotency-Key",
        "estimatedTime": _estimated_time(),
    }


def _generate_input(data: Any) -> tuple[dict[str, Any] | None, Any]:
    """A submission body validated: (its data, None), or (None, the errors) as
    JobGenerateInputSerializer words them."""
    validated = serializers.JobGenerateInputSerializer.plainly_valid(data)
    if validated is not None:
        return validated, None
    body = serializers.JobGenerateInputSerializer(data=data)
    if body.is_valid():
        return body.validated_data, None
    return None, body.errors


class JobGenerateApi(APIView):
    throttle_classes = [SubmitRateThrottle]

    @extend_schema(
        operation_id="jobs_generate",
        summary="Submit an image generation job",
        request=serializers.JobGenerateInputSerializer,
        parameters=[openapi.IDEMPOTENCY_KEY_HEADER, RETRY_AFTER_HEADER],
        responses={
            202: serializers.JobSubmittedSerializer,
            200: OpenApiResponse(
                serializers.JobSubmittedSerializer,
                description="The job first submitted with this Idempotency-Key.",
            ),
            **errors(400, 403, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        data, refused_because = _generate_input(request.data)
        if data is None:
            raise ValidationError(refused_because)
        key = request.headers.get("Idempotency-Key", "").strip() or None
        if key is not None and len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
            raise ApplicationError(
                "Idempotency-Key is too long",
                extra={"details": {"Idempotency-Key": ["At most 255 characters."]}},
            )
        submission = job_create_generation(
            actor=request.user,
            idempotency_key=key,
            **asdict(_job_request(data)),
        )
        return Response(
            _submitted(submission.job, created=submission.created),
            status=status.HTTP_202_ACCEPTED if submission.created else status.HTTP_200_OK,
        )


class JobGenerateBatchApi(APIView):
    """POST /api/jobs/generate/batch: up to BATCH_MAX_JOBS submissions in one request."""

    # The submit rate is checked in post(): a batch counts as the items it carries.
    throttle_classes: list[type] = []
    schema = openapi.BatchSchema()
    max_items = BATCH_MAX_JOBS  # in the schema

    @extend_schema(
        operation_id="jobs_generate_batch",
        summary="Submit up to 100 image generation jobs at once",
        description=(
            "A JSON array of bodies of POST /api/jobs/generate. Answers 200 with one result "
            "per item, in order: `status` 202 and the queued `job`, or the `error` (and its "
            "status) that POST /api/jobs/generate would have answered for that body alone. "
            "The valid items are queued in one transaction whatever the others hold. The "
            "submit rate (each item counts as one submission), the pending-jobs cap and the "
            "daily quota apply to the batch as a whole: a batch over any of them is refused "
            "with 429 and nothing is queued. An empty array, more than 100 items or a body "
            "that is not an array: 400."
        ),
        request=serializers.JobGenerateInputSerializer(many=True),
        parameters=[RETRY_AFTER_HEADER],
        responses={200: serializers.JobBatchSubmittedSerializer, **errors(400, 413, 415, 429)},
    )
    def post(self, request: Request) -> Response:
        items = _batch_items(request)
        throttle = SubmitRateThrottle()
        if not throttle.allow_submissions(request, self, len(items)):
            self.throttled(request, throttle.wait())
        bodies = [_generate_input(item) for item in items]
        valid = [data for data, _ in bodies if data is not None]
        created = iter(
            job_create_generation_batch(
                actor=request.user, requests=[_job_request(data) for data in valid]
            )
        )
        results = []
        for index, (data, refused_because) in enumerate(bodies):
            outcome = next(created) if data is not None else ValidationError(refused_because)
            if isinstance(outcome, Job):
                result = {"index": index, "status": 202, "job": _submitted(outcome)}
            else:
                refused = api_exception_handler(outcome, {"request": request, "view": self})
                assert refused is not None
                result = {"index": index, "status": refused.status_code, "error": refused.data}
            results.append(result)
        accepted = sum(result["status"] == status.HTTP_202_ACCEPTED for result in results)
        answer = serializers.JobBatchSubmittedSerializer(
            {"results": results, "accepted": accepted, "rejected": len(results) - accepted}
        )
        return Response(answer.data)


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, int | float) else "null"


def _batch_items(request: Request) -> list[Any]:
    """The items of a batch: a JSON array of 1..BATCH_MAX_JOBS, else a 400 saying why."""
    if request.headers.get("Idempotency-Key"):
        raise ApplicationError(
            "Idempotency-Key is not taken by a batch",
            extra={"details": {"Idempotency-Key": ["Send it on POST /api/jobs/generate."]}},
        )
    items = request.data
    if not isinstance(items, list):
        problem = f"The body must be a JSON array of job bodies, not {_json_type(items)}."
    elif not items:
        problem = "The batch is empty: send 1 to 100 job bodies."
    elif len(items) > BATCH_MAX_JOBS:
        problem = f"A batch takes at most {BATCH_MAX_JOBS} jobs; this one has {len(items)}."
    else:
        return items
    raise ApplicationError("Invalid batch", extra={"details": {"batch": [problem]}})


class JobDetailApi(APIView):
    @extend_schema(
        operation_id="jobs_retrieve",
        summary="A job's status, progress and input",
        parameters=[openapi.JOB_ID_PARAMETER],
        responses={200: serializers.JobDetailSerializer, **errors(404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        return Response(serializers.JobDetailSerializer(job).data)

    @extend_schema(
        operation_id="jobs_cancel",
        summary="Cancel a job (a running job stops at its next step)",
        parameters=[openapi.JOB_ID_PARAMETER],
        responses={200: serializers.JobCancelledSerializer, **errors(400, 403, 404)},
    )
    def delete(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        job = job_cancel(job=job)
        body = serializers.JobCancelledSerializer(
            {"jobId": job.id, "status": JobStatus.CANCELLED, "message": "Job cancelled"}
        )
        return Response(body.data)


class JobResultApi(APIView):
    @extend_schema(
        operation_id="jobs_result",
        summary="The images of a completed job",
        parameters=[openapi.JOB_ID_PARAMETER],
        responses={200: serializers.JobResultSerializer, **errors(400, 404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        if job.status != JobStatus.COMPLETED:
            raise InvalidStateError(
                f"Job is not completed (status: {job.status})", extra={"status": job.status}
            )
        return Response(serializers.JobResultSerializer(job, context={"request": request}).data)


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


async def _async_chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    # Storage reads are blocking: each chunk is produced in a worker thread, so the event
    # loop keeps serving (SSE streams included) while a zip is being sent.
    next_chunk = sync_to_async(_next_chunk, thread_sensitive=False)
    while (chunk := await next_chunk(chunks)) is not None:
        yield chunk


class JobDownloadApi(APIView):
    """GET /api/jobs/{jobId}/download.zip: every image of a completed job in one zip."""

    @extend_schema(
        operation_id="jobs_download_zip",
        summary="Every image of a completed job, as one zip",
        parameters=[openapi.JOB_ID_PARAMETER],
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="A zip of the job's images, streamed."
            ),
            **errors(400, 404, 410),
        },
    )
    def get(self, request: Request, job_id: str) -> StreamingHttpResponse:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        bundle = archive.job_archive(job=job)
        chunks = bundle.chunks()
        # Under ASGI (production) stream asynchronously; Django would otherwise buffer a
        # sync iterator whole. The sync path serves WSGI and the test client.
        content = _async_chunks(chunks) if isinstance(request._request, ASGIRequest) else chunks
        response = StreamingHttpResponse(content, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{bundle.filename}"'
        return response


class JobRetryApi(APIView):
    # A retry queues the job again, as a submission does: it counts against the same rate.
    throttle_classes = [SubmitRateThrottle]

    @extend_schema(
        operation_id="jobs_retry",
        summary="Queue a failed or cancelled job again",
        request=None,
        parameters=[openapi.JOB_ID_PARAMETER, RETRY_AFTER_HEADER],
        responses={200: serializers.JobRetryingSerializer, **errors(400, 403, 404, 429)},
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        job = job_retry(job=job, actor=request.user)
        body = serializers.JobRetryingSerializer(
            {"jobId": job.id, "status": "retrying", "message": "Job queued for retry"}
        )
        return Response(body.data)


class JobListApi(APIView):
    @extend_schema(
        operation_id="jobs_list",
        summary="The caller's jobs (staff: everyone's), newest first",
        parameters=[serializers.JobListQuerySerializer, openapi.STATUS_LIST_PARAMETER],
        responses={200: serializers.JobListSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.dict()
        if "status" in request.query_params:
            # `status=a,b` and `status=a&status=b` alike (see the parameter's description).
            raw["status"] = ",".join(request.query_params.getlist("status"))
        query = serializers.JobListQuerySerializer(data=raw)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        statuses = params.get("status") or []
        jobs, total = selectors.job_list_for_user(
            user=request.user,
            statuses=statuses,
            limit=params["limit"],
            offset=params["offset"],
            kind=params.get("kind"),
        )
        body = serializers.JobListSerializer(
            {
                "jobs": jobs,
                "total": total,
                "statuses": statuses,
                "limit": params["limit"],
                "offset": params["offset"],
            }
        )
        return Response(body.data)


class JobStatsApi(APIView):
    @extend_schema(
        operation_id="jobs_stats",
        summary="Job counts per kind and status: the caller's own (staff: everyone's, and "
        "the spend on the image model)",
        responses={200: serializers.JobStatsSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        stats = {**selectors.job_stats(user=request.user), "timestamp": _now_ms()}
        if request.user.is_staff:
            stats["spend"] = spend_selectors.spend_overview()
        return Response(serializers.JobStatsSerializer(stats).data)


class PlatformListApi(APIView):
    @extend_schema(
        operation_id="platforms_list",
        summary="The platforms SnapAsset renders for, with their sizes",
        responses={200: serializers.PlatformListSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        body = serializers.PlatformListSerializer({"platforms": list(PLATFORMS.values())})
        return Response(body.data)
