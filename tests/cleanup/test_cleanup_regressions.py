"""Regression test of issue 13 #5 (cleanup deletes a job that was just retried), seen failing
on main before the fix; through the real processes, HTTP and the Supabase fake (slow deletes)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chaos.stack import ApiClient, ChaosStack
from tests.conftest import wait_until
from tests.fakes.supabase_server import FakeSupabase

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_failed_job_retried_while_the_cleanup_deletes_its_files_is_kept_and_completes(
    live_stack: Callable[..., ChaosStack], fake_supabase: FakeSupabase
) -> None:
    stack = live_stack(supabase=fake_supabase)
    stack.start_web()
    alice = ApiClient(stack, stack.api_token("alice"))
    staff = ApiClient(stack, stack.api_token("root", staff=True))
    stack.start_worker("images0")
    stack.start_worker("cleanup", queues="cleanup")
    # The job fails for good after its original is stored: storage refuses its one image.
    fake_supabase.fail_json(
        "POST", "/twitter-post.", status=403, error="Unauthorized",
        message="new row violates row-level security policy",
    )  # fmt: skip
    job_id = alice.submit("Failed, then retried during the cleanup", platforms=["twitter-post"])
    body = alice.wait_status(job_id, "failed", "completed", timeout=60)
    assert body["status"] == "failed", body

    fake_supabase.slow(4, for_seconds=120, method="DELETE")  # the cleanup's deletes take time
    response = staff.request(
        "POST", "/api/jobs/cleanup", json={"type": "failed-generations", "olderThanDays": 0}
    )
    assert response.status_code == 202, response.text
    cleanup_id = response.json()["jobId"]
    wait_until(lambda: fake_supabase.seen("DELETE"), timeout=60, what="the cleanup's deletes")
    assert alice.request("POST", f"/api/jobs/{job_id}/retry").status_code == 200
    staff.wait_status(cleanup_id, "completed", "failed", timeout=60)

    body = alice.wait_status(job_id, "completed", "failed", timeout=90)  # 404 fails here
    assert body["status"] == "completed", body
