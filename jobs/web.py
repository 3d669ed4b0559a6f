"""The browser page: sign in with a Django session, then one page that speaks the JSON API.

The page is server-rendered once (form, platforms, who is signed in); everything after that
(submit, live progress, gallery, history, staff queue) is hand-written JS in
jobs/static/jobs/ calling the same /api/ endpoints and SSE streams as any other client.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.csrf import ensure_csrf_cookie

from jobs.models import ImageFormat, ImageType
from jobs.platforms import PLATFORMS

HISTORY_LIMIT = 20


@login_required
@ensure_csrf_cookie
def index(request: HttpRequest) -> HttpResponse:
    context = {
        "platforms": list(PLATFORMS.values()),
        "image_types": ImageType.choices,
        "formats": ImageFormat.choices,
        "is_staff": request.user.is_staff,
        "history_limit": HISTORY_LIMIT,
        # The `reuse` option (jobs/spend/reuse.py); off when REUSE_WINDOW_HOURS is 0.
        "reuse_window_hours": settings.REUSE_WINDOW_HOURS,
        "reuse_default": settings.GENERATION_REUSE_DEFAULT,
    }
    return render(request, "jobs/index.html", context)


urlpatterns = [
    path("", index, name="web-index"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
]
