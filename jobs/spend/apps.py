from __future__ import annotations

from django.apps import AppConfig


class SpendConfig(AppConfig):
    name = "jobs.spend"
    label = "spend"
    verbose_name = "Spend"
    default_auto_field = "django.db.models.BigAutoField"
