"""HTTP API of cleanup: POST /api/jobs/cleanup queues a cleanup job (staff only)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cleanup import serializers, services
from snapasset.core.openapi import errors


class CleanupCreateApi(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        operation_id="jobs_cleanup",
        summary="Queue a cleanup job (staff only)",
        request=serializers.CleanupInputSerializer,
        responses={
            202: serializers.CleanupQueuedSerializer,
            **errors(400, 403, 413, 415),
        },
    )
    def post(self, request: Request) -> Response:
        body = serializers.CleanupInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = services.cleanup_create(
            actor=request.user,
            cleanup_type=body.validated_data["type"],
            older_than_days=body.validated_data.get("olderThanDays"),
        )
        answer = serializers.CleanupQueuedSerializer(
            {
                "jobId": job.id,
                "type": job.params["type"],
                "olderThanDays": job.params["olderThanDays"],
                "status": "queued",
                "message": "Cleanup job queued",
            }
        )
        return Response(answer.data, status=status.HTTP_202_ACCEPTED)
