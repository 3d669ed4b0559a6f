"""The spend's Prometheus counters, multiprocess like jobs/metrics.py: each worker process
writes its own file under PROMETHEUS_MULTIPROC_DIR and /metrics sums them.

``snapasset_provider_calls_total{provider, model, outcome}`` and
``snapasset_provider_spend_usd_total{provider, model}`` move once per ledger row, when its
outcome is settled (jobs/spend/ledger.py), after the commit that settles it.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import transaction
from prometheus_client import Counter

logger = logging.getLogger(__name__)

PROVIDER_CALLS = Counter(
    "snapasset_provider_calls",
    "Calls to the image model by outcome (reused: an earlier original, no call)",
    ["provider", "model", "outcome"],
)
PROVIDER_SPEND = Counter(
    "snapasset_provider_spend_usd",
    "Estimated cost of the calls to the image model (USD, from the price table)",
    ["provider", "model"],
)
PROVIDER_RATE_LIMITED = Counter(
    "snapasset_provider_rate_limited",
    "429 answers of the image model that made every worker wait (the shared limiter)",
    ["provider"],
)
LIMITER_WAITS = Counter(
    "snapasset_provider_limiter_waits",
    "Paid calls told to wait by the shared limiter, by what was full",
    ["provider", "reason"],
)


def record_call_settled(*, provider: str, model: str, outcome: str, cost: Decimal) -> None:
    def record() -> None:
        try:
            PROVIDER_CALLS.labels(provider=provider, model=model, outcome=outcome).inc()
            PROVIDER_SPEND.labels(provider=provider, model=model).inc(float(cost))
        except Exception:  # metrics never break a job
            logger.warning("could not record a provider call metric", exc_info=True)

    transaction.on_commit(record)


def record_rate_limited(*, provider: str) -> None:
    PROVIDER_RATE_LIMITED.labels(provider=provider).inc()


def record_limiter_wait(*, provider: str, reason: str) -> None:
    LIMITER_WAITS.labels(provider=provider, reason=reason).inc()
