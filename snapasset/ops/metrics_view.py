"""GET /metrics on the web's port: this machine's metrics (snapasset.ops.metrics) for staff
or the bearer of METRICS_TOKEN. A worker serves the same without auth on an internal port
(snapasset.ops.metrics_server), without this module or the web stack it leans on.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.exceptions import APIException
from rest_framework.request import Request

from snapasset.core.authentication import BearerTokenAuthentication, TokenAuthentication
from snapasset.ops.metrics import render_metrics


def _authorized(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    if header:
        drf_request = Request(
            request, authenticators=[TokenAuthentication(), BearerTokenAuthentication()]
        )
        try:
            api_user = drf_request.user
        except APIException:
            return False
        return bool(api_user and api_user.is_authenticated and api_user.is_staff)
    return False


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: staff (session or API token) or `Authorization: Bearer $METRICS_TOKEN`."""
    if not _authorized(request):
        return JsonResponse(
            {"error": "Staff credentials or the metrics token are required"}, status=401
        )
    return HttpResponse(render_metrics(), content_type=CONTENT_TYPE_LATEST)
