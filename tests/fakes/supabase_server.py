"""A fake of Supabase Storage (``/storage/v1/object/...``) on loopback, with in-memory buckets.

It speaks what ``supabase.create_client(...).storage`` (storage3) sends and expects:
``apiKey`` + ``Authorization: Bearer <key>`` headers, multipart uploads (the file part's
content type, a ``cacheControl`` field, ``x-upsert``), JSON list / sign / delete bodies, and
Supabase's error answers: HTTP 400 with ``{"statusCode": "404", "error": "not_found", ...}``
style bodies for client errors (the storage server reports the real status in the body), 5xx
for server trouble. Public objects are served at ``/object/public/...`` and signed ones at
``/object/sign/...?token=`` (expiry checked), so downloads in tests are real HTTP too.

``fail(...)`` injects faults (e.g. a 503 on the next upload of some path).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from tests.fakes.server import FakeServer, Reply, Request

SERVICE_KEY = "fake-supabase-service-role-key"
PREFIX = "/storage/v1"
PLACEHOLDER = ".emptyFolderPlaceholder"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def storage_error(status: str, error: str, message: str, *, http_status: int = 400) -> Reply:
    """Supabase's error shape: HTTP 400 for client errors, the real status in the body."""
    return Reply.json(
        {"statusCode": status, "code": error, "error": error, "message": message},
        status=http_status,
    )


def not_found() -> Reply:
    return storage_error("404", "not_found", "Object not found")


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)

    @property
    def etag(self) -> str:
        return f'"{hashlib.md5(self.data).hexdigest()}"'  # noqa: S324 - an ETag, not security

    def metadata(self) -> dict[str, Any]:
        return {
            "eTag": self.etag,
            "size": len(self.data),
            "mimetype": self.content_type,
            "cacheControl": self.cache_control,
            "lastModified": self.updated_at,
            "contentLength": len(self.data),
            "httpStatusCode": 200,
        }


@dataclass
class Fault:
    method: str
    path_contains: str
    reply: Reply
    times: int


