"""The Celery application: configured from Django settings (CELERY_*), tasks autodiscovered.

A worker imports only what it runs: the Celery app, the settings, the installed apps' models
and admin modules, the task modules and what they import; not the URL conf, the views, DRF's
views, authentication and schema generation (tests/core/test_worker_imports.py pins it).

Signal receivers (logging, database connections, the job id in logs, worker liveness,
shutdown) are connected by the apps that own them, in their AppConfig.ready(): Celery's
Django fixup sets Django up (and so runs ready()) before a worker or beat configures logging.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "snapasset.settings")
# Celery's Django fixup runs Django's system checks when a worker or beat starts, unless
# CELERY_SKIP_CHECKS is set. They check the code (models, admin, URL conf, DRF's and
# drf-spectacular's settings), not the process, and `manage.py migrate` runs them at every
# release (the Procfile's release, compose's web, the Dockerfile's command); the URL-conf
# check would import every view, and with them the web stack (DRF's views, knox, PyJWT,
# drf-spectacular), into each worker process (issue 18). Empty runs them in workers too.
os.environ["CELERY_SKIP_CHECKS"] = os.environ.get("CELERY_SKIP_CHECKS", "true")

app = Celery("snapasset")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
