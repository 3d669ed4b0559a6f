"""The Celery application: configured from Django settings (CELERY_*), tasks autodiscovered.

Signal receivers (logging, database connections, the job id in logs, worker liveness,
shutdown) are connected by the apps that own them, in their AppConfig.ready(): Celery's
Django fixup sets Django up (and so runs ready()) before a worker or beat configures logging.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")

app = Celery("snapasset")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
