from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "jobs.webhooks"
    label = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.signals import job_finished
        from jobs.webhooks import receivers

        job_finished.connect(receivers.on_job_finished, dispatch_uid="webhooks-job-finished")
