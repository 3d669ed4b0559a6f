"""HTTP API of jobs: one view per operation; each validates, calls a service, serializes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import archive, openapi, selectors, serializers, services
from jobs.platforms import PLATFORMS
from snapasset.core.exceptions import ApplicationError
from snapasset.core.throttling import SubmitRateThrottle

IDEMPOTENCY_KEY_MAX_LENGTH = 255


def _now_ms() -> int:
    return int(timezone.now().timestamp() * 1000)


def _absolute_urls(request: Request, result: dict[str, Any]) -> dict[str, Any]:
    """Storage URLs may be relative (/media/...) on local disk: make them absolute."""
    for image in result.get("images", []):
        if image["url"].startswith("/"):
            image["url"] = request.build_absolute_uri(image["url"])
    return result


def _estimated_time() -> str:
    return "5-15 seconds" if settings.IMAGE_PROVIDER == "local" else "30-90 seconds"


class JobGenerateApi(APIView):
    throttle_classes = [SubmitRateThrottle]

    @extend_schema(
        operation_id="jobs_generate",
        summary="Submit an image generation job",
        request=serializers.JobGenerateInputSerializer,
        parameters=[openapi.IDEMPOTENCY_KEY_HEADER, openapi.RETRY_AFTER_HEADER],
        responses={
            202: openapi.JobSubmittedSerializer,
            200: OpenApiResponse(
                openapi.JobSubmittedSerializer,
                description="The job first submitted with this Idempotency-Key.",
            ),
            **openapi.errors(400, 403, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        body = serializers.JobGenerateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key", "").strip() or None
        if key is not None and len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
            raise ApplicationError(
                "Idempotency-Key is too long",
                extra={"details": {"Idempotency-Key": ["At most 255 characters."]}},
            )
        data = body.validated_data
        submission = services.job_create_generation(
            actor=request.user,
            prompt=data["prompt"],
            platforms=data.get("platforms"),
            image_type=data.get("imageType", "vivid"),
            output_format=data.get("format", "png"),
            priority=data.get("priority", 0),
            user_id=data.get("userId"),
            idempotency_key=key,
        )
        job = submission.job
        return Response(
            {
                "jobId": str(job.id),
                "generationId": str(job.generation_id),
                "status": "queued",
                "message": "Image generation job queued"
                if submission.created
                else "Job already submitted with this Idempotency-Key",
                "estimatedTime": _estimated_time(),
            },
            status=status.HTTP_202_ACCEPTED if submission.created else status.HTTP_200_OK,
        )


class JobDetailApi(APIView):
    @extend_schema(
        operation_id="jobs_retrieve",
        summary="A job's status, progress and input",
        parameters=[openapi.JOB_ID_PARAMETER],
        responses={200: openapi.JobDetailSerializer, **openapi.errors(404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        return Response(serializers.job_detail_representation(job))

    @extend_schema(
        operation_id="jobs_cancel",
        summary="Cancel a job (a running job stops at its next step)",
        parameters=[openapi.JOB_ID_PARAMETER],
        responses={200: openapi.JobCancelledSerializer, **openapi.errors(400, 403, 404)},
    )
    def delete(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        job = services.job_cancel(job=job)
        return Response({"jobId": str(job.id), "status": "cancelled", "message": "Job cancelled"})


class JobResultApi(APIView):
    @extend_schema(
        operation_id="jobs_result",
        summary="The images of a completed job",
        parameters=[openapi.JOB_ID_PARAMETER],
        responses={200: openapi.JobResultSerializer, **openapi.errors(400, 404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        if job.status != "completed":
            return Response(
                {"error": f"Job is not completed (status: {job.status})", "status": job.status},
                status=status.HTTP_400_BAD_REQUEST,
            )
        result = _absolute_urls(request, serializers.job_result_representation(job))
        return Response({"jobId": str(job.id), "status": "completed", "result": result})


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
            **openapi.errors(400, 404, 410),
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
        parameters=[openapi.JOB_ID_PARAMETER, openapi.RETRY_AFTER_HEADER],
        responses={200: openapi.JobRetryingSerializer, **openapi.errors(400, 403, 404, 429)},
    )
    def post(self, request: Request, job_id: str) -> Response:
        job = selectors.job_get_for_user(job_id=job_id, user=request.user)
        job = services.job_retry(job=job, actor=request.user)
        return Response(
            {"jobId": str(job.id), "status": "retrying", "message": "Job queued for retry"}
        )


class JobListApi(APIView):
    @extend_schema(
        operation_id="jobs_list",
        summary="The caller's jobs (staff: everyone's), newest first",
        parameters=[serializers.JobListQuerySerializer],
        responses={200: openapi.JobListSerializer, **openapi.errors(400)},
    )
    def get(self, request: Request) -> Response:
        query = serializers.JobListQuerySerializer(data=request.query_params.dict())
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
        return Response(
            {
                "jobs": [serializers.job_summary_representation(job) for job in jobs],
                "total": total,
                "statuses": statuses,
                "limit": params["limit"],
                "offset": params["offset"],
            }
        )


class JobStatsApi(APIView):
    @extend_schema(
        operation_id="jobs_stats",
        summary="Job counts per kind and status: the caller's own (staff: everyone's)",
        responses={200: openapi.JobStatsSerializer, **openapi.errors()},
    )
    def get(self, request: Request) -> Response:
        return Response({**selectors.job_stats(user=request.user), "timestamp": _now_ms()})


class PlatformListApi(APIView):
    @extend_schema(
        operation_id="platforms_list",
        summary="The platforms SnapAsset renders for, with their sizes",
        responses={200: openapi.PlatformListSerializer, **openapi.errors()},
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "platforms": [
                    {"id": p.id, "name": p.name, "width": p.width, "height": p.height}
                    for p in PLATFORMS.values()
                ]
            }
        )
