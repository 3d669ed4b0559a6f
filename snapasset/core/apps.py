from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app leans on: authentication, errors, throttling, parsers, middleware, logs.

    Imports run one way: wiring -> feature apps -> core; core imports no app of the project.
    """

    name = "snapasset.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from celery import signals

        from snapasset.core import receivers

        signals.setup_logging.connect(receivers.use_django_logging, dispatch_uid="core-logging")
        for signal in (signals.task_prerun, signals.task_postrun):
            signal.connect(
                receivers.release_database_connections, dispatch_uid="core-db-connections"
            )
        # The request id travels from the HTTP request into its tasks' messages and logs.
        signals.before_task_publish.connect(
            receivers.add_request_id_to_message, dispatch_uid="core-request-id-out"
        )
        signals.task_prerun.connect(
            receivers.enter_request_log_context, dispatch_uid="core-request-id-in"
        )
        signals.task_postrun.connect(
            receivers.leave_request_log_context, dispatch_uid="core-request-id-done"
        )
