"""`manage.py create_api_token USERNAME [--staff] [--rotate]`: create the user if missing and
print a new API key (the only time it is shown: the database keeps its digest)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from snapasset.core.tokens import api_token_create, api_tokens_revoke


class Command(BaseCommand):
    help = (
        "Create USERNAME if missing and print a new API key as the last line of stdout. "
        "Keys cannot be shown again; the user's other keys keep working unless --rotate."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="make the user staff")
        parser.add_argument(
            "--rotate", action="store_true", help="revoke the user's other keys first"
        )

    def handle(self, *args: Any, username: str, staff: bool, rotate: bool, **options: Any) -> None:
        user_model = get_user_model()
        lookup = {user_model.USERNAME_FIELD: username}
        user, created = user_model.objects.get_or_create(defaults=None, **lookup)
        if created:
            user.set_unusable_password()
        if staff and not user.is_staff:
            user.is_staff = True
        user.save()
        revoked = api_tokens_revoke(user=user) if rotate else 0
        key = api_token_create(user=user)
        self.stderr.write(
            f"{'Created' if created else 'Found'} user {username}"
            f"{' (staff)' if user.is_staff else ''}"
            f"{f'; revoked {revoked} old key(s)' if rotate else ''}"
            "; a new API key (shown once, store it now):"
        )
        self.stdout.write(key)
