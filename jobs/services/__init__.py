"""Writes to jobs, one module per concept of a job's lifecycle.

- ``transitions``: the state machine (``LEGAL_MOVES``) and ``job_transition``, the one
  function that changes a job's status: fenced, only the changed fields, then the live event,
  the metrics and the signals.
- ``submission``: a new job row (``job_create_generation``), the owner's pending cap.
- ``delivery``: the Celery message of a job (a new delivery id per send).
- ``lease``: the claim under a row lock, its fencing token, the heartbeat, the release on
  shutdown.
- ``generation``: one run of an image job (generate once, render, store, record).
- ``outcomes``: how an attempt ends (complete, requeue, retry later, fail).
- ``outputs``: where a job's files live; removing a cancelled job's files.
- ``control``: cancel and retry by the owner or an operator.
- ``sweeper``: lost messages sent again, stalled jobs re-run.

The ``Job`` row is the truth. Celery messages only say "look at job X"; every step is safe
to repeat (docs/guarantees.md).
"""
