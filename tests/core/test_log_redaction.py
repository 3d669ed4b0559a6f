"""Secrets never reach logs, errors or job data; prompts are truncated in logs."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from django.conf import settings as django_settings
from pythonjsonlogger.json import JsonFormatter

from jobs.models import JobStatus
from jobs.services.outcomes import job_fail
from snapasset.core.log_redaction import RedactSecretsFilter, redact_secrets
from tests.factories import JobFactory

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJlLWJ5dGVz"
DRF_KEY = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
TICKET = "Zq3n1v-8WcE0yR_5tUoPa2kLmB7xJdHfGsQiT4eNwCY"


def emit(
    message: str, *args: Any, formatter: logging.Formatter | None = None, **kwargs: Any
) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or logging.Formatter("%(message)s"))
    handler.addFilter(RedactSecretsFilter())
    logger = logging.getLogger(f"test-redaction-{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.warning(message, *args, **kwargs)
    return stream.getvalue()


@pytest.mark.parametrize(
    "line, secret",
    [
        ("Authorization: Token " + DRF_KEY, DRF_KEY),
        ("headers={'HTTP_AUTHORIZATION': 'Bearer " + DRF_KEY + "'}", DRF_KEY),
        ("upstream refused Bearer " + JWT, JWT),
        ("token in text " + JWT + " end", JWT),
        ("openai said: Incorrect API key provided: sk-proj-AbC123xyz456", "sk-proj-AbC123xyz456"),
        ("GET /api/sse/jobs/1?token=" + DRF_KEY + "&x=1", DRF_KEY),
        # Stream tickets (jobs/live/tickets.py): in the access log's URL and in a JSON body.
        ('"GET /api/sse/jobs/1?lastEventId=3&ticket=' + TICKET + ' HTTP/1.1" 200', TICKET),
        ('{"ticket": "' + TICKET + '", "expiresIn": 30}', TICKET),
        ('{"api_key": "s3cr3t-value-123"}', "s3cr3t-value-123"),
        ("password=hunter22", "hunter22"),
    ],
)
def test_credentials_are_redacted_from_log_lines(line: str, secret: str) -> None:
    output = emit("%s", line)
    assert secret not in output
    assert "[redacted]" in output


def test_configured_secrets_are_redacted_verbatim(settings: Any) -> None:
    settings.OPENAI_API_KEY = "plain-looking-openai-key-value"
    output = emit("calling the provider with %s", "plain-looking-openai-key-value")
    assert "plain-looking-openai-key-value" not in output
    assert django_settings.SECRET_KEY not in emit("key is %s", django_settings.SECRET_KEY)


def test_tracebacks_and_extra_fields_are_redacted_in_json_logs() -> None:
    formatter = JsonFormatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError("auth failed for Bearer " + DRF_KEY)
    except RuntimeError:
        output = emit(
            "boom",
            formatter=formatter,
            exc_info=True,
            extra={"authorization": "Token " + DRF_KEY, "note": "t " + JWT, "prompt": "p" * 500},
        )
    record = json.loads(output)
    assert DRF_KEY not in output and JWT not in output
    assert record["authorization"] == "[redacted]"
    assert "RuntimeError" in record["exc_info"]
    assert record["prompt"].startswith("p" * 80) and len(record["prompt"]) < 120


@pytest.mark.parametrize(
    "line",
    ["job 5f0c completed with 6 images in 2.1 s", "Token authentication failed for a request"],
)
def test_ordinary_lines_are_untouched(line: str) -> None:
    assert redact_secrets(line) == line


def test_the_console_handler_carries_the_filter() -> None:
    handler = django_settings.LOGGING["handlers"]["console"]
    assert "redact" in handler["filters"]
    root_handlers = logging.getLogger().handlers
    assert any(isinstance(f, RedactSecretsFilter) for h in root_handlers for f in h.filters)


@pytest.mark.django_db
def test_a_failure_reason_never_stores_a_key(alice: Any) -> None:
    job = JobFactory(owner=alice, status=JobStatus.ACTIVE)
    job_fail(
        job_id=str(job.pk),
        token=None,
        reason="Error code: 401 - Incorrect API key sk-live-1234567890abcdef",
    )
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "sk-live-1234567890abcdef" not in job.failed_reason
    assert "Incorrect API key" in job.failed_reason


@pytest.mark.django_db
def test_error_responses_never_echo_the_credential() -> None:
    from rest_framework.test import APIClient

    client = APIClient()
    for value in (f"Bearer {DRF_KEY}", f"Token {DRF_KEY}", f"Bearer {JWT}"):
        client.credentials(HTTP_AUTHORIZATION=value)
        response = client.get("/api/jobs")
        assert response.status_code == 401
        assert DRF_KEY not in response.content.decode() and JWT not in response.content.decode()
