"""Credentials: API keys, Supabase access tokens (HS256 secret or JWKS) and sessions with CSRF
(API tokens in the admin: tests/core/test_api_tokens.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from jwt.utils import base64url_encode
from rest_framework.test import APIClient

from tests.conftest import api_key_for
from tests.fakes.jwks import JWKSServer, supabase_claims

pytestmark = pytest.mark.django_db

SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
SUB = "0b6c3c2e-8d7e-4c9a-9a51-3f2f0a7c1d11"


def bearer(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    return client


def hs256(claims: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers or None)


def forge_hs256(claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token signed by hand (PyJWT refuses to use a PEM key as an HMAC secret)."""
    header = base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = base64url_encode(json.dumps(claims).encode())
    signing_input = header + b"." + payload
    signature = base64url_encode(hmac.new(secret, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


def users_named(username: str) -> int:
    return get_user_model().objects.filter(username=username).count()


@pytest.fixture
def jwt_secret(settings: Any) -> str:
    settings.SUPABASE_JWT_SECRET = SECRET
    settings.SUPABASE_JWKS_URL = ""
    return SECRET


@pytest.fixture
def jwks(settings: Any) -> Iterator[JWKSServer]:
    with JWKSServer() as server:
        settings.SUPABASE_JWT_SECRET = ""
        settings.SUPABASE_JWKS_URL = server.url
        yield server


# --- HS256 with SUPABASE_JWT_SECRET ------------------------------------------------------------


def test_a_jwt_signed_with_the_secret_is_accepted_and_its_sub_becomes_the_user(
    jwt_secret: str,
) -> None:
    token = hs256(supabase_claims(SUB, email="ann@example.com"))
    response = bearer(token).post("/api/jobs/generate", {"prompt": "A fox"}, format="json")
    assert response.status_code == 202
    user = get_user_model().objects.get(username=SUB)
    assert user.email == "ann@example.com"
    assert not user.has_usable_password()
    job = bearer(token).get(f"/api/jobs/{response.json()['jobId']}").json()
    assert job["data"]["userId"] == SUB
    assert users_named(SUB) == 1


def test_a_jwt_user_sees_only_their_own_jobs(jwt_secret: str, alice_client: APIClient) -> None:
    alices = alice_client.post("/api/jobs/generate", {"prompt": "A fox"}, format="json").json()[
        "jobId"
    ]
    client = bearer(hs256(supabase_claims(SUB)))
    assert client.get(f"/api/jobs/{alices}").status_code == 404
    assert client.get("/api/jobs").json()["total"] == 0


def _claims_without(name: str) -> dict[str, Any]:
    claims = supabase_claims(SUB)
    del claims[name]
    return claims


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda: hs256(supabase_claims(SUB, lifetime=-3600)), id="expired"),
        pytest.param(
            lambda: hs256(supabase_claims(SUB), secret="another-secret-" * 3), id="wrong-signature"
        ),
        pytest.param(lambda: hs256(supabase_claims(SUB, aud="anon")), id="wrong-audience"),
        pytest.param(lambda: hs256(_claims_without("aud")), id="no-audience"),
        pytest.param(lambda: hs256(_claims_without("sub")), id="no-sub"),
        pytest.param(lambda: hs256(_claims_without("exp")), id="no-expiry"),
        pytest.param(lambda: hs256(supabase_claims("x" * 151)), id="sub-too-long"),
        pytest.param(
            lambda: jwt.encode(supabase_claims(SUB), None, algorithm="none"), id="alg-none"
        ),
        pytest.param(lambda: hs256(supabase_claims(SUB))[:-4] + "AAAA", id="tampered"),
        pytest.param(lambda: "eyJhbGciOi.not-base64.!!", id="garbage-with-two-dots"),
    ],
)
def test_invalid_jwts_are_refused_with_401_json(jwt_secret: str, make_token: Any) -> None:
    response = bearer(make_token()).get("/api/jobs")
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or expired access token."}
    assert response["WWW-Authenticate"]
    assert not get_user_model().objects.exists()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer a.b.c extra",
        "Bearer \u00e9t\u00e9.x.y",
        "Token",
        "Token a b",
        "Basic YWxpY2U6cHc=",
        "Bearer " + "x" * 5000,
    ],
)
def test_malformed_authorization_headers_are_401_json(jwt_secret: str, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/jobs")
    assert response.status_code == 401
    assert response.json()["error"]


def test_the_issuer_is_checked_when_configured(jwt_secret: str, settings: Any) -> None:
    settings.SUPABASE_JWT_ISSUER = "https://project.supabase.co/auth/v1"
    good = hs256(supabase_claims(SUB, iss="https://project.supabase.co/auth/v1"))
    other = hs256(supabase_claims(SUB, iss="https://evil.example/auth/v1"))
    assert bearer(good).get("/api/jobs").status_code == 200
    assert bearer(other).get("/api/jobs").status_code == 401


def test_a_jwt_is_refused_when_none_is_configured(settings: Any) -> None:
    settings.SUPABASE_JWT_SECRET = ""
    settings.SUPABASE_JWKS_URL = ""
    response = bearer(hs256(supabase_claims(SUB))).get("/api/jobs")
    assert response.status_code == 401
    assert "error" in response.json()


def test_api_keys_keep_working_beside_jwts(jwt_secret: str, alice: Any) -> None:
    key = api_key_for(alice)
    assert bearer(key).get("/api/jobs").status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/jobs").status_code == 200
    assert bearer("0" * 40).get("/api/jobs").status_code == 401


def test_a_deactivated_jwt_user_is_refused(jwt_secret: str) -> None:
    token = hs256(supabase_claims(SUB))
    assert bearer(token).get("/api/jobs").status_code == 200
    get_user_model().objects.filter(username=SUB).update(is_active=False)
    assert bearer(token).get("/api/jobs").status_code == 401


# --- RS256 / ES256 with the project's JWKS -----------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_jwt_signed_with_a_key_of_the_jwks_is_accepted(jwks: JWKSServer, algorithm: str) -> None:
    token = jwks.sign(supabase_claims(SUB, email="ann@example.com"), algorithm=algorithm)
    assert bearer(token).get("/api/jobs").status_code == 200
    assert get_user_model().objects.get(username=SUB).email == "ann@example.com"


def test_the_jwks_is_fetched_once_and_cached(jwks: JWKSServer) -> None:
    for sub in ("u1", "u2", "u3"):
        assert bearer(jwks.sign(supabase_claims(sub))).get("/api/jobs").status_code == 200
    assert jwks.fetches == 1


def test_a_jwt_from_an_unknown_key_is_refused(jwks: JWKSServer) -> None:
    stranger = JWKSServer()  # same shape, other keys, never served
    token = stranger.sign(supabase_claims(SUB))
    assert bearer(token).get("/api/jobs").status_code == 401
    token = jwks.sign(supabase_claims(SUB), kid="rotated-away")
    assert bearer(token).get("/api/jobs").status_code == 401


def test_an_hs256_token_is_refused_when_only_the_jwks_is_configured(jwks: JWKSServer) -> None:
    # The classic confusion attack: an HMAC token "signed" with the public key as secret.
    from cryptography.hazmat.primitives import serialization

    public_pem = jwks.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = forge_hs256(supabase_claims(SUB), public_pem)
    assert bearer(forged).get("/api/jobs").status_code == 401


def test_an_unreachable_jwks_answers_503_json(settings: Any) -> None:
    from tests.conftest import free_port

    settings.SUPABASE_JWT_SECRET = ""
    settings.SUPABASE_JWKS_URL = f"http://127.0.0.1:{free_port()}/auth/v1/.well-known/jwks.json"
    token = JWKSServer().sign(supabase_claims(SUB))
    started = time.monotonic()
    response = bearer(token).get("/api/jobs")
    assert response.status_code == 503
    assert "error" in response.json()
    assert time.monotonic() - started < 10


# --- Sessions and CSRF ------------------------------------------------------------------------


def test_a_session_post_without_csrf_token_is_refused_403_json(alice: Any) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/jobs").status_code == 200  # reads need no CSRF token
    response = client.post("/api/jobs/generate", {"prompt": "A fox"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]


def test_a_session_post_with_the_csrf_token_is_accepted(alice: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/admin/login/")  # sets the csrftoken cookie, as the web page would
    csrf = client.cookies["csrftoken"].value
    response = client.post(
        "/api/jobs/generate",
        {"prompt": "A fox"},
        content_type="application/json",
        HTTP_X_CSRFTOKEN=csrf,
    )
    assert response.status_code == 202
