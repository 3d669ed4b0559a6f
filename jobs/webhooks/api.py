"""HTTP API of webhooks: a job's deliveries, and the secret that signs callbackUrl deliveries."""

from __future__ import annotations

from django.utils.cache import add_never_cache_headers
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.openapi import JOB_ID_PARAMETER
from jobs.webhooks import selectors, serializers, services
from snapasset.core.openapi import errors


class JobDeliveriesApi(APIView):
    @extend_schema(
        operation_id="jobs_deliveries",
        summary="The webhook deliveries of a job (its callbackUrl and your endpoints)",
        parameters=[JOB_ID_PARAMETER],
        responses={200: serializers.JobDeliveriesSerializer, **errors(404)},
    )
    def get(self, request: Request, job_id: str) -> Response:
        job, deliveries = selectors.deliveries_for_job(job_id=job_id, user=request.user)
        body = serializers.JobDeliveriesSerializer({"jobId": job.id, "deliveries": deliveries})
        return Response(body.data)


def _secret_response(secret: object) -> Response:
    response = Response(serializers.CallbackSecretSerializer(secret).data)
    add_never_cache_headers(response)  # a secret is never kept by a cache
    return response


class CallbackSecretApi(APIView):
    @extend_schema(
        operation_id="webhooks_secret",
        summary="Your secret for verifying deliveries to your jobs' callbackUrl",
        responses={200: serializers.CallbackSecretSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        return _secret_response(services.callback_secret_get(user=request.user))

    @extend_schema(
        operation_id="webhooks_secret_rotate",
        summary="Rotate that secret (the previous one keeps signing beside it for 24 h)",
        request=None,
        responses={200: serializers.CallbackSecretSerializer, **errors()},
    )
    def post(self, request: Request) -> Response:
        secret = services.callback_secret_get(user=request.user)
        return _secret_response(services.secret_rotate(secret))
