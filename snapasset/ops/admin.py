"""Celery's task results (django-celery-results) beside the jobs: staff see them (and may
delete them) without a per-model permission."""

from __future__ import annotations

from django.contrib import admin
from django_celery_results.admin import GroupResultAdmin, TaskResultAdmin
from django_celery_results.models import GroupResult, TaskResult

from snapasset.core.admin import StaffAccessMixin


class StaffTaskResultAdmin(StaffAccessMixin, TaskResultAdmin):
    staff_can_delete = True


class StaffGroupResultAdmin(StaffAccessMixin, GroupResultAdmin):
    staff_can_delete = True


for model, model_admin in (
    (TaskResult, StaffTaskResultAdmin),
    (GroupResult, StaffGroupResultAdmin),
):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
