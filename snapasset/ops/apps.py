from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operating SnapAsset: /health, /metrics and the metrics server, worker liveness, the
    embedded Redis of `make run`. It reads the jobs' state (ops -> jobs); jobs never
    imports ops."""

    name = "snapasset.ops"
    label = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from celery import signals

        from snapasset.ops import heartbeat, metrics_server

        # A worker's liveness key rides on Celery's own event heartbeat (see heartbeat.py).
        signals.worker_ready.connect(heartbeat.on_worker_ready, dispatch_uid="ops-hb-ready")
        signals.heartbeat_sent.connect(heartbeat.on_heartbeat_sent, dispatch_uid="ops-hb-sent")
        signals.worker_shutdown.connect(heartbeat.on_worker_shutdown, dispatch_uid="ops-hb-stop")
        signals.worker_ready.connect(metrics_server.start_for_worker, dispatch_uid="ops-metrics")
