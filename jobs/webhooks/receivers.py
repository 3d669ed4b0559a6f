"""Signal receivers of webhooks, connected in WebhooksConfig.ready()."""

from __future__ import annotations

from typing import Any

from jobs.webhooks import services


def on_job_finished(*, job_id: str, status: str, **_: Any) -> None:
    """A job ended (after its commit): record its deliveries and send them. Sent with
    send_robust, so an error here is logged and never touches the job."""
    services.deliveries_create_for_event(job_id=job_id, status=status)
