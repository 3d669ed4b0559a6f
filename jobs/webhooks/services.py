"""Writes of webhooks: a job's callbackUrl, the deliveries of an event, each attempt, the
dispatcher of due deliveries, secrets and redelivery.

A delivery row says what to send, where, and when the next attempt is due. Celery messages
only say "attempt delivery X": an attempt claims the row (so a duplicate message does
nothing), POSTs once, and records the outcome; a failure schedules the next attempt with a
countdown (short delays) or leaves it to the dispatcher (long ones, and any message the
broker lost). Nothing ever sleeps in a worker.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.utils.encoders import JSONEncoder

from jobs import outbox
from jobs.models import Job, JobStatus
from jobs.serializers import JobDetailSerializer, JobResultSerializer
from jobs.webhooks import signing, ssrf
from jobs.webhooks.models import (
    CallbackSecret,
    DeliveryStatus,
    EventType,
    JobCallback,
    SigningSecret,
    WebhookDelivery,
    WebhookEndpoint,
)
from snapasset.core.exceptions import ApplicationError, InvalidStateError, parse_retry_after
from snapasset.core.log_redaction import redact_secrets

logger = logging.getLogger(__name__)

DELIVER_TASK = "webhooks.deliver"
EVENT_FOR_STATUS = {
    JobStatus.COMPLETED: EventType.JOB_COMPLETED,
    JobStatus.FAILED: EventType.JOB_FAILED,
    JobStatus.CANCELLED: EventType.JOB_CANCELLED,
}
USER_AGENT = "SnapAsset-Webhooks/1.0"
# Only the start of a receiver's answer is read (and kept for the admin when it is an
# error): a receiver cannot make a worker download a large body.
RESPONSE_READ_MAX_BYTES = 4096
# After a rotation, the previous secret signs too (beside the new one) for this long.
SECRET_ROTATION_GRACE = timedelta(hours=24)
# Longest wait a receiver's Retry-After may ask for.
RETRY_AFTER_MAX_SECONDS = 24 * 3600


# The claim, the retry schedule's bookkeeping and the dispatcher are the shared outbox's (the
# dispatcher is its drain, run every WEBHOOK_DISPATCH_INTERVAL_SECONDS).
OUTBOX = outbox.Outbox(
    model=WebhookDelivery,
    state_field="status",
    pending=DeliveryStatus.PENDING,
    succeeded=DeliveryStatus.SUCCEEDED,
    succeeded_at_field="succeeded_at",
    task=DELIVER_TASK,
    message_id=str,
    broker_down_log="broker unavailable; webhook delivery %s waits for the dispatcher",
)


# --- A job's callbackUrl (at submission) -----------------------------------------------------


def callback_url_check(url: str) -> str:
    """The callbackUrl of a submission, or a 400 naming the field when the SSRF guard (or
    the URL's form) refuses it. Call it before the submission's transaction: it resolves
    the host."""
    try:
        ssrf.check_url(url)
    except ssrf.TargetError as exc:
        raise ApplicationError(
            "Invalid callbackUrl", extra={"details": {"callbackUrl": [str(exc)]}}
        ) from None
    return url


def job_callback_create(*, job: Job, url: str) -> JobCallback:
    return JobCallback.objects.create(job=job, url=url)


# --- Secrets ------------------------------------------------------------------------------


def callback_secret_get(*, user: Any) -> CallbackSecret:
    secret, _ = CallbackSecret.objects.get_or_create(owner=user)
    return secret


@transaction.atomic
def secret_rotate(holder: SigningSecret) -> SigningSecret:
    """A new secret; the previous one keeps signing beside it for SECRET_ROTATION_GRACE."""
    model: Any = type(holder)
    holder = model.objects.select_for_update().get(pk=holder.pk)
    holder.previous_secret = holder.secret
    holder.previous_secret_expires_at = timezone.now() + SECRET_ROTATION_GRACE
    holder.secret = signing.new_secret()
    holder.save()
    return holder


def secrets_in_use(holder: SigningSecret, *, now: datetime) -> list[str]:
    in_use = [holder.secret]
    expires = holder.previous_secret_expires_at
    if holder.previous_secret and expires is not None and expires > now:
        in_use.append(holder.previous_secret)
    return in_use


# --- An event: the deliveries of a finished job ---------------------------------------------


def event_payload(*, job: Job, event_type: str) -> str:
    """The body of an event: `{type, timestamp, data}` (Standard Webhooks), ``data`` being
    what GET /api/jobs/{jobId} answers, plus `result` (as GET .../result has it) when the
    job completed."""
    data = dict(JobDetailSerializer().to_representation(job))
    if job.status == JobStatus.COMPLETED:
        data["result"] = JobResultSerializer(job).data["result"]
    when = job.finished_at or timezone.now()
    envelope = {"type": event_type, "timestamp": when.isoformat(), "data": data}
    return json.dumps(envelope, cls=JSONEncoder, separators=(",", ":"), ensure_ascii=False)


def _has_targets(job_id: str) -> bool:
    """Whether job ``job_id`` has a callbackUrl or its owner an enabled endpoint, as one
    plain statement (the ORM's annotated query cost more CPU to build than to run)."""
    quote = connection.ops.quote_name
    callback_job: Any = JobCallback._meta.get_field("job")
    endpoint_owner: Any = WebhookEndpoint._meta.get_field("owner")
    job_owner: Any = Job._meta.get_field("owner")
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM {quote(JobCallback._meta.db_table)}"
        f" WHERE {quote(callback_job.column)} = %s)"
        f" OR EXISTS (SELECT 1 FROM {quote(WebhookEndpoint._meta.db_table)} AS e"
        f" JOIN {quote(Job._meta.db_table)} AS j"
        f" ON e.{quote(endpoint_owner.column)} = j.{quote(job_owner.column)}"
        f" WHERE j.{quote(str(Job._meta.pk.column))} = %s AND e.enabled)"
    )
    job_pk = Job._meta.pk.get_db_prep_value(job_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [job_pk, job_pk])
        row = cursor.fetchone()
    return bool(row and row[0])


def deliveries_create_for_event(*, job_id: str, status: str) -> list[WebhookDelivery]:
    """One delivery per target of a job that just ended (its callbackUrl, its owner's
    enabled endpoints that want the event), all with one new webhook-id, sent at once.

    Runs after the job's final status committed (jobs.signals.job_finished). With the
    broker down the rows stay pending and the dispatcher sends them."""
    event_type = EVENT_FOR_STATUS.get(JobStatus(status)) if status in JobStatus.values else None
    if event_type is None:
        return []
    # One small query when there is nothing to send (the common case, on every finished
    # job in the worker): whether the job has a callback or its owner an enabled endpoint.
    if not _has_targets(job_id):
        return []
    job = Job.objects.select_related("owner").filter(pk=job_id).first()
    if job is None or job.owner is None:
        return []
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(owner=job.owner, enabled=True)
        if endpoint.wants(event_type)
    ]
    callback = JobCallback.objects.filter(job=job).first()
    targets: dict[str, WebhookEndpoint | None] = {e.url: e for e in endpoints}
    if callback is not None:
        # A callbackUrl that is also a registered endpoint gets the event once, signed
        # with that endpoint's secret.
        targets.setdefault(callback.url, None)
    if not targets:
        return []

    payload = event_payload(job=job, event_type=event_type)
    webhook_id = signing.new_webhook_id()
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            webhook_id=webhook_id,
            job=job,
            endpoint=endpoint,
            url=url,
            event_type=event_type,
            payload=payload,
            next_attempt_at=now,
            enqueued_at=now,
        )
        for url, endpoint in targets.items()
    )
    for delivery in deliveries:
        if not delivery_send_message(delivery_id=str(delivery.pk)):
            # The broker is down: leave the rest to the dispatcher rather than wait for
            # each connection attempt to time out.
            pending = [d.pk for d in deliveries if d.pk != delivery.pk]
            WebhookDelivery.objects.filter(pk__in=pending).update(enqueued_at=None)
            break
    return deliveries


