from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operating SnapAsset: /health, /metrics and the metrics server, worker liveness, the
    embedded Redis of `make run`. It reads the jobs' state (ops -> jobs); jobs never
    imports ops."""

    name = "snapasset.ops"
    label = "ops"
    verbose_name = "Operations"
