from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.static import serve

from snapasset.health import health

urlpatterns = [
    path("health", health, name="health"),
    path("api/", include("jobs.urls")),
    path("admin/", admin.site.urls),
    path("", include("jobs.web")),
]

if settings.SERVE_MEDIA:
    # Local-disk storage: the web process serves generated files (Supabase serves its own).
    urlpatterns += [
        re_path(
            r"^%s(?P<path>.*)$" % settings.MEDIA_URL.lstrip("/"),
            serve,
            {"document_root": settings.MEDIA_ROOT},
        )
    ]


def json_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"error": "Not found"}, status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": "Internal server error"}, status=500)


handler404 = json_not_found
handler500 = json_server_error