def delivery_send_message(*, delivery_id: str, countdown: float | None = None) -> bool:
    """Send the Celery message of an attempt. A broker outage is logged, not raised: the row
    says it is due, and the dispatcher sends it once the broker is back."""
    return outbox.send_message(OUTBOX, delivery_id, countdown=countdown)


# --- One attempt ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _claim(delivery_id: str, *, now: datetime) -> WebhookDelivery | None:
    """The delivery, counted as attempted and held for the attempt, when it is pending, due
    and not held by another attempt; None otherwise (a duplicate or stale message)."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("endpoint", "job__owner")
            .filter(pk=delivery_id, status=DeliveryStatus.PENDING)
            .first()
        )
        if delivery is None or not outbox.claimable(delivery, now=now):
            return None
        if delivery.endpoint is not None and not delivery.endpoint.enabled:
            _finish(delivery, DeliveryStatus.FAILED, error="Not sent: the endpoint is disabled.")
            return None
        # Past the request's timeout and the task's time limit.
        outbox.hold(delivery, now=now, seconds=3 * settings.WEBHOOK_TIMEOUT_SECONDS + 30)
        return delivery


def _finish(delivery: WebhookDelivery, status: str, *, error: str = "") -> None:
    outbox.finish(OUTBOX, delivery, status, error=error)


def _signing_secrets(delivery: WebhookDelivery, *, now: datetime) -> list[str]:
    if delivery.endpoint is not None:
        return secrets_in_use(delivery.endpoint, now=now)
    return secrets_in_use(callback_secret_get(user=delivery.job.owner), now=now)


def delivery_attempt(*, delivery_id: str) -> None:
    """One attempt of a delivery: claim, check the target, POST, record the outcome."""
    now = timezone.now()
    delivery = _claim(delivery_id, now=now)
    if delivery is None:
        return
    try:
        target = ssrf.check_url(delivery.url)
    except ssrf.ForbiddenTarget as exc:
        # Checked at submission, refused now: the name's answer changed (rebinding, or a
        # record pointed inside). Never retried.
        _record(delivery, Outcome(None, f"Refused by the SSRF guard: {exc}"), final=True)
        return
    except ssrf.TargetError as exc:
        _record(delivery, Outcome(None, str(exc)))
        return
    headers = signing.signed_headers(
        secrets_=_signing_secrets(delivery, now=now),
        webhook_id=delivery.webhook_id,
        timestamp=now,
        body=delivery.payload,
    )
    _record(delivery, post(target, body=delivery.payload.encode(), headers=headers))


def post(target: ssrf.Target, *, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST ``body`` to the checked address of ``target``: no redirect followed, no proxy
    from the environment, short timeouts, at most RESPONSE_READ_MAX_BYTES of the answer."""
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    url, pinned_headers, extensions = ssrf.pinned_request(target)
    request_headers = {
        **pinned_headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **headers,
    }
    deadline = time.monotonic() + timeout
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            request = client.build_request(
                "POST", url, content=body, headers=request_headers, extensions=extensions
            )
            response = client.send(request, stream=True)
            try:
                start = b""
                for chunk in response.iter_raw():
                    start += chunk
                    if len(start) >= RESPONSE_READ_MAX_BYTES or time.monotonic() > deadline:
                        break
            finally:
                response.close()
    except SoftTimeLimitExceeded:
        return Outcome(None, f"Timed out (task time limit, {timeout} s per request)")
    except httpx.TimeoutException as exc:
        return Outcome(None, f"Timed out after {timeout} s ({exc.__class__.__name__})")
    except httpx.HTTPError as exc:
        return Outcome(None, f"{exc.__class__.__name__}: {exc}")
    code = response.status_code
    if 200 <= code < 300:
        return Outcome(code, "")
    text = start[:RESPONSE_READ_MAX_BYTES].decode("utf-8", errors="replace")
    error = f"HTTP {code} {response.reason_phrase}".strip()
    if 300 <= code < 400:
        error += " (redirects are not followed; register the final URL)"
    if text.strip():
        error += f": {text.strip()}"
    return Outcome(code, error, retry_after=parse_retry_after(response.headers))


