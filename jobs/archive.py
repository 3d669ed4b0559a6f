"""A completed job's images as one zip, streamed file by file from storage.

The archive is written to an unseekable sink (zipfile then uses data descriptors), so the
whole zip is never held in memory: each member is read from storage through Django's
storage API (local disk or Supabase alike) in chunks and handed on as soon as it is
compressed. Images are PNG/WebP/JPEG, already compressed, so members are STORED.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from django.core.files.storage import default_storage

from jobs.models import Job, JobKind, JobStatus
from jobs.pipeline import EXTENSIONS
from snapasset.core.exceptions import GoneError, InvalidStateError

# Bytes read from storage per step: big enough for few round trips to a remote storage,
# small enough that a streaming response holds little in memory.
READ_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class ArchiveMember:
    name: str
    storage_path: str


@dataclass(frozen=True)
class JobArchive:
    filename: str
    members: tuple[ArchiveMember, ...]

    def chunks(self) -> Iterator[bytes]:
        return zip_chunks(self.members)


def job_archive(*, job: Job) -> JobArchive:
    """What "download all" of a job holds; the job must be a completed image job."""
    if job.kind != JobKind.IMAGE_GENERATION:
        raise InvalidStateError(
            "Only image jobs have images to download", extra={"status": job.status}
        )
    if job.status != JobStatus.COMPLETED:
        raise InvalidStateError(
            f"Job is not completed (status: {job.status})", extra={"status": job.status}
        )
    order = {platform_id: i for i, platform_id in enumerate(job.platforms)}
    images = sorted(job.images.all(), key=lambda image: order.get(image.platform_id, 99))
    members = tuple(
        ArchiveMember(
            name=f"{image.platform_id}-{image.width}x{image.height}.{EXTENSIONS[image.format]}",
            storage_path=image.storage_path,
        )
        for image in images
    )
    # Checked before the first byte is sent: once streaming, a missing file could only cut
    # the response short, which a client sees as a broken download, not an error.
    missing = [m.storage_path for m in members if not default_storage.exists(m.storage_path)]
    if missing:
        raise GoneError(
            f"{len(missing)} of the job's images are no longer in storage; submit the job again"
        )
    return JobArchive(filename=f"snapasset-{job.generation_id}.zip", members=members)


class _Sink:
    """A write-only file object whose bytes are collected until the stream takes them."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def zip_chunks(members: tuple[ArchiveMember, ...]) -> Iterator[bytes]:
    """The zip of the members' storage files, as a stream of non-empty byte chunks."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for member in members:
            with default_storage.open(member.storage_path, "rb") as source:
                with archive.open(member.name, mode="w") as target:
                    while chunk := source.read(READ_CHUNK_BYTES):
                        target.write(chunk)
                        if data := sink.take():
                            yield data
            if data := sink.take():
                yield data
    if data := sink.take():
        yield data
