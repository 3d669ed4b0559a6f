"""API token authentication: `Authorization: Token <key>` and `Authorization: Bearer <key>`."""

from __future__ import annotations

from rest_framework import authentication


class TokenAuthentication(authentication.TokenAuthentication):
    keyword = "Token"


class BearerTokenAuthentication(authentication.TokenAuthentication):
    keyword = "Bearer"