def retry_delay(*, attempts: int, retry_after: float | None) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones (None: give up). The
    schedule's delay plus up to 10% jitter, never sooner than the receiver's Retry-After."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1] * random.uniform(1.0, 1.1)
    if retry_after:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX_SECONDS))
    return delay


def _record(delivery: WebhookDelivery, outcome: Outcome, *, final: bool = False) -> None:
    delivery.last_status_code = outcome.status_code
    error = redact_secrets(outcome.error)
    if outcome.succeeded:
        _finish(delivery, DeliveryStatus.SUCCEEDED)
        logger.info("webhook %s delivered to %s", delivery.webhook_id, delivery.url)
        return
    if outcome.status_code == 410:
        # Standard Webhooks: the receiver wants no more; stop sending to this endpoint.
        if delivery.endpoint is not None:
            WebhookEndpoint.objects.filter(pk=delivery.endpoint.pk).update(
                enabled=False,
                disabled_reason=f"Answered 410 Gone on {timezone.now():%Y-%m-%d %H:%M:%S} UTC.",
                updated_at=timezone.now(),
            )
        _finish(delivery, DeliveryStatus.FAILED, error=error)
        logger.warning("webhook %s: %s answered 410 Gone", delivery.webhook_id, delivery.url)
        return
    delay = (
        None if final else retry_delay(attempts=delivery.attempts, retry_after=outcome.retry_after)
    )
    if delay is None:
        _finish(delivery, DeliveryStatus.FAILED, error=error)
        logger.warning(
            "webhook %s to %s failed after %d attempts: %s",
            delivery.webhook_id, delivery.url, delivery.attempts, error,
        )  # fmt: skip
        return
    logger.info(
        "webhook %s to %s: attempt %d failed (%s); next in %.0f s",
        delivery.webhook_id, delivery.url, delivery.attempts, error, delay,
    )  # fmt: skip
    outbox.retry_later(OUTBOX, delivery, error=error, delay=delay)


# --- The dispatcher (beat) and redelivery (admin) -------------------------------------------


def deliveries_dispatch_due() -> dict[str, int]:
    """Send the message of every pending delivery that is due and has none on its way: the
    long retry delays, and the messages a broker outage or a lost message left behind."""
    sent = outbox.drain_due(OUTBOX)
    if sent:
        logger.info("webhook dispatcher: sent %d due deliveries", sent)
    return {"sent": sent}


def delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (same webhook-id and body), starting its retry schedule over."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("endpoint")
            .get(pk=delivery.pk)
        )
        if delivery.endpoint is not None and not delivery.endpoint.enabled:
            raise InvalidStateError("The endpoint is disabled; enable it first")
        restarted: WebhookDelivery = outbox.start_over(OUTBOX, delivery)
    return restarted


def endpoint_enable(*, endpoint: WebhookEndpoint) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=True, disabled_reason="", updated_at=timezone.now()
    )
