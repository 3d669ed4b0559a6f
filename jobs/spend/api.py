"""GET /api/usage: the caller's paid generations, quota and limits."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.spend import selectors, serializers
from snapasset.core.openapi import errors


class UsageApi(APIView):
    @extend_schema(
        operation_id="usage_retrieve",
        summary="The caller's paid generations today, daily quota, pending jobs and limits",
        responses={200: serializers.UsageSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        usage = selectors.usage_for_user(request.user)
        return Response(serializers.UsageSerializer(usage).data)
