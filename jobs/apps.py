from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery import signals

        # Imported here, in the worker's main process before its pool forks: the shutdown
        # flag lives in memory shared with the pool processes (see shutdown.py).
        from jobs import receivers, shutdown

        signals.task_prerun.connect(receivers.enter_job_log_context, dispatch_uid="jobs-log-in")
        signals.task_postrun.connect(receivers.leave_job_log_context, dispatch_uid="jobs-log-out")
        signals.worker_init.connect(receivers.configure_malloc, dispatch_uid="jobs-malloc")
        signals.worker_process_init.connect(
            receivers.configure_malloc, dispatch_uid="jobs-malloc-pool"
        )
        signals.task_postrun.connect(receivers.release_freed_memory, dispatch_uid="jobs-trim")
        signals.worker_shutting_down.connect(
            shutdown.on_worker_shutting_down, dispatch_uid="jobs-shutdown"
        )
