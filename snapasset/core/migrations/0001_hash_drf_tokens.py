"""Existing DRF tokens become knox tokens: the digest of each key is kept, the key is not.

DRF's `authtoken_token` table held every key in plain text. Each one is copied as knox
stores a key (digest, first 15 characters, owner, creation time; no expiry), so the same
`Token <key>` / `Bearer <key>` keeps working, and the plain-text rows are deleted. Going
back cannot restore them: the keys are gone, so the reverse does nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations
from knox.crypto import hash_token
from knox.settings import CONSTANTS


def hash_drf_tokens(apps: Any, schema_editor: Any) -> None:
    Token = apps.get_model("authtoken", "Token")
    AuthToken = apps.get_model("knox", "AuthToken")
    for token in Token.objects.all().iterator():
        digest = hash_token(token.key)
        AuthToken.objects.get_or_create(
            digest=digest,
            defaults={
                "token_key": token.key[: CONSTANTS.TOKEN_KEY_LENGTH],
                "user_id": token.user_id,
                "expiry": None,
            },
        )
        # `created` is auto_now_add: set the key's real age after the insert.
        AuthToken.objects.filter(digest=digest).update(created=token.created)
    Token.objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("authtoken", "0004_alter_tokenproxy_options"),
        ("knox", "0009_extend_authtoken_field"),
    ]

    operations = [migrations.RunPython(hash_drf_tokens, migrations.RunPython.noop)]
