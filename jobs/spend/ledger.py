"""The ledger: every call to the image model recorded once, with its estimated cost.

A call is written when it starts and settled when it returns, so a worker killed during the
call still leaves it on the books (``cut_short``, priced: the model may have billed it):

    call_number = <the job's generation_calls after counting this call>
    ledger_call_started(job=job, call_number=call_number, spec=call_spec(provider))
    try:
        image = provider.generate_image(...)
    except BaseException as exc:
        ledger_call_finished(job=job, call_number=call_number, outcome=outcome_for_error(exc),
                             request_id=getattr(exc, "request_id", None) or "", error=...)
        raise
    ledger_call_finished(job=job, call_number=call_number, outcome=CallOutcome.SUCCEEDED,
                         image=image)

A reuse (no call) is one ``ledger_record_call(..., outcome=CallOutcome.REUSED)`` with
call_number 0. Every function is idempotent per (job, call_number): a repeat returns the
row as it is, and an outcome is settled once (the metrics move once, after the commit).
These writes are facts about money, not about the job's attempt: they are never fenced by
the claim, and must not sit in a transaction that a lost claim rolls back.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.models import Job
from jobs.providers import ProviderImage
from jobs.spend import metrics
from jobs.spend.models import CallOutcome, ProviderCall
from jobs.spend.prices import estimated_cost

IMAGE_SIZE = "1024x1024"
# The precision of ProviderCall.estimated_cost_usd (decimal_places=4).
COST_PLACES = Decimal("0.0001")
ERROR_MAX_LENGTH = 200


@dataclass(frozen=True)
class CallSpec:
    """What a call will be priced by, known before it is made."""

    provider: str
    model: str
    size: str = IMAGE_SIZE
    # GPT image models choose the quality themselves ("auto"): priced at the fallback (high)
    # until the answer says which one it was.
    quality: str = "auto"


def call_spec(provider: Any) -> CallSpec:
    """The spec of a call to ``provider`` (jobs.providers): its name, model and our size."""
    paid = bool(getattr(provider, "paid", False))
    return CallSpec(
        provider=provider.name,
        model=str(getattr(provider, "model", provider.name)),
        quality="auto" if paid else "",
    )


def call_cost(*, outcome: str, model: str, size: str, quality: str) -> Decimal:
    """Failed calls (the provider answered with an error) and reuses cost nothing; a
    succeeded or cut-short call costs the price of its model, size and quality."""
    if outcome in (CallOutcome.FAILED, CallOutcome.REUSED):
        return Decimal("0")
    return estimated_cost(model=model, size=size, quality=quality)


def outcome_for_error(exc: BaseException) -> CallOutcome:
    """``failed`` when the provider answered with an HTTP error (not billed), otherwise
    ``cut_short``: a timeout, a lost connection, a time limit or an unusable answer may all
    have been billed."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    status = getattr(cause, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return CallOutcome.FAILED
    return CallOutcome.CUT_SHORT


def _create_or_get(*, job: Job, call_number: int, **fields: Any) -> tuple[ProviderCall, bool]:
    # The INSERT first (a new call is the common case: one statement); a repeat, or a
    # concurrent writer of the same (job, call_number), hits the unique constraint and the
    # row already there is the one. Inside a transaction the INSERT is in a savepoint (a
    # failed statement would abort it); alone it needs no BEGIN/COMMIT.
    in_block = transaction.get_connection().in_atomic_block
    try:
        with transaction.atomic() if in_block else nullcontext():
            call = ProviderCall.objects.create(
                job=job, user_id=job.owner_id, call_number=call_number, **fields
            )
    except IntegrityError:
        existing = ProviderCall.objects.filter(job=job, call_number=call_number).first()
        if existing is None:
            raise
        return existing, False
    return call, True


