"""The OpenAPI schema against the real server: schemathesis generates valid and invalid
requests for every operation of /api/schema/ and sends them over HTTP to a running uvicorn.

Every response must be documented (status code, content type, headers) and match its
schema; nothing may answer 5xx. The example count is bounded (SCHEMATHESIS_MAX_EXAMPLES,
per operation and generation mode) to keep `make test` quick.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs.models import GeneratedImage, JobKind, JobStatus
from tests.conftest import make_user
from tests.factories import JobFactory

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "20"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def staff_token(transactional_db: None) -> str:
    return Token.objects.create(user=make_user("schema-staff", staff=True)).key


@pytest.fixture
def known_job_ids(staff_token: str) -> list[str]:
    """Jobs in each state, so generated job ids sometimes hit a real job (200 and 400 paths)."""
    owner = make_user("schema-owner")
    jobs = [JobFactory(owner=owner, status=status) for status in JobStatus.values]
    completed = next(job for job in jobs if job.status == JobStatus.COMPLETED)
    GeneratedImage.objects.create(
        job=completed, platform_id="twitter-post", width=1200, height=675, file_size=10,
        storage_path="x/twitter-post.png", url="/media/x/twitter-post.png", format="png",
    )  # fmt: skip
    jobs.append(JobFactory(
        owner=None, kind=JobKind.FILE_CLEANUP, status=JobStatus.COMPLETED,
        params={"type": "all", "olderThanDays": 7}, result={"deletedFiles": 1},
    ))  # fmt: skip
    return [str(job.pk) for job in jobs]


@pytest.fixture
def web_base(start_web: Any) -> str:
    # No throttle and no pending cap here: let submissions succeed so their 202 bodies are
    # checked too (tests/jobs/test_limits.py covers the 429s).
    return start_web(env={"SUBMIT_RATE": "off", "JOB_MAX_PENDING_PER_USER": "1000000"})


def use_known_job(case: Any, known_job_ids: list[str]) -> None:
    """Half of the generated valid job ids become real jobs (200 and 400 paths)."""
    job_id = (case.path_parameters or {}).get("job_id")
    if not isinstance(job_id, str):
        return
    try:
        number = uuid.UUID(job_id).int
    except ValueError:
        return
    if number % 2 == 0:
        case.path_parameters["job_id"] = known_job_ids[number % len(known_job_ids)]


@pytest.mark.slow
def test_the_api_answers_as_its_schema_says(
    web_base: str, staff_token: str, known_job_ids: list[str], subtests: Any, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Token {staff_token}"}
    # Like every /api/ endpoint, the schema needs credentials.
    schema = schemathesis.openapi.from_url(f"{web_base}/api/schema/", headers=headers, timeout=30)
    schema.config.generation.update(with_security_parameters=False)
    # The live-event streams stay open (keep-alives), so they are not fuzzed here; their
    # refusals are in the ownership matrix and tests/jobs/live/test_streams.py reads them.
    # (POST /api/sse/tickets answers at once: it is fuzzed.)
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if not (op.path.startswith("/api/sse/") and op.method.upper() == "GET")
    ]
    assert len(operations) >= 10

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                use_known_job(case, known_job_ids)
                case.call_and_validate(
                    base_url=web_base, headers=headers, checks=CHECKS, timeout=30
                )

            with subtests.test(operation=operation.label, mode=mode.value):
                try:
                    check()
                except Unsatisfiable:
                    # An operation without parameters or body has nothing to make invalid.
                    if mode is not GenerationMode.NEGATIVE:
                        raise

    # The server logged the refused requests; never the credential that came with them.
    server_log = (tmp_path / f"web-{web_base.rsplit(':', 1)[1]}.log").read_text()
    assert staff_token not in server_log


def test_the_schema_documents_every_operation_auth_and_errors(
    start_web: Any, staff_token: str
) -> None:
    base = start_web()
    headers = {"Authorization": f"Token {staff_token}"}
    spec = httpx.get(f"{base}/api/schema/?format=json", headers=headers, timeout=30).json()
    schemes = spec["components"]["securitySchemes"]
    assert set(schemes) == {"tokenAuth", "bearerAuth", "supabaseJWT", "cookieAuth", "streamTicket"}
    assert schemes["supabaseJWT"]["bearerFormat"] == "JWT"
    # Stream tickets: only on the streams, as the query parameter `ticket`.
    assert schemes["streamTicket"] == {**schemes["streamTicket"], "in": "query", "name": "ticket"}
    operations = {
        (method, path): op for path, item in spec["paths"].items() for method, op in item.items()
    }
    assert ("get", "/health") in operations
    assert operations[("get", "/health")].get("security") in (None, [{}], [])  # public
    for (method, path), op in operations.items():
        if path == "/health":
            continue
        assert {"tokenAuth", "bearerAuth", "supabaseJWT"} <= {k for s in op["security"] for k in s}
        assert "401" in op["responses"], f"{method} {path}"
        assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/Error"
        )
    generate = operations[("post", "/api/jobs/generate")]
    assert {"200", "202", "400", "413", "429"} <= set(generate["responses"])
    assert "Retry-After" in generate["responses"]["429"]["headers"]
    assert "403" in operations[("post", "/api/jobs/cleanup")]["responses"]
    assert "404" in operations[("get", "/api/jobs/{job_id}")]["responses"]
    for (method, path), op in operations.items():
        with_ticket = {"streamTicket"} <= {k for s in op.get("security", []) for k in s}
        assert with_ticket == (method == "get" and path.startswith("/api/sse/")), path
    tickets = operations[("post", "/api/sse/tickets")]
    assert {"201", "400", "403", "404"} <= set(tickets["responses"])
    answer = tickets["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert answer.endswith("/StreamTicket")
    ticket = spec["components"]["schemas"]["StreamTicket"]
    assert set(ticket["required"]) == {"ticket", "expiresIn", "stream", "url"}
