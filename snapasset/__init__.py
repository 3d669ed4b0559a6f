from __future__ import annotations

from snapasset.celery import app as celery_app
from snapasset.core.logs import install_excepthooks

# Every process (web, worker, beat, flower, manage.py) logs its uncaught exceptions.
install_excepthooks()

__all__ = ("celery_app",)
