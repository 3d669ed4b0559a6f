"""`manage.py create_api_token USERNAME [--staff]`: create the user if missing, print a token."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Create USERNAME if missing and print its API token as the last line of stdout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="make the user staff")
        parser.add_argument(
            "--rotate", action="store_true", help="replace the user's existing token"
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
        if rotate:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
        self.stderr.write(
            f"{'Created' if created else 'Found'} user {username}"
            f"{' (staff)' if user.is_staff else ''}; its API token:"
        )
        self.stdout.write(token.key)
