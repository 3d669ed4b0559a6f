"""The old server's Supabase tables, kept written: ``generations`` (one row per job, its
``status`` and ``error_message``) and ``generated_images`` (one row per image), through
PostgREST with the ``supabase`` client, when ``SUPABASE_SYNC_TABLES`` is true.

A transactional outbox: a job's status change writes a ``SyncEvent`` row in the same
transaction (a receiver of ``jobs.signals.job_status_changing``); a Celery task on the
``webhooks`` queue pushes it after the commit, with retries and backoff, and beat drains what
is left. Supabase slow or down never fails or delays a job. A Django app of its own (label
``supabase_sync``) inside the jobs feature: jobs never imports it.
"""
