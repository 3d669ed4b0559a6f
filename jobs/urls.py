from __future__ import annotations

from django.urls import path

from jobs import api
from jobs.live import views as live_views
from jobs.spend import api as spend_api
from jobs.webhooks import api as webhooks_api

urlpatterns = [
    path("jobs/generate", api.JobGenerateApi.as_view(), name="job-generate"),
    path("jobs/generate/batch", api.JobGenerateBatchApi.as_view(), name="job-generate-batch"),
    path("jobs/stats/overview", api.JobStatsApi.as_view(), name="job-stats"),
    path("jobs", api.JobListApi.as_view(), name="job-list"),
    path("jobs/<str:job_id>/result", api.JobResultApi.as_view(), name="job-result"),
    path("jobs/<str:job_id>/download.zip", api.JobDownloadApi.as_view(), name="job-download"),
    path("jobs/<str:job_id>/retry", api.JobRetryApi.as_view(), name="job-retry"),
    path(
        "jobs/<str:job_id>/deliveries",
        webhooks_api.JobDeliveriesApi.as_view(),
        name="job-deliveries",
    ),
    path("jobs/<str:job_id>", api.JobDetailApi.as_view(), name="job-detail"),
    path("webhooks/secret", webhooks_api.CallbackSecretApi.as_view(), name="webhooks-secret"),
    path("platforms", api.PlatformListApi.as_view(), name="platform-list"),
    path("usage", spend_api.UsageApi.as_view(), name="usage"),
    path("sse/jobs/<str:job_id>", live_views.JobEventStreamApi.as_view(), name="sse-job"),
    path("sse/stats", live_views.StatsEventStreamApi.as_view(), name="sse-stats"),
    path("sse/tickets", live_views.StreamTicketApi.as_view(), name="sse-tickets"),
]