@dataclass
class Upload:
    method: str
    bucket: str
    name: str
    content_type: str
    cache_control: str
    upsert: bool
    size: int


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[dict[str, str], bytes]]:
    """Parts of a multipart/form-data body by field name: (part headers, content)."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    parts: dict[str, tuple[dict[str, str], bytes]] = {}
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        field_name = disposition.split('name="', 1)[1].split('"', 1)[0]
        parts[field_name] = (headers, content.removesuffix(b"\r\n"))
    return parts


class FakeSupabase(FakeServer):
    def __init__(
        self, *, service_key: str = SERVICE_KEY, buckets: dict[str, bool] | None = None
    ) -> None:
        super().__init__()
        self.service_key = service_key
        self.secret = uuid.uuid4().bytes
        # bucket name -> public?
        self.public: dict[str, bool] = dict(buckets or {"generated-images": True})
        self.objects: dict[str, dict[str, StoredObject]] = {name: {} for name in self.public}
        self.faults: list[Fault] = []
        self.uploads: list[Upload] = []
        self.data_lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.base_url

    # --- Test helpers ----------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path_contains: str,
        *,
        status: int = 503,
        times: int = 1,
        body: bytes = b"upstream connect error or disconnect/reset before headers",
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next ``times`` matching requests answer ``status`` (a gateway-style error),
        after ``delay`` seconds."""
        reply = Reply(
            status=status,
            body=body,
            headers={"Content-Type": "text/plain", **(headers or {})},
            delay=delay,
        )
        self.faults.append(Fault(method, path_contains, reply, times))

    def fail_json(
        self,
        method: str,
        path_contains: str,
        *,
        status: int,
        error: str,
        message: str,
        http_status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        reply = storage_error(str(status), error, message, http_status=http_status or status)
        reply.headers.update(headers or {})
        self.faults.append(Fault(method, path_contains, reply, 1))

    def put(self, bucket: str, name: str, data: bytes, content_type: str = "image/png") -> None:
        with self.data_lock:
            self.objects[bucket][name] = StoredObject(data, content_type, "max-age=3600")

    def names(self, bucket: str = "generated-images") -> list[str]:
        with self.data_lock:
            return sorted(self.objects[bucket])

    def get(self, name: str, bucket: str = "generated-images") -> StoredObject:
        with self.data_lock:
            return self.objects[bucket][name]

    # --- Routing -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        for fault in self.faults:
            if (
                fault.times > 0
                and request.method == fault.method
                and fault.path_contains in request.path
            ):
                fault.times -= 1
                return fault.reply
        if not request.path.startswith(PREFIX + "/object/"):
            return Reply.json({"message": "no Route matched with those values"}, status=404)
        rest = request.path[len(PREFIX + "/object/") :]
        segments = [unquote(s) for s in rest.split("/")]
        head = segments[0]
        if request.method == "GET" and head == "public":
            return self.serve_public(segments[1], "/".join(segments[2:]))
        if request.method == "GET" and head == "sign":
            return self.serve_signed(request, segments[1], "/".join(segments[2:]))
        if not self.authorized(request):
            return storage_error("403", "Unauthorized", "invalid signature")
        if request.method == "POST" and head == "list":
            return self.list_objects(segments[1], request.json())
        if request.method == "GET" and head == "info":
            return self.info(segments[1], "/".join(segments[2:]))
        if request.method == "POST" and head == "sign":
            return self.sign(segments[1], "/".join(segments[2:]), request.json())
        if request.method == "GET" and head == "authenticated":
            return self.download(segments[1], "/".join(segments[2:]))
        if request.method == "DELETE" and len(segments) == 1:
            return self.delete(head, request.json())
        name = "/".join(segments[1:])
        if request.method in ("POST", "PUT") and name:
            return self.upload(request, head, name)
        if request.method == "GET" and name:
            return self.download(head, name)
        return Reply.json(
            {"statusCode": "404", "error": "Not Found", "message": "Route not found"}, 404
        )

    def authorized(self, request: Request) -> bool:
        return (
            request.header("authorization") == f"Bearer {self.service_key}"
            and request.header("apikey") == self.service_key
        )

    def bucket_missing(self, bucket: str) -> Reply | None:
        if bucket not in self.objects:
            return storage_error("404", "Bucket not found", "Bucket not found")
        return None

    # --- Operations --------------------------------------------------------------------------

    def upload(self, request: Request, bucket: str, name: str) -> Reply:
        if missing := self.bucket_missing(bucket):
            return missing
        parts = parse_multipart(request.header("content-type") or "", request.body)
        headers, data = parts["file"]
        cache_seconds = parts.get("cacheControl", ({}, b"3600"))[1].decode()
        upsert = request.header("x-upsert") == "true"
        with self.data_lock:
            existing = self.objects[bucket].get(name)
            if request.method == "POST" and existing is not None and not upsert:
                return storage_error("409", "Duplicate", "The resource already exists")
            if request.method == "PUT" and existing is None:
                return not_found()
            stored = StoredObject(
                data,
                headers.get("content-type", "application/octet-stream"),
                f"max-age={cache_seconds}",
            )
            if existing is not None:
                stored.id, stored.created_at = existing.id, existing.created_at
            self.objects[bucket][name] = stored
            self.uploads.append(
                Upload(
                    request.method,
                    bucket,
                    name,
                    stored.content_type,
                    stored.cache_control,
                    upsert,
                    len(data),
                )
            )
        return Reply.json({"Id": stored.id, "Key": f"{bucket}/{name}"})

    def object_reply(self, obj: StoredObject) -> Reply:
        return Reply(
            body=obj.data,
            headers={
                "Content-Type": obj.content_type,
                "Cache-Control": obj.cache_control,
                "ETag": obj.etag,
            },
        )

    def lookup(self, bucket: str, name: str) -> StoredObject | Reply:
        if missing := self.bucket_missing(bucket):
            return missing
        with self.data_lock:
            obj = self.objects[bucket].get(name)
        return obj if obj is not None else not_found()

    def download(self, bucket: str, name: str) -> Reply:
        found = self.lookup(bucket, name)
        return found if isinstance(found, Reply) else self.object_reply(found)

    def serve_public(self, bucket: str, name: str) -> Reply:
        if not self.public.get(bucket):
            return storage_error("404", "Bucket not found", "Bucket not found")
        return self.download(bucket, name)

    def info(self, bucket: str, name: str) -> Reply:
        found = self.lookup(bucket, name)
        if isinstance(found, Reply):
            return found
        return Reply.json(
            {
                "id": found.id,
                "version": found.etag.strip('"'),
                "name": name,
                "bucket_id": bucket,
                "size": len(found.data),
                "content_type": found.content_type,
                "cache_control": found.cache_control,
                "etag": found.etag,
                "last_modified": found.updated_at,
                "created_at": found.created_at,
                "metadata": {},
            }
        )

    def delete(self, bucket: str, body: dict[str, Any]) -> Reply:
        if missing := self.bucket_missing(bucket):
            return missing
        prefixes = body.get("prefixes") or []
        if not prefixes:
            return storage_error(
                "400", "InvalidRequest", "body/prefixes must NOT have fewer than 1 items"
            )
        deleted = []
        with self.data_lock:
            for name in prefixes:
                obj = self.objects[bucket].pop(name, None)
                if obj is not None:
                    deleted.append(
                        {
                            "name": name,
                            "bucket_id": bucket,
                            "id": obj.id,
                            "metadata": obj.metadata(),
                        }
                    )
        return Reply.json(deleted)

    def list_objects(self, bucket: str, body: dict[str, Any]) -> Reply:
        if missing := self.bucket_missing(bucket):
            return missing
        prefix = (body.get("prefix") or "").strip("/")
        limit = int(body.get("limit", 100))
        offset = int(body.get("offset", 0))
        search = body.get("search") or ""
        folders: set[str] = set()
        files: dict[str, StoredObject] = {}
        with self.data_lock:
            for key, obj in self.objects[bucket].items():
                if prefix and not key.startswith(prefix + "/"):
                    continue
                rest = key[len(prefix) + 1 :] if prefix else key
                if "/" in rest:
                    folders.add(rest.split("/", 1)[0])
                else:
                    files[rest] = obj
        entries: list[dict[str, Any]] = [
            {
                "name": n,
                "id": None,
                "updated_at": None,
                "created_at": None,
                "last_accessed_at": None,
                "metadata": None,
            }
            for n in folders
        ]
        entries += [
            {
                "name": n,
                "id": o.id,
                "updated_at": o.updated_at,
                "created_at": o.created_at,
                "last_accessed_at": o.updated_at,
                "metadata": o.metadata(),
            }
            for n, o in files.items()
        ]
        entries = [e for e in entries if e["name"].lower().startswith(search.lower())]
        sort = body.get("sortBy") or {}
        entries.sort(key=lambda e: e["name"], reverse=sort.get("order") == "desc")
        return Reply.json(entries[offset : offset + limit])

    # --- Signed URLs -------------------------------------------------------------------------

    def make_token(self, bucket: str, name: str, expires_in: int) -> str:
        payload = json.dumps(
            {
                "url": f"{bucket}/{name}",
                "iat": int(time.time()),
                "exp": int(time.time()) + expires_in,
            }
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        signature = hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{signature}"

    def token_claims(self, token: str) -> dict[str, Any] | None:
        body, _, signature = token.partition(".")
        expected = hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return None
        return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))

    def sign(self, bucket: str, name: str, body: dict[str, Any]) -> Reply:
        found = self.lookup(bucket, name)
        if isinstance(found, Reply):
            return found
        expires_in = int(body["expiresIn"])
        token = self.make_token(bucket, name, expires_in)
        return Reply.json({"signedURL": f"/object/sign/{bucket}/{name}?token={token}"})

    def serve_signed(self, request: Request, bucket: str, name: str) -> Reply:
        token = (request.query.get("token") or [""])[0]
        claims = self.token_claims(token)
        if claims is None or claims.get("url") != f"{bucket}/{name}":
            return storage_error("400", "InvalidJWT", "invalid signature")
        if claims["exp"] < time.time():
            return storage_error("400", "InvalidJWT", "jwt expired")
        return self.download(bucket, name)
