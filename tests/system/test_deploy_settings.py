"""Production settings: `check --deploy` is clean, a default SECRET_KEY stops the process,
HTTPS and cookies are secure, and CORS opens nothing unless told to."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.test import override_settings

from tests.conftest import ROOT

# What a production deployment sets (README, "Production").
PRODUCTION_ENV = {
    "DEBUG": "false",
    "SECRET_KEY": "k7#p2Vq9!xR4m$Lw8zT1nB6yF3hJ5cD0sG-aE^uQ_iO+vK@rW-production-test-key",
    "ALLOWED_HOSTS": "snapasset.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://snapasset.example.com",
    "CORS_ALLOWED_ORIGINS": "https://app.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items() if k not in PRODUCTION_ENV}
    child.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_in_production() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stderr


def test_check_deploy_points_at_what_a_bare_production_run_misses() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if not k.startswith("SECURE_")}
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode != 0
    assert "security.W004" in result.stderr  # HSTS
    assert "security.W008" in result.stderr  # HTTPS redirect


def test_it_refuses_to_start_in_production_with_the_default_secret_key() -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "SECRET_KEY"}
    result = manage("check", **env)
    assert result.returncode != 0
    assert (
        "Refusing to start outside development mode with a built-in or example secret: "
        "SECRET_KEY." in result.stderr
    )


def test_it_refuses_a_malformed_submit_rate() -> None:
    result = manage("check", SUBMIT_RATE="lots")
    assert result.returncode != 0
    assert "SUBMIT_RATE must look like 60/min" in result.stderr


def test_production_settings_are_secure() -> None:
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
        "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.CORS_ALLOWED_ORIGINS, "
        "getattr(s, 'CORS_ALLOW_ALL_ORIGINS', False), s.DEBUG)"
    )
    result = manage("shell", "-v", "0", "-c", code, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "True", "True", "True", "True", "31536000", "['https://app.example.com']", "False", "False",
    ]  # fmt: skip


# --- CORS -------------------------------------------------------------------------------------


def preflight(client: Any, origin: str) -> Any:
    return client.options(
        "/api/jobs/generate",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type,idempotency-key",
    )


@pytest.mark.django_db
def test_cors_is_closed_by_default(client: Any) -> None:
    response = preflight(client, "https://evil.example")
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.django_db
@override_settings(CORS_ALLOWED_ORIGINS=["https://app.example.com"])
def test_cors_allows_only_the_configured_origins(client: Any, alice_client: Any) -> None:
    allowed = preflight(client, "https://app.example.com")
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "idempotency-key" in allowed.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in preflight(client, "https://evil.example").headers
    response = alice_client.get("/api/jobs", HTTP_ORIGIN="https://app.example.com")
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


@pytest.mark.django_db
def test_cors_sends_no_credentials_by_default(client: Any) -> None:
    with override_settings(CORS_ALLOWED_ORIGINS=["https://app.example.com"]):
        allowed = preflight(client, "https://app.example.com")
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Credentials" not in allowed.headers


@pytest.mark.django_db
@override_settings(CORS_ALLOWED_ORIGINS=["https://app.example.com"], CORS_ALLOW_CREDENTIALS=True)
def test_cors_with_credentials_answers_only_the_listed_origins(client: Any) -> None:
    allowed = preflight(client, "https://app.example.com")
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    refused = preflight(client, "https://evil.example")
    assert "Access-Control-Allow-Origin" not in refused.headers
    assert "Access-Control-Allow-Credentials" not in refused.headers


@pytest.mark.parametrize("origins", ["", "*", "https://app.example.com,*", "null"])
def test_cors_credentials_are_refused_without_an_explicit_list_of_origins(origins: str) -> None:
    result = manage("check", CORS_ALLOW_CREDENTIALS="true", CORS_ALLOWED_ORIGINS=origins)
    assert result.returncode != 0
    assert "CORS_ALLOW_CREDENTIALS=true needs CORS_ALLOWED_ORIGINS" in result.stderr


# --- HTTPS --------------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(SECURE_SSL_REDIRECT=True, SECURE_HSTS_SECONDS=3600)
def test_https_is_enforced_when_configured_but_health_stays_reachable(
    client: Any, alice_client: Any
) -> None:
    assert client.get("/api/jobs").status_code == 301
    assert client.get("/health").status_code in (200, 503)
    secure = alice_client.get("/api/jobs", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure.headers["Strict-Transport-Security"].startswith("max-age=3600")
