from __future__ import annotations

from django.apps import AppConfig


class SpendConfig(AppConfig):
    name = "jobs.spend"
    label = "spend"
    verbose_name = "Spend"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery import signals

        from jobs.spend import limiter

        # In the worker's main process, before its pool forks: see prepare_paid_calls.
        signals.worker_init.connect(limiter.prepare_paid_calls, dispatch_uid="spend-prepare")
