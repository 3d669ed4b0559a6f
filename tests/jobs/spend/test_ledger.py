"""The ledger: each call recorded once, priced from the table, on /metrics, in the staff's
overview and in the admin."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from jobs.providers import ProviderImage
from jobs.providers.local import LocalProvider
from jobs.providers.openai import OpenAIProvider
from jobs.spend.ledger import (
    CallSpec,
    call_spec,
    ledger_call_finished,
    ledger_call_started,
    ledger_record_call,
    outcome_for_error,
)
from jobs.spend.models import CallOutcome, ProviderCall
from jobs.spend.prices import estimated_cost
from snapasset.core.exceptions import PermanentError, TransientError
from snapasset.ops.metrics import render_metrics
from tests.factories import JobFactory
from tests.fakes.openai_server import API_KEY, FakeOpenAI
from tests.ops.test_metrics import samples, value

MODEL = "gpt-image-2.6-sunburst"
SPEC = CallSpec(provider="openai", model=MODEL)


def metric(name: str, **labels: str) -> float:
    return value(samples(render_metrics(cluster_state=False).decode()), name, **labels)


def image(**fields: Any) -> ProviderImage:
    values = {"data": b"png", "request_id": "req_1", "model": MODEL, "size": "1024x1024"}
    return ProviderImage(**{**values, "quality": "medium", **fields})


# --- Prices -----------------------------------------------------------------------------------


def test_prices_come_from_the_table_by_model_size_and_quality() -> None:
    assert estimated_cost(model="gpt-image-1", size="1024x1024", quality="low") == Decimal("0.0110")
    assert estimated_cost(model="gpt-image-1", size="1536x1024", quality="high") == Decimal(
        "0.2500"
    )
    # An unknown quality ("auto" before the answer says) is priced at the fallback: high.
    assert estimated_cost(model="gpt-image-1", size="1024x1024", quality="auto") == Decimal(
        "0.1670"
    )
    assert estimated_cost(model="dall-e-2", size="1024x1024", quality="") == Decimal("0.0200")
    assert estimated_cost(model="local", size="1024x1024", quality="") == 0
    # A model the table does not name falls under "*".
    assert estimated_cost(model=MODEL, size="1024x1024", quality="medium") == Decimal("0.0420")


def test_prices_are_overridden_model_by_model(settings: Any) -> None:
    settings.OPENAI_IMAGE_PRICES = {MODEL: {"1024x1024": 0.05}}
    assert estimated_cost(model=MODEL, size="1024x1024", quality="high") == Decimal("0.0500")
    assert estimated_cost(model="gpt-image-1", size="1024x1024", quality="low") == Decimal("0.0110")
    settings.OPENAI_IMAGE_PRICES = {MODEL: {"1024x1024": "cheap"}}
    with pytest.raises(ImproperlyConfigured, match="not a number"):
        estimated_cost(model=MODEL, size="1024x1024", quality="high")
    settings.OPENAI_IMAGE_PRICES = {MODEL: {"512x512": 0.01}}
    with pytest.raises(ImproperlyConfigured, match="no price"):
        estimated_cost(model=MODEL, size="1024x1024", quality="high")


def test_a_call_spec_names_the_provider_and_its_model() -> None:
    openai_spec = call_spec(OpenAIProvider(api_key="k", model=MODEL))
    assert openai_spec == CallSpec(provider="openai", model=MODEL, quality="auto")
    assert call_spec(LocalProvider()) == CallSpec(provider="local", model="local", quality="")


# --- Recording ---------------------------------------------------------------------------------


def test_a_call_is_on_the_books_from_its_start_and_settled_once(
    alice: Any, django_capture_on_commit_callbacks: Any
) -> None:
    job = JobFactory(owner=alice, status="active")
    before = metric("snapasset_provider_calls_total", provider="openai", model=MODEL,
                    outcome="succeeded")  # fmt: skip
    spend_before = metric("snapasset_provider_spend_usd_total", provider="openai", model=MODEL)

    started = ledger_call_started(job=job, call_number=1, spec=SPEC)
    assert started.outcome == CallOutcome.CUT_SHORT and started.finished_at is None
    assert started.estimated_cost_usd == Decimal("0.1670")  # quality unknown yet: high
    assert started.user == alice
    # Started twice (a repeated step): still one row.
    assert ledger_call_started(job=job, call_number=1, spec=SPEC).pk == started.pk

    # The metrics move after the commit that settles the call, once.
    with django_capture_on_commit_callbacks(execute=True):
        assert ledger_call_finished(job=job, call_number=1, outcome="succeeded", image=image())
        assert not ledger_call_finished(job=job, call_number=1, outcome="failed")
    call = ProviderCall.objects.get()
    assert (call.outcome, call.request_id, call.quality) == ("succeeded", "req_1", "medium")
    assert call.estimated_cost_usd == Decimal("0.0420") and call.finished_at is not None

    after = metric("snapasset_provider_calls_total", provider="openai", model=MODEL,
                   outcome="succeeded")  # fmt: skip
    assert after == before + 1
    spend_after = metric("snapasset_provider_spend_usd_total", provider="openai", model=MODEL)
    assert spend_after == pytest.approx(spend_before + 0.042)


def test_a_call_answered_with_an_error_costs_nothing_and_keeps_its_request_id(alice: Any) -> None:
    job = JobFactory(owner=alice, status="active")
    ledger_call_started(job=job, call_number=1, spec=SPEC)
    error = PermanentError("rejected", request_id="req_err")
    error.__cause__ = type("StatusError", (Exception,), {"status_code": 400})()
    outcome = outcome_for_error(error)
    assert outcome == CallOutcome.FAILED
    ledger_call_finished(job=job, call_number=1, outcome=outcome, request_id="req_err",
                         error="moderation_blocked")  # fmt: skip
    call = ProviderCall.objects.get()
    assert (call.outcome, call.estimated_cost_usd, call.request_id) == ("failed", 0, "req_err")


def test_a_call_with_no_answer_is_cut_short_and_priced() -> None:
    assert outcome_for_error(TransientError("The image model did not answer in time")) == (
        CallOutcome.CUT_SHORT
    )
    assert outcome_for_error(KeyboardInterrupt()) == CallOutcome.CUT_SHORT


def test_a_call_whose_worker_died_is_settled_cut_short_by_the_next_call(alice: Any) -> None:
    job = JobFactory(owner=alice, status="active")
    ledger_call_started(job=job, call_number=1, spec=SPEC)  # the worker died here
    ledger_call_started(job=job, call_number=2, spec=SPEC)
    first, second = ProviderCall.objects.order_by("call_number")
    assert first.outcome == "cut_short" and first.finished_at is not None
    assert first.estimated_cost_usd == Decimal("0.1670")
    assert second.finished_at is None


def test_a_reuse_is_recorded_once_for_free(alice: Any) -> None:
    job = JobFactory(owner=alice, status="active")
    first = ledger_record_call(job=job, call_number=0, outcome="reused", spec=SPEC)
    again = ledger_record_call(job=job, call_number=0, outcome="reused", spec=SPEC)
    assert first.pk == again.pk and ProviderCall.objects.count() == 1
    assert first.outcome == "reused" and first.estimated_cost_usd == 0


def test_the_ledger_outlives_the_cleanup_of_its_job(alice: Any) -> None:
    job = JobFactory(owner=alice, status="completed")
    ledger_record_call(job=job, call_number=1, outcome="succeeded", spec=SPEC)
    job.delete()
    call = ProviderCall.objects.get()
    assert call.job is None and call.user == alice


def test_the_provider_returns_the_request_id_with_the_image(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider(api_key=API_KEY, model=MODEL, base_url=fake_openai.api_base,
                              timeout_seconds=5)  # fmt: skip
    result = provider.generate_image(prompt="A fox", image_type="vivid")
    assert result.data == fake_openai.default_image
    assert result.request_id.startswith("req_") and result.quality == "medium"
    assert (result.model, result.size) == (MODEL, "1024x1024")
    # The old entry point still returns the bytes alone.
    assert provider.generate(prompt="A fox", image_type="vivid") == fake_openai.default_image

    fake_openai.reject_content()
    with pytest.raises(PermanentError) as refused:
        provider.generate_image(prompt="A fox", image_type="vivid")
    assert (refused.value.request_id or "").startswith("req_")
    assert outcome_for_error(refused.value) == CallOutcome.FAILED


# --- Reading it: the staff's overview, the admin -----------------------------------------------


def record(job: Any, number: int, outcome: str, *, model: str = MODEL, days_ago: int = 0) -> None:
    at = timezone.now() - timedelta(days=days_ago)
    spec = CallSpec(provider="openai", model=model, quality="medium")
    ledger_record_call(job=job, call_number=number, outcome=outcome, spec=spec, at=at)


def test_staff_see_the_spend_in_the_stats_overview_and_users_do_not(
    staff_client: Any, alice_client: Any, alice: Any
) -> None:
    job = JobFactory(owner=alice, status="completed")
    record(job, 1, "cut_short")
    record(job, 2, "succeeded")
    record(job, 3, "failed")
    record(JobFactory(owner=alice), 0, "reused")
    record(JobFactory(owner=alice), 1, "succeeded", model="gpt-image-1", days_ago=3)

    spend = staff_client.get("/api/jobs/stats/overview").json()["spend"]
    assert spend["currency"] == "USD"
    assert spend["today"] == {"calls": 3, "reused": 1, "failed": 1, "estimatedCostUsd": 0.084}
    assert spend["last30Days"]["calls"] == 4
    assert spend["last30Days"]["estimatedCostUsd"] == pytest.approx(0.126)
    assert spend["todayByModel"] == [{"model": MODEL, "calls": 4, "estimatedCostUsd": 0.084}]

    body = alice_client.get("/api/jobs/stats/overview").json()
    assert "spend" not in body
    assert set(body) == {"imageGeneration", "fileCleanup", "timestamp"}


def test_the_admin_lists_calls_with_totals_per_user_and_day(
    client: Any, django_user_model: Any, alice: Any, bob: Any
) -> None:
    admin_user = django_user_model.objects.create_superuser("root", password="pw-root-12345")
    record(JobFactory(owner=alice), 1, "succeeded")
    record(JobFactory(owner=alice), 1, "succeeded")
    record(JobFactory(owner=bob), 1, "succeeded", days_ago=1)
    client.force_login(admin_user)

    page = client.get("/admin/spend/providercall/")
    assert page.status_code == 200
    summary = page.context["spend_summary"]
    assert summary["total"]["calls"] == 3
    assert summary["total"]["cost"] == Decimal("0.1260")
    rows = [(r["user__username"], r["calls"], r["cost"]) for r in summary["rows"]]
    assert rows == [("alice", 2, Decimal("0.0840")), ("bob", 1, Decimal("0.0420"))]
    assert b"spend-summary" in page.content

    # The summary follows the list's filters.
    filtered = client.get("/admin/spend/providercall/?q=bob")
    assert filtered.context["spend_summary"]["total"]["calls"] == 1
    # The ledger is read only.
    call = ProviderCall.objects.first()
    assert call is not None
    assert client.post(f"/admin/spend/providercall/{call.pk}/delete/").status_code == 403
