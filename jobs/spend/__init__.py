"""Spend controls: what every paid call to the image model may cost, and what it did cost.

- ``limiter``: one rate limit (and concurrency cap) of the image model for the whole
  deployment, in Redis; a caller that would exceed it is told how long to wait, never blocked.
- ``quotas``: a daily quota of paid generations per user, checked before a job is queued.
- ``ledger``: every paid call recorded once, with its estimated cost (``prices``), in the
  admin, on /metrics and in the staff's stats overview.
- ``reuse``: finds an identical original the user already paid for (opt-in).
- ``api``: GET /api/usage.

The generation pipeline (jobs/services) calls these; nothing here imports it.
"""
