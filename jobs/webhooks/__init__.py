"""Webhooks: a job's final state POSTed to its ``callbackUrl`` and to its owner's registered
endpoints, signed the Standard Webhooks way, retried by Celery for up to a day, each delivery
recorded. A Django app of its own (label ``webhooks``) inside the jobs feature: it listens
to ``jobs.signals.job_finished`` and reads jobs; jobs' submission calls it to store a
callbackUrl."""
