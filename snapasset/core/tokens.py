"""API tokens: a key is shown once, when it is made; the database keeps only its digest.

The tokens are django-rest-knox's: a random key of 64 hex characters, stored as its SHA-512
digest and the first 15 characters (the index a lookup starts from). Nobody can read a key
back, staff and superusers included: a lost key is revoked and replaced. A user may hold
several keys at once, so a key can be rotated without downtime. Keys made before hashing
(DRF's 40-character tokens) were moved over as digests by core's migration 0001 and keep
working.
"""

from __future__ import annotations

from typing import Any

from knox.models import AuthToken


def api_token_create(*, user: Any) -> str:
    """A new key for ``user``; the only time it exists outside the client."""
    _, key = AuthToken.objects.create(user=user, expiry=None)
    return key


def api_tokens_revoke(*, user: Any) -> int:
    """Revoke every key of ``user``; how many there were."""
    deleted, _ = AuthToken.objects.filter(user=user).delete()
    return deleted
