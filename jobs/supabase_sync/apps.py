from __future__ import annotations

from django.apps import AppConfig


class SupabaseSyncConfig(AppConfig):
    name = "jobs.supabase_sync"
    label = "supabase_sync"
    verbose_name = "Supabase tables sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs.signals import job_status_changing
        from jobs.supabase_sync import receivers

        job_status_changing.connect(
            receivers.on_job_status_changing, dispatch_uid="supabase-sync-status-changing"
        )
