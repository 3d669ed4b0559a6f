"""Task state that earns its write: every task's state in django-celery-results' table,
written one upsert per state change, linked to its job by the job id in its arguments (not
its task id); the job's admin page shows its tasks, the dead-letter list shows failed jobs
with their errors and tracebacks and retries them; Flower shows the same states."""

from __future__ import annotations

import json
import sys
import traceback
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from jobs import task_results
from jobs.models import Job, JobStatus
from snapasset.celery import app
from snapasset.ops.migrations import __path__ as migrations_path
from tests.conftest import ManagedProcess, api_key_for, child_env, free_port, make_user, wait_until
from tests.factories import JobFactory
from tests.fakes.fixtures import openai_env

FLOWER_AUTH = ("ops", "flower-pass-for-tests")


def grant(user: Any, *codenames: str) -> Any:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return type(user).objects.get(pk=user.pk)


def browser_for(user: Any) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def job_request(job_id: str, *, retries: int = 0, task_id: str | None = None) -> Any:
    """What a worker passes the backend: the running task's request."""
    return SimpleNamespace(
        id=task_id or str(uuid.uuid4()), task="jobs.generate_images", args=[job_id], kwargs={},
        hostname="images@test", retries=retries, children=[], periodic_task_name=None,
    )  # fmt: skip


def store(task_id: str, state: str, request: Any, exc: BaseException | None = None) -> None:
    tb = None
    if exc is not None:
        try:
            raise exc  # as in a task: with its traceback
        except BaseException as raised:
            tb = "".join(traceback.format_exception(raised))
    app.backend.store_result(task_id, exc, state, traceback=tb, request=request)


def test_each_state_change_is_one_statement_and_the_row_links_to_its_job(db: None) -> None:
    job_id = str(uuid.uuid4())
    task_id = str(uuid.uuid4())  # not the job id: delivery may use fresh task ids
    with CaptureQueriesContext(connection) as started:
        store(task_id, "STARTED", job_request(job_id, task_id=task_id))
    store(task_id, "RETRY", job_request(job_id, task_id=task_id), RuntimeError("upstream 503"))
    with CaptureQueriesContext(connection) as done:
        store(task_id, "SUCCESS", job_request(job_id, retries=1, task_id=task_id))
    assert len(started) == len(done) == 1, [q["sql"] for q in started.captured_queries]

    [row] = task_results.job_task_results(job_id)
    assert row.task_id == task_id and row.status == "SUCCESS"
    assert row.task_args == json.dumps([job_id], separators=(",", ":"))
    assert row.task_kwargs is None and row.worker == "images@test"
    assert task_results.task_retries(row) == 1
    assert row.date_started is not None and task_results.task_runtime(row) is not None
    # Celery reads it back as it wrote it.
    assert app.AsyncResult(task_id).state == "SUCCESS"
    assert app.AsyncResult(task_id).args == [job_id]


def test_rows_the_stock_backend_wrote_link_too(db: None) -> None:
    job_id = str(uuid.uuid4())
    TaskResult.objects.create(
        task_id="old-1", task_name="jobs.generate_images", status="SUCCESS",
        task_args=json.dumps(repr([job_id])), task_kwargs=json.dumps(repr({})),
    )  # fmt: skip
    TaskResult.objects.create(
        task_id="other", task_name="jobs.generate_images", status="SUCCESS",
        task_args=json.dumps([str(uuid.uuid4())]),
    )  # fmt: skip
    assert [t.task_id for t in task_results.job_task_results(job_id)] == ["old-1"]


def test_a_failure_keeps_its_error_and_traceback(db: None) -> None:
    job_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    store(task_id, "STARTED", job_request(job_id, task_id=task_id))
    store(task_id, "FAILURE", job_request(job_id, task_id=task_id), KeyError("platform"))
    [row] = task_results.job_task_results(job_id)
    assert row.status == "FAILURE" and "KeyError" in row.traceback
    assert task_results.task_error(row) == task_results.TaskError("KeyError", "platform")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plan of Postgres")
def test_a_jobs_tasks_are_found_through_the_index(db: None) -> None:
    assert "ops_taskresult_job_args_idx" in "".join(
        path.read_text() for path in Path(migrations_path[0]).glob("0*.py")
    )
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        sql, params = task_results.job_task_results(uuid.uuid4()).query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "ops_taskresult_job_args_idx" in plan, plan


