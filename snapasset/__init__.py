from __future__ import annotations

from snapasset import env

# Before anything reads the environment (Celery, Flower's options, the settings): `.env`,
# then prometheus_client's multiprocess mode, before any metric of ours exists.
env.load()
env.use_multiprocess_metrics()

from snapasset.celery import app as celery_app  # noqa: E402
from snapasset.core.logs import install_excepthooks  # noqa: E402

# Every process (web, worker, beat, flower, manage.py) logs its uncaught exceptions.
install_excepthooks()

__all__ = ("celery_app",)
