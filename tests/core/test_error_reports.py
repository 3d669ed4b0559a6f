"""Production-safe by default (issue 14, item 3): a process started without DEBUG serves no
debug page, and no error page or report shows a password, an API key or a token."""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.core import mail
from django.test import RequestFactory
from django.utils.log import AdminEmailHandler
from django.views.debug import get_exception_reporter_class

from tests.conftest import database_url_of_test_db

DATABASE_PASSWORD = "pg-secret-" + secrets.token_hex(6)
BROKER_PASSWORD = "broker-secret-" + secrets.token_hex(6)
OPENAI_KEY = "sk-proj-" + secrets.token_hex(16)
QUERY_TOKEN = secrets.token_hex(20)


def with_password(url: str, user: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest.split('@', 1)[-1]}"


@pytest.mark.e2e
def test_a_process_started_without_debug_serves_no_debug_page(
    start_web: Callable[..., str],
) -> None:
    base = start_web(
        env={"DEBUG": None, "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "127.0.0.1"}
    )
    missing = httpx.get(f"{base}/no-such-page", timeout=10)
    assert missing.status_code == 404
    assert "DEBUG = True" not in missing.text and "URLconf" not in missing.text
    bad_host = httpx.get(f"{base}/api/jobs", headers={"Host": "evil.example"}, timeout=10)
    assert bad_host.status_code == 400
    assert bad_host.json() == {"error": "Bad request"}  # not the debug page's DisallowedHost


@pytest.mark.e2e
def test_the_debug_page_of_development_mode_shows_no_secret(
    start_web: Callable[..., str], settings: Any
) -> None:
    """Django's debug page lists every setting, the request and the exception; with
    passwords in DATABASE_URL and REDIS_URL (Postgres trusts and Redis' default user takes
    any password here, so both still connect), none of them is on it."""
    metrics_token = secrets.token_urlsafe(24)
    env = {
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": with_password(database_url_of_test_db(), "postgres", DATABASE_PASSWORD),
        "REDIS_URL": with_password(settings.REDIS_URL, "default", BROKER_PASSWORD),
        "OPENAI_API_KEY": OPENAI_KEY,
        "METRICS_TOKEN": metrics_token,
    }
    base = start_web(env=env)
    page = httpx.get(
        f"{base}/api/jobs?token={QUERY_TOKEN}",
        headers={"Host": "evil.example", "Authorization": f"Token {QUERY_TOKEN}"},
        timeout=10,
    )
    assert page.status_code == 400
    assert "DisallowedHost" in page.text and "DATABASE_URL" in page.text  # the debug page
    for secret in (DATABASE_PASSWORD, BROKER_PASSWORD, OPENAI_KEY, QUERY_TOKEN, metrics_token):
        assert secret not in page.text
    assert "[redacted]" in page.text
    log = start_web.process(base).output()  # type: ignore[attr-defined]
    for secret in (DATABASE_PASSWORD, BROKER_PASSWORD, OPENAI_KEY, QUERY_TOKEN):
        assert secret not in log


def fail_with_the_database_url(database_url: str, broker_url: str) -> None:
    connection_string = database_url  # a local variable the report shows
    raise ConnectionError(f"cannot reach {broker_url} nor {connection_string}")


@pytest.fixture
def error_report(settings: Any) -> tuple[str, str]:
    """The text and HTML reports of an exception raised with secrets in its message, its
    local variables, the settings and the request."""
    settings.DATABASE_URL = f"postgres://snapasset:{DATABASE_PASSWORD}@db.internal:5432/snapasset"
    settings.CELERY_BROKER_URL = f"redis://:{BROKER_PASSWORD}@redis.internal:6379/0"
    settings.OPENAI_API_KEY = OPENAI_KEY
    request = RequestFactory().get(f"/api/jobs?api_key={QUERY_TOKEN}")
    try:
        fail_with_the_database_url(settings.DATABASE_URL, settings.CELERY_BROKER_URL)
    except ConnectionError:
        reporter = get_exception_reporter_class(request)(request, *sys.exc_info())
        return reporter.get_traceback_text(), reporter.get_traceback_html()
    raise AssertionError("unreachable")


@pytest.mark.parametrize("form", ["text", "html"])
def test_an_error_report_carries_no_database_password(
    error_report: tuple[str, str], form: str
) -> None:
    report = error_report[0] if form == "text" else error_report[1]
    assert "ConnectionError" in report and "db.internal" in report
    for secret in (DATABASE_PASSWORD, BROKER_PASSWORD, OPENAI_KEY, QUERY_TOKEN):
        assert secret not in report
    assert "postgres://snapasset:[redacted]@db.internal" in report


def test_the_error_email_to_admins_carries_no_secret(settings: Any) -> None:
    settings.ADMINS = [("ops", "ops@example.com")]
    settings.DATABASE_URL = f"postgres://snapasset:{DATABASE_PASSWORD}@db.internal:5432/snapasset"
    request = RequestFactory().get("/api/jobs")
    try:
        fail_with_the_database_url(settings.DATABASE_URL, f"redis://:{BROKER_PASSWORD}@r:6379/0")
    except ConnectionError:
        record = logging.makeLogRecord(
            {"msg": "Internal Server Error", "levelno": logging.ERROR, "levelname": "ERROR",
             "exc_info": sys.exc_info(), "request": request}
        )  # fmt: skip
    AdminEmailHandler(include_html=True).emit(record)
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    html = message.alternatives[0][0] if message.alternatives else ""
    for secret in (DATABASE_PASSWORD, BROKER_PASSWORD):
        assert secret not in message.body and secret not in str(html)
    assert "[redacted]" in message.body
