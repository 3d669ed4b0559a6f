"""Admin access for staff, and DRF's API tokens in the admin.

Staff users may use the admin's pages without per-model permissions (the admin itself
refuses non-staff); superusers keep every right as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy


def is_staff(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff)


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = object  # a mixin at run time; ModelAdmin's methods come after it


class StaffAccessMixin(_ModelAdmin):
    """View (and the listed rights) for every active staff user."""

    staff_can_change = False
    staff_can_delete = False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_staff(request) or super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_staff(request) or super().has_view_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if self.staff_can_change and is_staff(request):
            return True
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if self.staff_can_delete and is_staff(request):
            return True
        return super().has_delete_permission(request, obj)


# DRF registers its token admin: staff may list tokens and revoke (delete) them; creating one
# stays with superusers (or `manage.py create_api_token`).
class StaffTokenAdmin(StaffAccessMixin, TokenAdmin):
    staff_can_delete = True


if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)
admin.site.register(TokenProxy, StaffTokenAdmin)
