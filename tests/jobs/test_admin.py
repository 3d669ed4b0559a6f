"""The operators' admin via Django's test client: jobs, images, actions, task results; staff
see and do what their model permissions allow (API tokens: tests/core/test_api_tokens.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone
from django_celery_results.models import TaskResult

from jobs.models import GeneratedImage, Job, JobKind, JobStatus
from tests.factories import JobFactory

CHANGELIST = "/admin/jobs/job/"


OPERATOR_PERMISSIONS = ("view_job", "change_job", "view_generatedimage", "view_taskresult")


def grant(user: Any, *codenames: str) -> Any:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return type(user).objects.get(pk=user.pk)  # a fresh object: no cached permissions


def browser_for(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


@pytest.fixture
def staff_browser(staff: Any) -> Client:
    """An operator: staff with the permissions to see jobs and task results and run actions."""
    return browser_for(grant(staff, *OPERATOR_PERMISSIONS))


@pytest.fixture
def jobs(alice: Any, bob: Any) -> dict[str, Job]:
    done = JobFactory(owner=alice, status=JobStatus.COMPLETED, progress=100, attempts_made=1,
                      prompt="A lighthouse at dusk", finished_at=timezone.now())  # fmt: skip
    GeneratedImage.objects.create(
        job=done, platform_id="instagram-post", width=1080, height=1080, file_size=1234,
        storage_path="alice/x/instagram-post.png", url="/media/alice/x/instagram-post.png",
        format="png",
    )  # fmt: skip
    failed = JobFactory(owner=bob, status=JobStatus.FAILED, failed_reason="content policy",
                        prompt="A forbidden picture", finished_at=timezone.now())  # fmt: skip
    waiting = JobFactory(owner=bob, prompt="A cat on a windowsill")
    cleanup = JobFactory(owner=None, kind=JobKind.FILE_CLEANUP, prompt="", platforms=[])
    return {"done": done, "failed": failed, "waiting": waiting, "cleanup": cleanup}


def test_it_lists_jobs_with_status_owner_platforms_progress_attempts_and_age(
    staff_browser: Client, jobs: dict[str, Job]
) -> None:
    response = staff_browser.get(CHANGELIST)
    assert response.status_code == 200
    page = response.content.decode()
    for column in (
        "status",
        "owner",
        "kind",
        "platform_list",
        "progress_bar",
        "attempts_made",
        "age",
    ):
        assert f'class="sortable column-{column}' in page or f'class="column-{column}' in page, (
            column
        )
    assert str(jobs["done"].id)[:8] in page
    assert "instagram-post, twitter-post" in page
    assert '<progress value="100"' in page
    assert "alice" in page and "bob" in page


def test_it_filters_jobs_by_status_kind_and_date(
    staff_browser: Client, jobs: dict[str, Job]
) -> None:
    page = staff_browser.get(CHANGELIST, {"status__exact": "failed"}).content.decode()
    assert str(jobs["failed"].id)[:8] in page
    assert str(jobs["done"].id)[:8] not in page

    page = staff_browser.get(CHANGELIST, {"kind__exact": "file-cleanup"}).content.decode()
    assert str(jobs["cleanup"].id)[:8] in page
    assert str(jobs["waiting"].id)[:8] not in page

    today = timezone.now().date()
    page = staff_browser.get(
        CHANGELIST,
        {
            "created_at__gte": f"{today} 00:00:00+00:00",
            "created_at__lt": "2999-01-01 00:00:00+00:00",
        },
    ).content.decode()
    assert str(jobs["waiting"].id)[:8] in page
    page = staff_browser.get(
        CHANGELIST,
        {
            "created_at__gte": "2001-01-01 00:00:00+00:00",
            "created_at__lt": "2001-01-02 00:00:00+00:00",
        },
    ).content.decode()
    assert str(jobs["waiting"].id)[:8] not in page


@pytest.mark.parametrize(
    "term, expected",
    [
        (lambda j: str(j["failed"].id), "failed"),
        (lambda j: str(j["failed"].id)[:8], "failed"),
        (lambda j: str(j["failed"].generation_id), "failed"),
        (lambda j: "lighthouse", "done"),
        (lambda j: "alice", "done"),
    ],
    ids=["job id", "short job id", "generation id", "prompt", "owner username"],
)
def test_it_finds_jobs_by_id_generation_id_prompt_and_owner(
    staff_browser: Client, jobs: dict[str, Job], term: Any, expected: str
) -> None:
    page = staff_browser.get(CHANGELIST, {"q": term(jobs)}).content.decode()
    assert str(jobs[expected].id)[:8] in page
    others = [name for name in jobs if name != expected]
    for name in others:
        assert f">{str(jobs[name].id)[:8]}<" not in page


def test_the_job_page_shows_image_thumbnails_with_links(
    staff_browser: Client, jobs: dict[str, Job]
) -> None:
    response = staff_browser.get(f"{CHANGELIST}{jobs['done'].id}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<img src="/media/alice/x/instagram-post.png"' in page
    assert 'href="/media/alice/x/instagram-post.png"' in page
    assert "1080 x 1080" in page
    assert "A lighthouse at dusk" in page


def test_the_retry_action_requeues_failed_jobs_and_reports_the_others(
    staff_browser: Client, jobs: dict[str, Job]
) -> None:
    response = staff_browser.post(
        CHANGELIST,
        {"action": "retry_jobs", "_selected_action": [jobs["failed"].pk, jobs["done"].pk]},
        follow=True,
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Retried 1 job." in page
    assert f"Job {jobs['done'].id}: Only failed or cancelled jobs can be retried" in page
    jobs["failed"].refresh_from_db()
    assert jobs["failed"].status == JobStatus.WAITING
    assert jobs["failed"].failed_reason == ""


def test_the_cancel_action_cancels_pending_jobs_and_reports_finished_ones(
    staff_browser: Client, jobs: dict[str, Job]
) -> None:
    response = staff_browser.post(
        CHANGELIST,
        {"action": "cancel_jobs", "_selected_action": [jobs["waiting"].pk, jobs["done"].pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "Cancelled 1 job." in page
    assert f"Job {jobs['done'].id}: Job is already completed" in page
    jobs["waiting"].refresh_from_db()
    assert jobs["waiting"].status == JobStatus.CANCELLED


def test_celery_task_results_are_shown_beside_the_jobs(staff_browser: Client, db: None) -> None:
    TaskResult.objects.create(task_id="abc-123", task_name="jobs.generate_images", status="SUCCESS")
    index = staff_browser.get("/admin/").content.decode()
    assert "/admin/django_celery_results/taskresult/" in index
    assert "/admin/jobs/job/" in index
    assert "Operations" in index and "/metrics" in index
    page = staff_browser.get("/admin/django_celery_results/taskresult/").content.decode()
    assert "abc-123" in page


@pytest.mark.parametrize(
    "path", ["/admin/", CHANGELIST, "/admin/django_celery_results/taskresult/"]
)
def test_non_staff_users_are_refused(alice: Any, jobs: dict[str, Job], path: str) -> None:
    browser = Client()
    browser.force_login(alice)
    response = browser.get(path)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    anonymous = Client().get(path)
    assert anonymous.status_code == 302


def test_staff_cannot_add_or_delete_jobs_in_the_admin(
    staff_browser: Client, jobs: dict[str, Job]
) -> None:
    assert staff_browser.get(f"{CHANGELIST}add/").status_code == 403
    assert staff_browser.get(f"{CHANGELIST}{jobs['done'].id}/delete/").status_code == 403


@pytest.mark.parametrize(
    "path",
    [CHANGELIST, "/admin/django_celery_results/taskresult/", "/admin/auth/user/"],
)
def test_staff_without_permissions_see_nothing_but_the_admin_index(
    staff: Any, jobs: dict[str, Job], path: str
) -> None:
    browser = browser_for(staff)
    index = browser.get("/admin/")
    assert index.status_code == 200
    assert CHANGELIST not in index.content.decode()
    assert browser.get(path).status_code == 403
    assert browser.get(f"{CHANGELIST}{jobs['done'].id}/change/").status_code == 403


def test_staff_who_may_only_view_jobs_cannot_run_the_actions(
    staff: Any, jobs: dict[str, Job]
) -> None:
    browser = browser_for(grant(staff, "view_job"))
    page = browser.get(CHANGELIST).content.decode()
    assert str(jobs["failed"].id)[:8] in page
    assert "retry_jobs" not in page
    browser.post(CHANGELIST, {"action": "retry_jobs", "_selected_action": [jobs["failed"].pk]})
    jobs["failed"].refresh_from_db()
    assert jobs["failed"].status == JobStatus.FAILED
    # Images are their own model: without view_generatedimage the job page has none.
    detail = browser.get(f"{CHANGELIST}{jobs['done'].id}/change/").content.decode()
    assert "A lighthouse at dusk" in detail
    assert "/media/alice/x/instagram-post.png" not in detail
