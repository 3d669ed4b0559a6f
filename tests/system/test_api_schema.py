"""The OpenAPI schema against the real server: schemathesis generates valid and invalid
requests for every operation of /api/schema/ and sends them over HTTP to a running uvicorn.

Every response must be documented (status code, content type, headers) and match its
schema; nothing may answer 5xx. It runs as staff (an API key), and as the user alice with
each kind of credential (an API key, a Supabase JWT in Bearer, a session cookie with its
CSRF token), where no response may carry anything of bob's jobs. The example count is
bounded (SCHEMATHESIS_MAX_EXAMPLES, per operation and generation mode) to keep `make test`
quick.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs.models import GeneratedImage, JobKind, JobStatus
from tests.conftest import api_key_for, make_user
from tests.factories import JobFactory
from tests.fakes.jwks import supabase_claims

pytestmark = pytest.mark.e2e

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "20"))
JWT_SECRET = "schema-fuzzing-jwt-secret-of-at-least-32-characters"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def staff_token(transactional_db: None) -> str:
    return api_key_for(make_user("schema-staff", staff=True))


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
    return start_web(
        env={
            "SUBMIT_RATE": "off",
            "JOB_MAX_PENDING_PER_USER": "1000000",
            "SUPABASE_JWT_SECRET": JWT_SECRET,
        }
    )


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


def fuzz_every_operation(
    web_base: str,
    headers: dict[str, str],
    job_ids: list[str],
    subtests: Any,
    *,
    max_examples: int = MAX_EXAMPLES,
    extra_check: Any = None,
) -> None:
    """Every operation but the live streams, valid and invalid requests, with ``headers``."""
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
                max_examples=max_examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                use_known_job(case, job_ids)
                response = case.call_and_validate(
                    base_url=web_base, headers=headers, checks=CHECKS, timeout=30
                )
                if extra_check is not None:
                    extra_check(response)

            with subtests.test(operation=operation.label, mode=mode.value):
                try:
                    check()
                except Unsatisfiable:
                    # An operation without parameters or body has nothing to make invalid.
                    if mode is not GenerationMode.NEGATIVE:
                        raise


@pytest.mark.slow
def test_the_api_answers_as_its_schema_says(
    web_base: str, staff_token: str, known_job_ids: list[str], subtests: Any, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Token {staff_token}"}
    fuzz_every_operation(web_base, headers, known_job_ids, subtests)
    # The server logged the refused requests; never the credential that came with them.
    server_log = (tmp_path / f"web-{web_base.rsplit(':', 1)[1]}.log").read_text()
    assert staff_token not in server_log


# --- As a user, with each kind of credential ----------------------------------------------------

BOB_PROMPT = "bob-only-prompt-7f3c9e"


@pytest.fixture
def alice_and_bob_jobs(transactional_db: None) -> tuple[list[str], list[str]]:
    """Jobs of alice and of bob in every state: (alice's ids, bob's ids)."""
    alice, bob = make_user("alice"), make_user("bob")
    mine = [JobFactory(owner=alice, status=status) for status in JobStatus.values]
    theirs = [
        JobFactory(owner=bob, status=status, prompt=f"{BOB_PROMPT} {status}")
        for status in JobStatus.values
    ]
    for job in mine + theirs:
        if job.status == JobStatus.COMPLETED:
            GeneratedImage.objects.create(
                job=job, platform_id="twitter-post", width=1200, height=675, file_size=10,
                storage_path=f"{job.owner.username}/{job.pk}/twitter-post.png",
                url=f"/media/{job.owner.username}/{job.pk}/twitter-post.png", format="png",
            )  # fmt: skip
    return [str(job.pk) for job in mine], [str(job.pk) for job in theirs]


def alice_headers(kind: str, web_base: str) -> dict[str, str]:
    from django.contrib.auth import get_user_model

    alice = get_user_model().objects.get(username="alice")
    if kind == "api-key":
        return {"Authorization": f"Token {api_key_for(alice)}"}
    if kind == "jwt":
        # A Supabase access token whose `sub` is alice's username: the same user.
        token = jwt.encode(supabase_claims("alice"), JWT_SECRET, algorithm="HS256")
        return {"Authorization": f"Bearer {token}"}
    # A browser's session: the session cookie, and the CSRF cookie with its header copy.
    browser = Client()
    browser.force_login(alice)
    session = browser.cookies["sessionid"].value
    csrf = httpx.get(f"{web_base}/accounts/login/", timeout=30).cookies["csrftoken"]
    return {"Cookie": f"sessionid={session}; csrftoken={csrf}", "X-CSRFToken": csrf}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["api-key", "jwt", "session"])
def test_a_user_fuzzing_the_api_never_sees_another_users_jobs(
    web_base: str, alice_and_bob_jobs: tuple[list[str], list[str]], subtests: Any, kind: str
) -> None:
    mine, theirs = alice_and_bob_jobs
    headers = alice_headers(kind, web_base)
    assert httpx.get(f"{web_base}/api/jobs", headers=headers, timeout=30).json()["total"] == 6
    bobs = [*theirs, BOB_PROMPT, "/bob/"]
    sent = []

    def nothing_of_bobs(response: Any) -> None:
        request = response.request
        asked = f"{request.url} {request.body!r}"
        sent.append(response.status_code)
        # A 404 may say what was asked for; nothing else of bob's may come back.
        leaked = [secret for secret in bobs if secret in response.text and secret not in asked]
        assert not leaked, f"{request.method} {request.url} -> {response.status_code}: {leaked}"

    fuzz_every_operation(
        web_base, headers, mine + theirs, subtests,
        max_examples=max(5, MAX_EXAMPLES // 2), extra_check=nothing_of_bobs,
    )  # fmt: skip
    assert len(sent) > 50
    assert 200 in sent and 404 in sent  # alice's own jobs were read, bob's refused


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
    assert {} in (operations[("get", "/health")].get("security") or [{}])  # anyone may call it
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
    batch = operations[("post", "/api/jobs/generate/batch")]
    assert {"200", "400", "413", "415", "429"} <= set(batch["responses"])
    assert "Retry-After" in batch["responses"]["429"]["headers"]
    assert batch["requestBody"]["required"] is True
    assert batch["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/JobGenerateInput"},
        "minItems": 1,
        "maxItems": 100,
    }
    item = spec["components"]["schemas"]["JobBatchItemResult"]
    assert set(item["properties"]) == {"index", "status", "job", "error"}
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
