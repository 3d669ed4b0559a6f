"""Supabase Storage as a Django storage backend, over the official ``supabase`` client.

Selected in settings when SUPABASE_URL is set; local disk (FileSystemStorage) stays the
default. Everything that saves, reads, lists or deletes files goes through Django's storage
API, so services never know which one is in use.

Semantics match the local default (``allow_overwrite=True``): a name is stored as given and
saving it again replaces it (upsert), which keeps retries idempotent. Errors from the
storage service become ``TransientError`` (timeouts, connection errors, 408, 429, 5xx; the
job retries) or ``PermanentError`` (bad key, missing bucket...), like the image provider's;
a missing object is ``FileNotFoundError``, as Django expects.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage
from django.core.files.utils import validate_file_name
from django.utils.deconstruct import deconstructible

from snapasset.core.exceptions import JobError, PermanentError, TransientError, parse_retry_after

logger = logging.getLogger(__name__)

# Entries per list request. Supabase answers at most what is asked (default 100); paging
# continues until a short page, so a folder of any size is listed completely.
LIST_PAGE_SIZE = 1000
# Names per batch delete request.
DELETE_BATCH_SIZE = 1000
# Supabase's marker object that keeps an otherwise empty folder visible in the dashboard.
PLACEHOLDER_NAME = ".emptyFolderPlaceholder"
CONNECT_TIMEOUT_SECONDS = 5.0


def file_with_content_type(data: bytes, content_type: str) -> ContentFile:
    """Bytes to save, carrying the content type storage backends should record."""
    content = ContentFile(data)
    content.content_type = content_type  # type: ignore[attr-defined]
    return content


def recordable_url(storage: Storage, name: str) -> str:
    """The URL worth keeping in the database for ``name``: "" when the storage's URLs
    expire (signed URLs), so that readers make a fresh one each time."""
    if getattr(storage, "signed_urls", False):
        return ""
    return storage.url(name)


def _http_response(exc: BaseException) -> httpx.Response | None:
    """The HTTP response behind a storage3 error (it is raised from, or while handling,
    httpx's HTTPStatusError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, httpx.HTTPStatusError):
            return current.response
        current = current.__cause__ or current.__context__
    return None


def _status_of(exc: Any) -> tuple[int | None, httpx.Response | None]:
    """The status Supabase reports (the body's statusCode: the HTTP status is 400 for most
    errors), else the HTTP status."""
    response = _http_response(exc)
    status: int | None = None
    try:
        status = int(str(exc.status))
    except (TypeError, ValueError):
        status = None
    if status is None and response is not None:
        status = response.status_code
    return status, response


def is_not_found(exc: Any) -> bool:
    status, _ = _status_of(exc)
    return status == 404 and str(getattr(exc, "code", "")) in (
        "not_found",
        "NoSuchKey",
        "InternalError",
    )


def classify_storage_error(exc: Any, action: str) -> JobError:
    status, response = _status_of(exc)
    http_status = response.status_code if response is not None else None
    statuses = {s for s in (status, http_status) if s is not None}
    code = str(getattr(exc, "code", "") or "")
    logger.warning(
        "supabase storage: %s failed (status=%s, http=%s, error=%s): %s",
        action, status, http_status, code, getattr(exc, "message", exc),
    )  # fmt: skip
    if any(s >= 500 or s in (408, 429) for s in statuses):
        return TransientError(
            f"File storage had a temporary error while trying to {action} (HTTP {max(statuses)})",
            retry_after=parse_retry_after(response.headers) if response is not None else None,
        )
    label = f"{status} {code}".strip() if status else code or "error"
    return PermanentError(f"File storage refused to {action} ({label})")


@deconstructible(path="jobs.storage.SupabaseStorage")
class SupabaseStorage(Storage):
    def __init__(
        self,
        *,
        url: str | None = None,
        service_key: str | None = None,
        bucket: str | None = None,
        signed_urls: bool | None = None,
        signed_url_expires_seconds: int | None = None,
        cache_control_seconds: int | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        self.supabase_url = url or settings.SUPABASE_URL
        self.service_key = service_key or settings.SUPABASE_SERVICE_KEY
        self.bucket_name = bucket or settings.SUPABASE_BUCKET
        self.signed_urls = settings.SUPABASE_SIGNED_URLS if signed_urls is None else signed_urls
        self.signed_url_expires_seconds = (
            signed_url_expires_seconds or settings.SUPABASE_SIGNED_URL_EXPIRES_SECONDS
        )
        self.cache_control_seconds = (
            settings.SUPABASE_CACHE_CONTROL_SECONDS
            if cache_control_seconds is None
            else cache_control_seconds
        )
        self.timeout_seconds = timeout_seconds or settings.SUPABASE_TIMEOUT_SECONDS
        self._client: Any = None
        self._client_pid: int | None = None

    # --- The client -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The supabase client, made on first use in each process (a forked worker child
        must not share its parent's connections)."""
        if self._client is None or self._client_pid != os.getpid():
            from supabase import create_client
            from supabase.lib.client_options import SyncClientOptions

            # httpx does not retry; the job does. The timeout bounds every storage call.
            http_client = httpx.Client(
                timeout=httpx.Timeout(self.timeout_seconds, connect=CONNECT_TIMEOUT_SECONDS),
                follow_redirects=True,
            )
            options = SyncClientOptions(
                httpx_client=http_client, auto_refresh_token=False, persist_session=False
            )
            self._client = create_client(self.supabase_url, self.service_key, options=options)
            self._client_pid = os.getpid()
        return self._client

    @property
    def bucket(self) -> Any:
        return self.client.storage.from_(self.bucket_name)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        from storage3.exceptions import StorageApiError
        from storage3.utils import StorageException

        try:
            yield
        except StorageApiError as exc:
            raise classify_storage_error(exc, action) from exc
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"File storage did not answer in time (trying to {action})"
            ) from exc
        except httpx.HTTPError as exc:
            raise TransientError(f"Could not reach file storage (trying to {action})") from exc
        except StorageException as exc:
            logger.warning("supabase storage: %s failed: %s", action, exc)
            raise PermanentError(f"File storage refused to {action}") from exc

    @contextmanager
    def _errors_of_one_file(self, name: str, action: str) -> Iterator[None]:
        """``_errors``, with a missing ``name`` raised as FileNotFoundError (Django's way)."""
        from storage3.exceptions import StorageApiError

        with self._errors(action):
            try:
                yield
            except StorageApiError as exc:
                if is_not_found(exc):
                    raise FileNotFoundError(name) from exc
                raise

    # --- Django's Storage API ---------------------------------------------------------------

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        """Names are kept as given; saving again overwrites (upsert), as on local disk."""
        name = name.replace("\\", "/").lstrip("/")
        validate_file_name(name, allow_relative_path=True)
        if max_length is not None and len(name) > max_length:
            raise SuspiciousFileOperation(f"Storage name {name!r} is longer than {max_length}")
        return name

    def _save(self, name: str, content: File) -> str:
        if hasattr(content, "seek") and getattr(content, "seekable", lambda: True)():
            content.seek(0)
        data = content.read()
        if isinstance(data, str):
            data = data.encode()
        content_type = (
            getattr(content, "content_type", None)
            or mimetypes.guess_type(name)[0]
            or "application/octet-stream"
        )
        file_options = {
            "content-type": content_type,
            "cache-control": str(self.cache_control_seconds),
            "upsert": "true",
        }
        with self._errors("save a file"):
            self.bucket.upload(name, data, file_options)
        return name

    def _open(self, name: str, mode: str = "rb") -> File:
        if any(flag in mode for flag in "wa+"):
            raise ValueError("Supabase files are opened for reading only; save() to write")
        with self._errors_of_one_file(name, "read a file"):
            data = self.bucket.download(name)
        return ContentFile(data, name=name)

    def exists(self, name: str) -> bool:
        with self._errors("check a file"):
            return bool(self.bucket.exists(name))

    def delete(self, name: str) -> None:
        """Delete one file; a missing one is not an error (Supabase ignores it too)."""
        if not name:
            raise ValueError("The name must be given to delete().")
        self.delete_many([name])

    def delete_many(self, names: list[str]) -> int:
        """Delete files in batches; returns how many Supabase reports as deleted."""
        deleted = 0
        for start in range(0, len(names), DELETE_BATCH_SIZE):
            with self._errors("delete files"):
                answer = self.bucket.remove(names[start : start + DELETE_BATCH_SIZE])
            deleted += len(answer or [])
        return deleted

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        """Folders and files directly under ``path``, all of them (paged)."""
        prefix = path.strip("/")
        directories: list[str] = []
        files: list[str] = []
        offset = 0
        while True:
            options = {
                "limit": LIST_PAGE_SIZE,
                "offset": offset,
                "sortBy": {"column": "name", "order": "asc"},
            }
            with self._errors("list files"):
                page = self.bucket.list(prefix, options)
            for entry in page:
                name = entry.get("name", "")
                if entry.get("id") is None:
                    directories.append(name)
                elif name != PLACEHOLDER_NAME:
                    files.append(name)
            if len(page) < LIST_PAGE_SIZE:
                return directories, files
            offset += LIST_PAGE_SIZE

    def size(self, name: str) -> int:
        with self._errors_of_one_file(name, "read file information"):
            info = self.bucket.info(name)
        size = info.get("size")
        if size is None:
            size = (info.get("metadata") or {}).get("size", 0)
        return int(size)

    def url(self, name: str | None) -> str:
        if not name:
            raise ValueError("The name must be given to url().")
        if not self.signed_urls:
            return str(self.bucket.get_public_url(name))
        with self._errors("sign a file URL"):
            signed = self.bucket.create_signed_url(name, self.signed_url_expires_seconds)
        return str(signed["signedURL"])
