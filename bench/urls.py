"""The project's URLs plus the baselines: a bare DRF view doing one INSERT and one Celery send."""

from __future__ import annotations

from django.urls import path
from django.utils import timezone
from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs.models import Job, JobKind
from snapasset.celery import app as celery_app
from snapasset.urls import handler404, handler500  # noqa: F401
from snapasset.urls import urlpatterns as project_urlpatterns


class BareSubmitApi(APIView):
    """The least a submit can do with the project's DRF stack (its token authentication):
    one INSERT, one Celery message."""

    def post(self, request: Request) -> Response:
        job = Job.objects.create(
            owner=request.user,
            kind=JobKind.IMAGE_GENERATION,
            prompt=str(request.data.get("prompt", ""))[:1000],
            platforms=["instagram-post"],
            enqueued_at=timezone.now(),
        )
        celery_app.send_task("bench.noop", args=[str(job.id)], queue="bench")
        return Response({"jobId": str(job.id)}, status=202)


class BareNoAuthSubmitApi(BareSubmitApi):
    """The same without authentication (the old Bull server had none), for context."""

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]

    def post(self, request: Request) -> Response:
        from django.contrib.auth import get_user_model

        request.user = get_user_model()(pk=int(request.headers.get("X-Bench-User", "1")))
        return super().post(request)


urlpatterns = [
    path("bench/bare", BareSubmitApi.as_view()),
    path("bench/bare-noauth", BareNoAuthSubmitApi.as_view()),
    *project_urlpatterns,
]