def test_the_job_page_shows_its_tasks_and_the_dead_letter_list_its_failure(
    staff: Any, alice: Any
) -> None:
    failed = JobFactory(owner=alice, status=JobStatus.FAILED, failed_reason="Internal error")
    done = JobFactory(owner=alice, status=JobStatus.COMPLETED, progress=100)
    task_id = str(uuid.uuid4())
    store(task_id, "STARTED", job_request(str(failed.pk), task_id=task_id))
    store(task_id, "FAILURE", job_request(str(failed.pk), task_id=task_id), KeyError("nope"))
    browser = browser_for(grant(staff, "view_job", "view_failedjob", "change_failedjob"))

    page = browser.get(f"/admin/jobs/job/{failed.pk}/change/").content.decode()
    assert task_id in page and "FAILURE" in page and "KeyError: nope" in page
    assert "Traceback (most recent call last)" in page

    dead = browser.get("/admin/ops/failedjob/").content.decode()
    assert str(failed.pk) in dead and "Internal error" in dead and "KeyError: nope" in dead
    assert str(done.pk) not in dead
    detail = browser.get(f"/admin/ops/failedjob/{failed.pk}/change/").content.decode()
    assert "Traceback (most recent call last)" in detail

    response = browser.post(
        "/admin/ops/failedjob/",
        {"action": "retry_jobs", "_selected_action": [str(failed.pk)]},
        follow=True,
    )
    assert "Retried 1 job." in response.content.decode()
    assert Job.objects.get(pk=failed.pk).status == JobStatus.WAITING


def test_the_dead_letter_list_needs_its_permission(staff: Any) -> None:
    assert browser_for(staff).get("/admin/ops/failedjob/").status_code == 403
    viewer = browser_for(grant(staff, "view_failedjob"))
    assert viewer.get("/admin/ops/failedjob/").status_code == 200


@pytest.mark.e2e
def test_flower_and_the_admin_show_the_same_task_states(
    start_worker: Any, start_web: Any, fake_openai: Any, tmp_path: Path
) -> None:
    flower_port = free_port()
    flower = ManagedProcess(
        "flower",
        [sys.executable, "-m", "celery", "-A", "snapasset", "flower", f"--port={flower_port}",
         "--address=127.0.0.1"],
        child_env(FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH)),
        tmp_path,
    )  # fmt: skip
    flower_base = f"http://127.0.0.1:{flower_port}"
    try:
        wait_until(lambda: _answers(f"{flower_base}/healthcheck"), timeout=60, what="Flower")
        env = {**openai_env(fake_openai), "JOB_RETRY_BACKOFF_SECONDS": "0"}
        start_worker(concurrency=1, env=env)
        base = start_web(env=env)
        token = api_key_for(make_user("alice"))

        def submit(prompt: str) -> str:
            response = httpx.post(
                f"{base}/api/jobs/generate", json={"prompt": prompt, "platforms": ["twitter-post"]},
                headers={"Authorization": f"Token {token}"}, timeout=10,
            )  # fmt: skip
            assert response.status_code == 202, response.text
            return str(response.json()["jobId"])

        def reaches(job_id: str, status: str) -> None:
            wait_until(lambda: Job.objects.get(pk=job_id).status == status, timeout=90,
                       what=f"job {job_id} {status}")  # fmt: skip

        fake_openai.server_error()  # the first job's first attempt: retried, then done
        retried = submit("A fox, after one retry")
        reaches(retried, JobStatus.COMPLETED)
        fake_openai.reject_content()  # the second job fails for good
        rejected = submit("A picture the model refuses")
        reaches(rejected, JobStatus.FAILED)

        rows = {
            row.task_id: row
            for job_id in (retried, rejected)
            for row in task_results.job_task_results(job_id)
        }
        assert rows and all(row.status == "SUCCESS" for row in rows.values())
        assert max(task_results.task_retries(row) for row in rows.values()) == 1

        def flower_states() -> dict[str, str] | None:
            tasks = httpx.get(f"{flower_base}/api/tasks", auth=FLOWER_AUTH, timeout=10).json()
            states = {task_id: tasks[task_id]["state"] for task_id in rows if task_id in tasks}
            expected = {task_id: row.status for task_id, row in rows.items()}
            return states if states == expected else None

        wait_until(flower_states, timeout=30, interval=0.5, what="Flower to agree")

        # The dead letter, through the admin: seen, then retried to completion.
        operator = grant(
            make_user("ops-admin", staff=True), "view_job", "view_failedjob", "change_failedjob"
        )
        browser = browser_for(operator)
        dead = browser.get("/admin/ops/failedjob/").content.decode()
        assert rejected in dead and retried not in dead
        browser.post("/admin/ops/failedjob/",
                     {"action": "retry_jobs", "_selected_action": [rejected]})  # fmt: skip
        reaches(rejected, JobStatus.COMPLETED)
        assert rejected not in browser.get("/admin/ops/failedjob/").content.decode()
        page = browser.get(f"/admin/jobs/job/{rejected}/change/").content.decode()
        assert "SUCCESS" in page
    finally:
        flower.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False
