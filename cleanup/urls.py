from __future__ import annotations

from django.urls import path

from cleanup import api

urlpatterns = [
    path("jobs/cleanup", api.CleanupCreateApi.as_view(), name="job-cleanup"),
]
