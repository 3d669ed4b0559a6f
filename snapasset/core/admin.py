"""Credentials in the admin: API tokens (no key is ever shown back) and users.

Staff see and do what their model permissions allow, nothing more: being staff only opens
the admin. Other users' credentials are superusers' business: a staff user with the token
permissions sees and manages their own tokens, and with the user permissions cannot touch
another user's password, nor anyone's privileges (staff, superuser, groups, permissions).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from knox.crypto import create_token_string, hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework.authtoken.models import TokenProxy

PLAIN_KEY_ATTRIBUTE = "_plain_key"


class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "created", "expiry")
    list_filter = ("created",)
    search_fields = ("user__username",)
    list_select_related = ("user",)
    ordering = ("-created",)
    readonly_fields = ("user", "created", "expiry")
    raw_id_fields = ("user",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuthToken]:
        tokens = super().get_queryset(request)
        if request.user.is_superuser:
            return tokens
        return tokens.filter(user=request.user)

    def get_fields(self, request: HttpRequest, obj: AuthToken | None = None) -> Any:
        if obj is None:  # the add page: whose token, and until when
            return ["user", "expiry"] if request.user.is_superuser else ["expiry"]
        return ["user", "created", "expiry"]

    def get_readonly_fields(self, request: HttpRequest, obj: AuthToken | None = None) -> Any:
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: AuthToken | None = None) -> bool:
        # A token has nothing to edit: revoke it and make another.
        return False

    def save_model(self, request: HttpRequest, obj: AuthToken, form: Any, change: bool) -> None:
        if not request.user.is_superuser:
            obj.user = request.user
        key = create_token_string()
        obj.digest = hash_token(key)
        obj.token_key = key[: CONSTANTS.TOKEN_KEY_LENGTH]
        obj.save()
        setattr(obj, PLAIN_KEY_ATTRIBUTE, key)

    def response_add(
        self, request: HttpRequest, obj: AuthToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        # The key is shown on this page and nowhere else: not in a message (kept in a
        # cookie or the session), not on a later page.
        response = TemplateResponse(
            request,
            "admin/core/api_token_created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": "API token created",
                "token": obj,
                "key": getattr(obj, PLAIN_KEY_ATTRIBUTE),
            },
        )
        response["Cache-Control"] = "no-store"
        return response


class CredentialsGuardedUserAdmin(UserAdmin):
    """Django's user admin, less the ways a staff user could act as, or above, another."""

    PRIVILEGE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        users = super().get_queryset(request)
        if request.user.is_superuser:
            return users
        return users.filter(is_superuser=False)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = tuple(super().get_readonly_fields(request, obj))
        if request.user.is_superuser:
            return readonly
        return readonly + self.PRIVILEGE_FIELDS

    def user_change_password(
        self, request: HttpRequest, id: str, form_url: str = ""
    ) -> HttpResponse:
        if not request.user.is_superuser and str(request.user.pk) != str(id):
            raise PermissionDenied
        return super().user_change_password(request, id, form_url)


def _register(model: Any, model_admin: type[admin.ModelAdmin] | None) -> None:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    if model_admin is not None:
        admin.site.register(model, model_admin)


_register(AuthToken, ApiTokenAdmin)  # knox's own admin lists digests
_register(TokenProxy, None)  # DRF's table of plain-text keys, emptied by migration 0001
_register(get_user_model(), CredentialsGuardedUserAdmin)
