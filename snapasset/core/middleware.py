"""Refuse request bodies over DATA_UPLOAD_MAX_MEMORY_SIZE with 413 before reading them."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"error": "Invalid Content-Length header"}, status=400)
        if limit is not None and length > limit:
            return JsonResponse(
                {"error": f"Request body is larger than {limit // 1024} KiB"}, status=413
            )
        return self.get_response(request)
