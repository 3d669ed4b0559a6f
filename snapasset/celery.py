"""The Celery application: configured from Django settings (CELERY_*), tasks autodiscovered."""

from __future__ import annotations

import logging
import os

from celery import Celery, signals

from snapasset.log_redaction import RedactSecretsFilter

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")

app = Celery("snapasset")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def redact_worker_logs(logger: logging.Logger, **kwargs: object) -> None:
    """Celery installs its own log handlers in workers: give them the redaction filter too."""
    for handler in logger.handlers:
        handler.addFilter(RedactSecretsFilter())