def _settle(call: ProviderCall, *, outcome: str, at: datetime, **fields: Any) -> bool:
    """Settle an open row once (a conditional UPDATE); the metrics move if this did it."""
    values = {
        "model": call.model,
        "size": call.size,
        "quality": call.quality,
        **{name: value for name, value in fields.items() if value is not None},
    }
    cost = call_cost(
        outcome=outcome, model=values["model"], size=values["size"], quality=values["quality"]
    )
    settled = ProviderCall.objects.filter(pk=call.pk, finished_at__isnull=True).update(
        outcome=outcome, finished_at=at, estimated_cost_usd=cost, **values
    )
    if settled:
        metrics.record_call_settled(
            provider=call.provider, model=values["model"], outcome=outcome, cost=cost
        )
        # The row as written (no read back).
        for name, value in {
            "outcome": outcome, "finished_at": at,
            "estimated_cost_usd": cost.quantize(COST_PLACES), **values
        }.items():  # fmt: skip
            setattr(call, name, value)
    return bool(settled)


def ledger_call_started(
    *, job: Job, call_number: int, spec: CallSpec, at: datetime | None = None
) -> ProviderCall:
    """Record a call about to be made: ``cut_short`` with its full price until it is settled.

    Earlier calls of the job that were never settled (their worker died during the call)
    are settled now as ``cut_short``, so they are counted once on /metrics too.
    """
    at = at or timezone.now()
    # The first call of a job has no earlier one to settle (no query to build or run).
    if call_number > 1:
        for stale in ProviderCall.objects.filter(
            job=job, call_number__lt=call_number, call_number__gt=0, finished_at__isnull=True
        ):
            _settle(stale, outcome=CallOutcome.CUT_SHORT, at=at)
    call, _ = _create_or_get(
        job=job,
        call_number=call_number,
        provider=spec.provider,
        model=spec.model,
        size=spec.size,
        quality=spec.quality,
        outcome=CallOutcome.CUT_SHORT,
        estimated_cost_usd=call_cost(
            outcome=CallOutcome.CUT_SHORT, model=spec.model, size=spec.size, quality=spec.quality
        ),
        created_at=at,
    )
    return call


def ledger_call_finished(
    *,
    job: Job,
    call_number: int,
    outcome: str,
    image: ProviderImage | None = None,
    request_id: str = "",
    error: str = "",
    at: datetime | None = None,
    call: ProviderCall | None = None,
) -> bool:
    """Settle the call (job, call_number) with its outcome; with the ``image`` the provider
    returned, its request id, size and quality (which price it). False when the call was
    not recorded as started or is already settled. ``call``: its row as
    ``ledger_call_started`` returned it (not read again; the settle is conditional anyway)."""
    if call is None or call.job_id != job.pk or call.call_number != call_number:
        call = ProviderCall.objects.filter(job=job, call_number=call_number).first()
    if call is None:
        return False
    return _settle(
        call,
        outcome=outcome,
        at=at or timezone.now(),
        request_id=(image.request_id if image is not None else request_id)[:128],
        error=error[:ERROR_MAX_LENGTH],
        size=image.size if image is not None else None,
        quality=image.quality if image is not None else None,
    )


def ledger_record_call(
    *,
    job: Job,
    call_number: int,
    outcome: str,
    spec: CallSpec,
    request_id: str = "",
    error: str = "",
    at: datetime | None = None,
) -> ProviderCall:
    """Record a call (or a reuse: ``outcome=reused``, ``call_number=0``) in one step,
    settled at once. Idempotent per (job, call_number): a repeat returns the first row; a
    row still open (started, never finished) is settled with this outcome."""
    at = at or timezone.now()
    call, created = _create_or_get(
        job=job,
        call_number=call_number,
        provider=spec.provider,
        model=spec.model,
        size=spec.size,
        quality=spec.quality,
        outcome=CallOutcome.CUT_SHORT,
        request_id=request_id[:128],
        error=error[:ERROR_MAX_LENGTH],
        created_at=at,
    )
    if created or call.finished_at is None:
        _settle(call, outcome=outcome, at=at)
    return call
