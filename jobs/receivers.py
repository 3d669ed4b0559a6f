"""Celery signal receivers of jobs, connected in JobsConfig.ready(): every log line of a
task that runs a job carries its `job_id`, Celery's own lines included; a worker's memory
is kept in check between jobs."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from contextvars import Token
from typing import Any

from jobs.models import TASK_FOR_KIND
from snapasset.core.logs import current_job_id

# Tasks whose first argument is a job id.
JOB_TASKS = frozenset(TASK_FOR_KIND.values())
_job_log_tokens: dict[str, Token[str | None]] = {}


def enter_job_log_context(
    task_id: str = "", task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    if task is None or task.name not in JOB_TASKS:
        return
    job_id = (args[0] if args else None) or (kwargs or {}).get("job_id")
    if job_id:
        _job_log_tokens[task_id] = current_job_id.set(str(job_id))


def leave_job_log_context(task_id: str = "", **_: Any) -> None:
    token = _job_log_tokens.pop(task_id, None)
    if token is not None:
        current_job_id.reset(token)


# glibc's malloc: at most this many arenas per process. Each thread that allocates (the
# render threads, the heartbeat) may otherwise get an arena of its own, up to 8 per core,
# each keeping the image buffers it freed.
MALLOC_ARENA_MAX = 2
# Allocations from this size up (glibc's default, made fixed) are mapped on their own and
# unmapped when freed: the image buffers (a decoded 1024x1024 picture is 3-4 MiB, each
# resized copy and encoded file 0.2-4 MiB). Left dynamic, glibc raises the threshold to the
# largest block freed so far (up to 32 MiB) and the trim threshold to twice that: the image
# buffers then come from an arena, and a thread's arena kept ~12 MiB after the jobs, which
# malloc_trim cannot give back (it never trims the top of a thread's arena). Fixed: an images
# pool process is ~101 MiB after 100 jobs instead of ~113. The cost: those buffers' pages are
# zero-filled again for each job (~7,000 more minor faults per 2-platform job, a few ms of
# the ~400 ms of CPU; not measurable in the CPU per job here). Pillow caches no block of its
# own (its blocks_max is 0).
MALLOC_MMAP_THRESHOLD = 128 * 1024
# mallopt's parameter numbers (malloc.h).
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only: musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def configure_malloc(**_: Any) -> None:
    """`worker_init` / `worker_process_init`: fewer malloc arenas (MALLOC_ARENA_MAX) and a
    fixed mmap threshold (MALLOC_MMAP_THRESHOLD)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENA_MAX)
        libc.mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)


def release_freed_memory(task: Any = None, **_: Any) -> None:
    """`task_postrun` of a job task: give the memory its image work freed (decoded source,
    resized copies, encoded files: tens of MB) back to the system, instead of leaving it
    in malloc's free lists between jobs."""
    if task is None or task.name not in JOB_TASKS:
        return
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
