"""API credentials: API token keys (`Token <key>`, `Bearer <key>`) and Supabase access tokens.

API tokens are django-rest-knox's: the database keeps a digest of each key, never the key
(snapasset/core/tokens.py). One `Authorization: Bearer <value>` header can carry either an
API key (hex characters) or a Supabase access token (a JWT: three base64url parts joined by
two dots). The value's shape picks the class: `BearerTokenAuthentication` skips JWTs and
`SupabaseJWTAuthentication` skips everything else.

A Supabase JWT is verified with `SUPABASE_JWT_SECRET` (HS256, the legacy shared secret) or
with the project's public keys from `SUPABASE_JWKS_URL` (RS256/ES256). Each key only ever
verifies its own algorithm family, so a token cannot pick the public key as an HMAC secret.
The user is the JWT's `sub`, created on first sight.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.signals import token_expired
from rest_framework import authentication, exceptions, status
from rest_framework.request import Request

logger = logging.getLogger(__name__)

HMAC_ALGORITHMS = ["HS256"]
JWKS_ALGORITHMS = ["RS256", "ES256"]
# The JWKS is fetched at most once per lifespan (and again for an unknown `kid`), so a
# burst of logins does not hammer the auth server; the timeout bounds a request's wait.
JWKS_CACHE_SECONDS = 300
JWKS_FETCH_TIMEOUT_SECONDS = 5
INVALID_JWT = "Invalid or expired access token."


def looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2


def _bearer_value(request: Request) -> str | None:
    parts = authentication.get_authorization_header(request).split()
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return None
    try:
        return parts[1].decode()
    except UnicodeError:
        return None


class TokenAuthentication(KnoxTokenAuthentication):
    """`Authorization: Token <key>`: the key's digest is looked up (knox keeps no key)."""

    keyword = "Token"

    def authenticate_header(self, request: Request) -> str:
        return self.keyword

    def authenticate_credentials(self, token: bytes) -> tuple[Any, Any]:
        # Keys are hex; anything else (not UTF-8, NUL bytes the database refuses...) cannot
        # be one, and must be a 401, not a 500.
        if not token.isalnum():
            raise exceptions.AuthenticationFailed("Invalid token.")
        return super().authenticate_credentials(token)

    def _cleanup_token(self, auth_token: Any) -> bool:
        """Whether the key presented has expired (then it is deleted and refused). knox also
        loads every other key of the user on every request, to delete the expired ones: a
        second query per request. An expired key is refused (and deleted) when it is
        presented, so those rows only wait for that, or for `api_tokens_revoke`."""
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            username = auth_token.user.get_username()
            auth_token.delete()
            token_expired.send(sender=self.__class__, username=username, source="auth_token")
            return True
        return False


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        value = _bearer_value(request)
        if value is not None and looks_like_jwt(value):
            return None  # a Supabase access token: SupabaseJWTAuthentication's
        return super().authenticate(request)


class JWKSUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Could not fetch the signing keys to verify the access token; try again."


@lru_cache(maxsize=8)
def jwks_client(url: str) -> jwt.PyJWKClient:
    """One cached client per JWKS URL (the client caches the key set itself)."""
    return jwt.PyJWKClient(
        url,
        cache_jwk_set=True,
        lifespan=JWKS_CACHE_SECONDS,
        timeout=JWKS_FETCH_TIMEOUT_SECONDS,
    )


def supabase_jwt_configured() -> bool:
    return bool(settings.SUPABASE_JWT_SECRET or settings.SUPABASE_JWKS_URL)


def supabase_jwt_decode(token: str) -> dict[str, Any]:
    """The verified claims of a Supabase access token; `jwt.PyJWTError` when it is not valid."""
    algorithm = jwt.get_unverified_header(token).get("alg")
    key: Any
    if algorithm in HMAC_ALGORITHMS and settings.SUPABASE_JWT_SECRET:
        key, algorithms = settings.SUPABASE_JWT_SECRET, HMAC_ALGORITHMS
    elif algorithm in JWKS_ALGORITHMS and settings.SUPABASE_JWKS_URL:
        key = jwks_client(settings.SUPABASE_JWKS_URL).get_signing_key_from_jwt(token).key
        algorithms = JWKS_ALGORITHMS
    else:
        raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")
    options: jwt.types.Options = {"require": ["exp", "sub"]}
    kwargs: dict[str, Any] = {"audience": settings.SUPABASE_JWT_AUDIENCE or None}
    if not settings.SUPABASE_JWT_AUDIENCE:
        options["verify_aud"] = False
    if settings.SUPABASE_JWT_ISSUER:
        kwargs["issuer"] = settings.SUPABASE_JWT_ISSUER
    leeway = settings.SUPABASE_JWT_LEEWAY_SECONDS
    return jwt.decode(token, key, algorithms=algorithms, options=options, leeway=leeway, **kwargs)


def user_for_supabase_claims(claims: dict[str, Any]) -> Any:
    """The Django user whose username is the token's `sub`, created on first sight."""
    user_model = get_user_model()
    sub = claims.get("sub")
    username_field = user_model._meta.get_field(user_model.USERNAME_FIELD)
    max_length = getattr(username_field, "max_length", None) or 150
    if not isinstance(sub, str) or not sub or len(sub) > max_length:
        raise exceptions.AuthenticationFailed(INVALID_JWT)
    email = claims.get("email")
    if not isinstance(email, str):
        email = ""
    lookup = {user_model.USERNAME_FIELD: sub}
    user = user_model._default_manager.filter(**lookup).first()
    if user is None:
        try:
            with transaction.atomic():
                user = user_model._default_manager.create_user(**lookup, email=email[:254])
        except IntegrityError:
            # Two first requests of the same new user at once: the other one created it.
            user = user_model._default_manager.get(**lookup)
    elif email and user.email != email[:254]:
        user.email = email[:254]
        user.save(update_fields=["email"])
    if not user.is_active:
        raise exceptions.AuthenticationFailed("User inactive or deleted.")
    return user


class SupabaseJWTAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <Supabase access token>`; the user is the JWT's `sub`."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        value = _bearer_value(request)
        if value is None or not looks_like_jwt(value):
            return None
        if not supabase_jwt_configured():
            raise exceptions.AuthenticationFailed("Access tokens (JWT) are not accepted here.")
        try:
            claims = supabase_jwt_decode(value)
        except jwt.PyJWKClientConnectionError:
            logger.warning("could not fetch the JWKS from %s", settings.SUPABASE_JWKS_URL)
            raise JWKSUnavailable() from None
        except jwt.PyJWTError as exc:
            # The reason goes to the log (without the token), the client gets one message.
            logger.info("refused an access token: %s", exc.__class__.__name__)
            raise exceptions.AuthenticationFailed(INVALID_JWT) from None
        return user_for_supabase_claims(claims), claims

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


# --- OpenAPI security schemes (drf-spectacular) ---------------------------------------------


class TokenAuthScheme(OpenApiAuthenticationExtension):
    target_class = "snapasset.core.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "An API key with the `Token` prefix: `Authorization: Token <key>` "
            "(`manage.py create_api_token USERNAME` prints a new one).",
        }


class BearerAuthScheme(OpenApiAuthenticationExtension):
    target_class = "snapasset.core.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer <key>`.",
        }


class SupabaseJWTScheme(OpenApiAuthenticationExtension):
    target_class = "snapasset.core.authentication.SupabaseJWTAuthentication"
    name = "supabaseJWT"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A Supabase access token (when SUPABASE_JWT_SECRET or "
            "SUPABASE_JWKS_URL is configured); the user is the token's `sub`.",
        }
